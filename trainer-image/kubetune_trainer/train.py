"""The training loop: a lean, deterministic loop over packed batches.

Why not `transformers.Trainer`: the loop below does exactly what kubetune needs and nothing
else (checkpoints that are complete or ignored, SIGTERM at a step boundary, real-token
throughput, exact resume), and it is faster on small models (see tests/bench). The data order
of epoch e is a permutation seeded with seed + e, so step s always sees the same micro-batches;
with the optimizer, scheduler and RNG states restored, a resumed run reproduces the
uninterrupted run's losses.

The loss of an optimizer step is the mean over all label tokens of its micro-batches (not a
mean of per-batch means), so packing and gradient accumulation do not reweight examples.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_crd.spec import HyperparametersSpec
from kubetune_crd.status import Progress

from kubetune_trainer import checkpoints
from kubetune_trainer.checkpoints import TrainState
from kubetune_trainer.dataset import IGNORE
from kubetune_trainer.errors import PreemptedError
from kubetune_trainer.modeling import trainable_parameters
from kubetune_trainer.packing import Batch, PackedRow, collate
from kubetune_trainer.runtime import DeviceInfo

MAX_GRAD_NORM = 1.0
MAX_LOSSES_KEPT = 10_000


class StopFlag:
    """Set by SIGTERM/SIGINT; checked at step boundaries."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.requested = True
        self.signal = signum

    def check(self, where: str) -> None:
        if self.requested:
            raise PreemptedError(f"stopped by signal {self.signal} during {where}")


@dataclass(frozen=True)
class Schedule:
    """Which rows each optimizer step uses."""

    n_rows: int
    batch_size: int
    grad_accum: int
    seed: int

    @property
    def micro_batches_per_epoch(self) -> int:
        return math.ceil(self.n_rows / self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_batches_per_epoch / self.grad_accum)

    def total_steps(self, hp: HyperparametersSpec) -> int:
        return hp.max_steps if hp.max_steps else self.steps_per_epoch * hp.epochs

    def epoch_order(self, epoch: int) -> list[int]:
        import torch

        generator = torch.Generator().manual_seed(self.seed + epoch)
        return [int(i) for i in torch.randperm(self.n_rows, generator=generator)]

    def step_rows(self, step: int, cache: dict[int, list[int]]) -> list[list[int]]:
        """Row indices of each micro-batch of optimizer step `step` (0-based)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = self.epoch_order(epoch)
        order = cache[epoch]
        first = k * self.grad_accum
        last = min(first + self.grad_accum, self.micro_batches_per_epoch)
        return [order[m * self.batch_size : (m + 1) * self.batch_size] for m in range(first, last)]


def autocast(device: DeviceInfo) -> AbstractContextManager[Any]:
    import torch

    if device.bf16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def packed_attention_enabled(model: Any, device: DeviceInfo) -> bool:
    """Whether batches take the per-example attention path (and are flattened to one row).

    CPU only: that is where it was measured (tests/bench/trainer_bench.py); on a GPU the masked
    SDPA kernel (or flash-attention's own varlen path) stays in charge."""
    from kubetune_trainer import attention

    return device.device.type == "cpu" and attention.supports_packed_attention(model)


def loss_sum(model: Any, batch: Batch, device: DeviceInfo) -> Any:
    """Summed next-token cross-entropy over the batch's label tokens."""
    import torch.nn.functional as F  # noqa: N812

    from kubetune_trainer import attention

    ids = batch.input_ids.to(device.device, non_blocking=True)
    positions = batch.position_ids.to(device.device, non_blocking=True)
    labels = batch.labels.to(device.device, non_blocking=True)
    # Shift the labels, not the logits: slicing the logits copies them (and their gradient),
    # which costs as much as a transformer layer on small models.
    targets = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    kwargs: dict[str, Any] = {}
    context: AbstractContextManager[Any] = nullcontext()
    if batch.segments and packed_attention_enabled(model, device):
        kwargs[attention.SEGMENTS_KWARG] = batch.segments
        # Logits only where there is a target (not on prompts, padding, block ends): the
        # model's own head (and any scaling it applies) on fewer positions.
        keep = targets != IGNORE
        kwargs["logits_to_keep"] = keep
        context = attention.packed_attention(model)
    with context, autocast(device):
        logits = model(input_ids=ids, position_ids=positions, use_cache=False, **kwargs).logits
    if "logits_to_keep" in kwargs and logits.dim() == 2:
        flat_targets = targets[kwargs["logits_to_keep"]]
    else:  # all positions (a model that ignores a boolean logits_to_keep)
        flat_targets = targets.reshape(-1)
        logits = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(logits.float(), flat_targets, ignore_index=IGNORE, reduction="sum")


def evaluate(
    model: Any,
    rows: Sequence[PackedRow],
    batch_size: int,
    pad_id: int,
    device: DeviceInfo,
    stop: StopFlag | None = None,
) -> float | None:
    """Mean loss per label token over `rows` (None when there are none)."""
    import torch

    if not rows:
        return None
    was_training = model.training
    model.eval()
    flatten = packed_attention_enabled(model, device)
    total = 0.0
    tokens = 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            if stop is not None:
                stop.check("evaluation")
            batch = collate(rows[start : start + batch_size], pad_id, flatten)
            total += float(loss_sum(model, batch, device))
            tokens += batch.label_tokens
    if was_training:
        model.train()
    return total / max(tokens, 1)


@dataclass
class LoopConfig:
    hp: HyperparametersSpec
    checkpoint_dir: Path
    checkpoint_every: int
    checkpoint_keep: int
    pad_id: int
    # The trainer checkpoints after the last step (so writing the model can be retried from
    # it); the benchmark turns that off to time the training steps alone, like its baseline.
    checkpoint_last: bool = True


def make_optimizer(
    model: Any, hp: HyperparametersSpec, total_steps: int, device: DeviceInfo
) -> tuple[Any, Any]:
    import torch
    from transformers import get_linear_schedule_with_warmup

    params = list(trainable_parameters(model).values())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": hp.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups,
        lr=hp.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
        # Fused on CPU too (torch >= 2.4): half the time of the per-tensor loop on the tiny
        # model, and what transformers.Trainer uses by default.
        fused=device.device.type in ("cuda", "cpu"),
    )
    warmup = math.ceil(total_steps * hp.warmup_ratio)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)  # type: ignore[no-untyped-call]
    return optimizer, scheduler


