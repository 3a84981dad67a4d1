"""The training loop: a lean, deterministic loop over packed batches, on one process or many.

Why not `transformers.Trainer`: the loop below does exactly what kubetune needs and nothing
else (checkpoints that are complete or ignored, SIGTERM at a step boundary, real-token
throughput, exact resume), and it is faster on small models (see tests/bench). The data order
of epoch e is a permutation seeded with seed + e (`schedule.py`), so step s always sees the same
micro-batches; with the optimizer, scheduler and RNG states restored, a resumed run reproduces
the uninterrupted run's losses.

The loss of an optimizer step is the mean over all label tokens of its micro-batches, on all
ranks together (not a mean of per-batch or per-rank means), so packing, gradient accumulation
and the world size do not reweight examples. After each step the ranks sum their loss, their
real tokens and their stop votes in one collective: the reported loss and tokens/s are the
run's, and a SIGTERM seen by any rank stops all of them after the same step.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubetune_crd.spec import HyperparametersSpec
from kubetune_crd.status import Progress

from kubetune_trainer import fast_paths
from kubetune_trainer.checkpoints import TrainState
from kubetune_trainer.dataset import IGNORE
from kubetune_trainer.distributed import SINGLE, Dist
from kubetune_trainer.errors import PreemptedError
from kubetune_trainer.modeling import trainable_parameters
from kubetune_trainer.packing import Batch, PackedRow, collate
from kubetune_trainer.parallel import Parallel
from kubetune_trainer.runtime import DeviceInfo
from kubetune_trainer.schedule import Schedule, eval_batches, label_tokens

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


def loss_sum(model: Any, batch: Batch, device: DeviceInfo, forward: Any = None) -> Any:
    """Summed next-token cross-entropy over the batch's label tokens. `forward`: what runs the
    forward pass when it is not `model` itself (the DDP wrapper around it)."""
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
    runner = model if forward is None else forward
    if fast_paths.fused_loss(model):  # GPU, Liger: the loss without materialising logits
        with autocast(device):
            return fast_paths.model_loss(runner, ids, positions, labels)
    with context, autocast(device):
        logits = runner(input_ids=ids, position_ids=positions, use_cache=False, **kwargs).logits
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
    dist: Dist = SINGLE,
) -> float | None:
    """Mean loss per label token over `rows` (None when there are none): each rank scores its
    shard and the sums are added up, so every rank returns the loss over all the rows."""
    import torch

    if not rows:
        return None
    was_training = model.training
    model.eval()
    flatten = packed_attention_enabled(model, device)
    total = 0.0
    tokens = 0
    with torch.no_grad():
        for indices in eval_batches(len(rows), batch_size, dist.rank, dist.world_size):
            if stop is not None:
                stop.check("evaluation")
            # A used-up shard still runs a forward (FSDP gathers parameters in it); not counted.
            batch = collate([rows[i] for i in (indices or range(1))], pad_id, flatten)
            loss = float(loss_sum(model, batch, device))
            if indices:
                total += loss
                tokens += batch.label_tokens
    if hasattr(model, "reshard"):  # FSDP: no backward follows to free the gathered parameters
        model.reshard()
    if was_training:
        model.train()
    total, summed_tokens = dist.sum([total, tokens])
    return total / max(summed_tokens, 1)


class Checkpoints(Protocol):
    """What the loop asks of checkpointing: the product's `checkpointing.Checkpointer`."""

    def after_step(self, state: TrainState, last: bool) -> None: ...

    def save(self, state: TrainState) -> object: ...


@dataclass
class LoopConfig:
    hp: HyperparametersSpec
    pad_id: int
    evaluate: Callable[[int], None] | None = None
    """Called on every rank after each `hp.eval_steps`-th step (not the last: the run's final
    evaluation follows it): measures the held-out loss and reports it."""


@dataclass
class Training:
    """What trains: the (wrapped) model, its optimizer and scheduler, where and with whom."""

    par: Parallel
    optimizer: Any
    scheduler: Any
    device: DeviceInfo
    dist: Dist = SINGLE


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


@dataclass
class _Window:
    """The steps since the last progress report."""

    loss: float = 0.0
    tokens: int = 0
    real: int = 0
    start: float = field(default_factory=time.monotonic)


class StepLoss(Protocol):
    """What an optimizer step minimises, micro-batch by micro-batch: supervised runs sum the
    next-token loss over label tokens (`TokenLoss`), DPO runs the pair loss over pairs
    (`preference.PairLoss`). `units[i]`: the loss units of row i (its label tokens, or 1 per
    pair); a step's loss is its sum divided by the units of the step on all ranks."""

    units: list[int]

    def __call__(self, t: Training, indices: Sequence[int]) -> tuple[Any, int]:
        """(the summed loss of these rows, their real tokens)."""
        ...