def restore(model: Any, tensors: dict[str, Any]) -> None:
    import torch

    params = trainable_parameters(model)
    missing = set(params) - set(tensors)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} trainable tensors")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name].to(param.device, param.dtype))


def train_loop(
    model: Any,
    rows: Sequence[PackedRow],
    schedule: Schedule,
    state: TrainState,
    optimizer: Any,
    scheduler: Any,
    cfg: LoopConfig,
    device: DeviceInfo,
    report: Callable[[Progress], None],
    stop: StopFlag,
) -> TrainState:
    """Run optimizer steps from state.step to state.total_steps, checkpointing as asked."""
    import torch

    params = list(trainable_parameters(model).values())
    cache: dict[int, list[int]] = {}
    window_loss = 0.0
    window_tokens = 0
    window_real = 0
    window_start = time.monotonic()
    model.train()
    flatten = packed_attention_enabled(model, device)

    def save() -> None:
        checkpoints.save_checkpoint(
            cfg.checkpoint_dir,
            state,
            trainable_parameters(model),
            optimizer,
            scheduler,
            cfg.checkpoint_keep,
        )

    while state.step < state.total_steps:
        if stop.requested:
            if state.step > 0:
                save()
            stop.check(f"training (checkpoint at step {state.step})")
        step_start = time.monotonic()
        batches = [
            collate([rows[i] for i in idx], cfg.pad_id, flatten)
            for idx in schedule.step_rows(state.step, cache)
        ]
        step_tokens = max(sum(b.label_tokens for b in batches), 1)
        step_loss = 0.0
        for batch in batches:
            loss = loss_sum(model, batch, device)
            (loss / step_tokens).backward()
            step_loss += float(loss.detach())
            window_real += batch.real_tokens
            state.real_tokens += batch.real_tokens
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.label_tokens += step_tokens
        state.train_seconds += time.monotonic() - step_start
        mean = step_loss / step_tokens
        state.losses.append((state.step, mean))
        del state.losses[:-MAX_LOSSES_KEPT]
        window_loss += step_loss
        window_tokens += step_tokens
        last = state.step == state.total_steps
        if state.step % cfg.hp.logging_steps == 0 or last:
            elapsed = max(time.monotonic() - window_start, 1e-9)
            per_step = state.train_seconds / max(state.step, 1)
            report(
                Progress(
                    stage="training",
                    step=state.step,
                    total_steps=state.total_steps,
                    fraction=state.step / state.total_steps,
                    epoch=round(state.step / schedule.steps_per_epoch, 4),
                    loss=window_loss / max(window_tokens, 1),
                    learning_rate=float(scheduler.get_last_lr()[0]),
                    tokens_per_second=round(window_real / elapsed, 1),
                    eta_seconds=round(per_step * (state.total_steps - state.step), 1),
                )
            )
            window_loss, window_tokens, window_real = 0.0, 0, 0
            window_start = time.monotonic()
        every = cfg.checkpoint_every
        if (last and cfg.checkpoint_last) or (every and state.step % every == 0):
            save()
    return state