class TokenLoss:
    """Supervised: summed cross-entropy over the label tokens of packed rows."""

    def __init__(self, rows: Sequence[PackedRow], pad_id: int, flatten: bool):
        self.rows = rows
        self.pad_id = pad_id
        self.flatten = flatten
        self.units = [label_tokens(row) for row in rows]

    def __call__(self, t: Training, indices: Sequence[int]) -> tuple[Any, int]:
        batch = collate([self.rows[i] for i in indices], self.pad_id, self.flatten)
        return loss_sum(t.par.model, batch, t.device, t.par.forward), batch.real_tokens


class _Stepper:
    """Runs the optimizer steps of one rank (what does not change from step to step, once)."""

    def __init__(self, t: Training, schedule: Schedule, step_loss: StepLoss):
        self.t = t
        self.schedule = schedule
        self.step_loss = step_loss
        self.cache: dict[int, list[int]] = {}
        # The optimizer's own parameter objects: FSDP may leave a module's unsharded tensors
        # registered in it between passes, which receive no gradient and are not updated.
        self.params = [p for group in t.optimizer.param_groups for p in group["params"]]

    def run(self, step: int) -> tuple[float, int, int]:
        """One optimizer step: (this rank's loss sum, its real tokens, the step's loss units
        on all ranks). Each micro-batch's loss is scaled so that the gradients DDP/FSDP average
        over the ranks are those of the mean over all the step's units."""
        import torch

        t = self.t
        micro = self.schedule.step_rows(step, self.cache, t.dist.rank)
        step_units = self.schedule.step_label_tokens(step, self.cache, self.step_loss.units)
        step_units = max(step_units, 1)
        # Summed on the device in float64 (exactly what Python floats would add up to): one
        # host sync per step, not one per micro-batch.
        loss_total, real = torch.zeros((), dtype=torch.float64, device=t.device.device), 0
        for n, indices in enumerate(micro):
            weight = t.dist.world_size if indices else 0  # a used-up shard: in step, no gradient
            with t.par.micro_batch(sync=n == len(micro) - 1):
                loss, tokens = self.step_loss(t, indices or [0])
                (loss * weight / step_units).backward()
            if indices:
                loss_total += loss.detach().double()
                real += tokens
        torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        t.optimizer.step()
        t.scheduler.step()
        t.optimizer.zero_grad(set_to_none=True)
        return float(loss_total), real, step_units


def _progress(t: Training, state: TrainState, schedule: Schedule, window: _Window) -> Progress:
    elapsed = max(time.monotonic() - window.start, 1e-9)
    per_step = state.train_seconds / max(state.step, 1)
    return Progress(
        stage="training",
        step=state.step,
        total_steps=state.total_steps,
        fraction=state.step / state.total_steps,
        epoch=round(state.step / schedule.steps_per_epoch, 4),
        loss=window.loss / max(window.tokens, 1),
        learning_rate=float(t.scheduler.get_last_lr()[0]),
        tokens_per_second=round(window.real / elapsed, 1),
        eta_seconds=round(per_step * (state.total_steps - state.step), 1),
    )


def _preempted(stop: StopFlag, step: int) -> PreemptedError:
    by = f"signal {stop.signal}" if stop.signal is not None else "a signal to another rank"
    return PreemptedError(f"stopped by {by} during training (checkpoint at step {step})")


def train_loop(
    t: Training,
    rows: Sequence[PackedRow],
    schedule: Schedule,
    state: TrainState,
    cfg: LoopConfig,
    report: Callable[[Progress], None],
    stop: StopFlag,
    checkpoints: Checkpoints,
    step_loss: StepLoss | None = None,
) -> TrainState:
    """Run optimizer steps from state.step to state.total_steps, checkpointing as asked.
    `step_loss`: what a step minimises (default: the supervised loss over `rows`)."""
    if step_loss is None:
        step_loss = TokenLoss(rows, cfg.pad_id, packed_attention_enabled(t.par.model, t.device))
    stepper = _Stepper(t, schedule, step_loss)
    window = _Window()
    t.par.model.train()
    if t.dist.any(stop.requested):
        if state.step > 0:
            checkpoints.save(state)
        raise _preempted(stop, state.step)
    while state.step < state.total_steps:
        step_start = time.monotonic()
        loss, real, step_tokens = stepper.run(state.step)
        loss, real_all, votes = t.dist.sum([loss, real, float(stop.requested)])
        state.step += 1
        state.real_tokens += int(real_all)
        state.label_tokens += step_tokens
        state.train_seconds += time.monotonic() - step_start
        state.losses.append((state.step, loss / step_tokens))
        del state.losses[:-MAX_LOSSES_KEPT]
        window.loss += loss
        window.tokens += step_tokens
        window.real += int(real_all)
        last = state.step == state.total_steps
        if state.step % cfg.hp.logging_steps == 0 or last:
            report(_progress(t, state, schedule, window))
            window = _Window()
        every = cfg.hp.eval_steps
        if cfg.evaluate is not None and every and state.step % every == 0 and not last:
            cfg.evaluate(state.step)
        if votes > 0:
            checkpoints.save(state)
            raise _preempted(stop, state.step)
        checkpoints.after_step(state, last)
    return state
