"""Direct Preference Optimization (method.objective dpo) inside kubetune's own training loop.

Why not trl's `DPOTrainer`: it is a `transformers.Trainer`, with its own checkpoints, resume,
logging and distribution; kubetune's loop (`train.py`) already gives supervised runs complete
checkpoints, exact resume, progress reports, the model manifest, DDP/FSDP ranks and failure
classification, and DPO gets all of them by plugging in here. What DPO itself needs comes from
trl (`trl.data_utils`, `trl.trainer.utils`): its tokenization of a pair (the completion starts
where the tokenized prompt and prompt + answer diverge, `common_prefix_length`; an EOS appended
to plain-text answers; chat prompts rendered with the generation prompt), its memory-efficient
log-probabilities (`selective_log_softmax`), its switch to the reference for LoRA
(`use_adapter(model, None)`: peft's `disable_adapter()`) and its dropout handling
(`disable_dropout_in_model`). The loss is trl's default `sigmoid` loss,
`-logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))` over summed
completion log-probabilities.

Rows: a pair i is two unpacked rows, chosen at i and rejected at n + i (`PairRows`); a
micro-batch of pairs runs as one padded batch (chosen rows, then rejected rows), like trl's
concatenated forward. The reference is the base model: for LoRA the same weights with the
adapter disabled, for full fine-tuning a frozen copy (`reference_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from kubetune_trainer.dataset import IGNORE, Encoded, Example
from kubetune_trainer.distributed import SINGLE, Dist
from kubetune_trainer.formats import Row
from kubetune_trainer.packing import PackedRow, collate
from kubetune_trainer.runtime import DeviceInfo
from kubetune_trainer.schedule import eval_batches

PAIR_ROWS_PER_PAIR = 2


# -- tokenization (trl's DPOTrainer._prepare_dataset, on kubetune's validated rows) ------------
def _ids(tokenizer: Any, value: str | Sequence[dict[str, str]], gen: bool = False) -> list[int]:
    if isinstance(value, str):
        return list(tokenizer(value)["input_ids"])
    rendered = tokenizer.apply_chat_template(
        list(value), tokenize=True, return_dict=True, add_generation_prompt=gen
    )
    return list(rendered["input_ids"])


def _pair_ids(tokenizer: Any, row: Row) -> tuple[list[int], list[int], int]:
    """(prompt + chosen ids, prompt + rejected ids, prompt length)."""
    from trl.data_utils import common_prefix_length

    if row.chat:
        prompt = _ids(tokenizer, row.messages, gen=True)
        chosen = _ids(tokenizer, row.messages + row.chosen_messages)
        rejected = _ids(tokenizer, row.messages + row.rejected_messages)
    else:
        eos = tokenizer.eos_token or ""
        prompt = _ids(tokenizer, row.prompt)
        chosen = _ids(tokenizer, row.prompt + _with_eos(row.chosen, eos))
        rejected = _ids(tokenizer, row.prompt + _with_eos(row.rejected, eos))
    length = min(common_prefix_length(prompt, chosen), common_prefix_length(prompt, rejected))
    return chosen, rejected, length


def _with_eos(text: str, eos: str) -> str:
    return text if not eos or text.endswith(eos) else text + eos


def _example(ids: list[int], prompt_len: int, max_len: int) -> Example:
    labels = [IGNORE] * prompt_len + ids[prompt_len:]
    return Example(ids[:max_len], labels[:max_len])


def encode_pairs(tokenizer: Any, rows: Sequence[Row], max_len: int) -> Encoded:
    """The examples of the pairs: every kept pair's chosen example, then (same order) every
    rejected one. A pair whose prompt fills `max_len` is dropped (trl's `keep_start`)."""
    from kubetune_trainer.errors import BadInputError

    if any(row.chat for row in rows) and not getattr(tokenizer, "chat_template", None):
        raise BadInputError(
            "the preference pairs are chat messages but the model's tokenizer has no chat "
            "template; use plain prompt/chosen/rejected strings instead"
        )
    chosen_examples: list[Example] = []
    rejected_examples: list[Example] = []
    truncated = dropped = 0
    for row in rows:
        chosen, rejected, prompt_len = _pair_ids(tokenizer, row)
        pair = (_example(chosen, prompt_len, max_len), _example(rejected, prompt_len, max_len))
        if any(example.trained_tokens == 0 for example in pair):
            dropped += 1
            continue
        truncated += sum(len(ids) > max_len for ids in (chosen, rejected))
        chosen_examples.append(pair[0])
        rejected_examples.append(pair[1])
    return Encoded(chosen_examples + rejected_examples, truncated, dropped)


def pair_rows(encoded: Encoded) -> list[PackedRow]:
    """One unpacked row per example (the first token is never a target, as in `pack`)."""
    return [
        PackedRow(list(e.input_ids), [IGNORE, *e.labels[1:]], list(range(len(e.input_ids))))
        for e in encoded.examples
    ]


def pairs_in(rows: Sequence[PackedRow]) -> int:
    return len(rows) // PAIR_ROWS_PER_PAIR


def pair_batch(rows: Sequence[PackedRow], pairs: Sequence[int], pad_id: int) -> Any:
    """The padded batch of some pairs: their chosen rows, then their rejected rows."""
    n = pairs_in(rows)
    return collate([rows[i] for i in pairs] + [rows[n + i] for i in pairs], pad_id)


# -- log-probabilities and the loss -------------------------------------------------------------
def sequence_logps(runner: Any, batch: Any, device: DeviceInfo) -> Any:
    """Summed log-probability of each row's label tokens (its answer) under `runner`."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from trl.trainer.utils import selective_log_softmax

    from kubetune_trainer.train import autocast

    ids = batch.input_ids.to(device.device, non_blocking=True)
    positions = batch.position_ids.to(device.device, non_blocking=True)
    labels = batch.labels.to(device.device, non_blocking=True)
    targets = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    keep = targets != IGNORE
    with autocast(device):
        logits = runner(input_ids=ids, position_ids=positions, use_cache=False).logits
    # Log-probabilities only where there is a target: the answers, not prompts or padding.
    logps = selective_log_softmax(logits[keep].float(), targets[keep])
    rows = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1).expand_as(keep)[keep]
    total = torch.zeros(ids.shape[0], dtype=logps.dtype, device=logps.device)
    return total.index_add(0, rows, logps)


def reference_context(model: Any, reference: Any) -> AbstractContextManager[Any]:
    """Where `model` computes the reference: a LoRA model with its adapter disabled (trl's
    `use_adapter(model, None)`); nothing to switch when a frozen copy is the reference."""
    if reference is not None:
        return nullcontext()
    from trl.trainer.utils import use_adapter

    return use_adapter(model, None)


@dataclass(frozen=True)
class PairScores:
    """Summed over some pairs (a micro-batch or a held-out set): the DPO loss, the implicit
    reward margins (beta x (chosen log-ratio - rejected log-ratio)), and how many pairs have
    a positive margin."""

    loss: Any
    margin: float
    correct: int
    pairs: int


def pair_scores(
    model: Any,
    reference: Any,
    batch: Any,
    beta: float,
    device: DeviceInfo,
    forward: Any = None,
) -> PairScores:
    """DPO on one batch of pairs (`pair_batch`). `model`: the policy (a peft model for LoRA);
    `forward`: what runs its forward when not the model itself (DDP); `reference`: the frozen
    copy for full fine-tuning, None for LoRA."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    policy = sequence_logps(model if forward is None else forward, batch, device)
    with torch.no_grad(), reference_context(model, reference):
        ref = sequence_logps(model if reference is None else reference, batch, device)
    chosen, rejected = policy.chunk(2)
    ref_chosen, ref_rejected = ref.detach().chunk(2)
    margins = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    loss = -F.logsigmoid(margins).sum()
    detached = margins.detach()
    return PairScores(
        loss, float(detached.sum()), int((detached > 0).sum()), int(detached.shape[0])
    )


class PairLoss:
    """The DPO step loss (`train.StepLoss`): summed over the pairs of a micro-batch, one loss
    unit per pair, so a step's loss is the mean over its pairs on all ranks."""

    def __init__(self, rows: Sequence[PackedRow], pad_id: int, beta: float, reference: Any):
        self.rows = rows
        self.pad_id = pad_id
        self.beta = beta
        self.reference = reference
        self.units = [1] * pairs_in(rows)

    def __call__(self, t: Any, indices: Sequence[int]) -> tuple[Any, int]:
        batch = pair_batch(self.rows, indices, self.pad_id)
        model, forward = t.par.model, t.par.forward
        scores = pair_scores(model, self.reference, batch, self.beta, t.device, forward)
        return scores.loss, batch.real_tokens


@dataclass(frozen=True)
class HeldOut:
    """A held-out measurement: the mean loss (per label token for supervised runs, per pair for
    DPO) and, for DPO, the mean reward margin and the reward accuracy."""

    loss: float | None
    reward_margin: float | None = None
    reward_accuracy: float | None = None


def evaluate_pairs(
    model: Any,
    reference: Any,
    rows: Sequence[PackedRow],
    batch_size: int,
    pad_id: int,
    beta: float,
    device: DeviceInfo,
    stop: Any = None,
    dist: Dist = SINGLE,
) -> HeldOut:
    """DPO loss, reward margin and accuracy over the held-out pairs, every rank scoring its
    shard (the sums are added up, as `train.evaluate` does)."""
    import torch

    n = pairs_in(rows)
    if not n:
        return HeldOut(None)
    was_training = model.training
    model.eval()
    loss = margin = 0.0
    correct = counted = 0
    with torch.no_grad():
        for indices in eval_batches(n, batch_size, dist.rank, dist.world_size):
            if stop is not None:
                stop.check("evaluation")
            scores = pair_scores(
                model, reference, pair_batch(rows, indices or [0], pad_id), beta, device
            )
            if indices:
                loss += float(scores.loss)
                margin += scores.margin
                correct += scores.correct
                counted += scores.pairs
    if hasattr(model, "reshard"):
        model.reshard()
    if was_training:
        model.train()
    sums = dist.sum([loss, margin, float(correct), float(counted)])
    total = max(sums[3], 1.0)
    return HeldOut(sums[0] / total, sums[1] / total, sums[2] / total)


# -- the reference model for full fine-tuning ---------------------------------------------------
def reference_model(
    base_model: str, method: Any, strategy: str, load_on: DeviceInfo, device: DeviceInfo, dist: Dist
) -> Any | None:
    """None for LoRA and QLoRA (the policy with its adapter disabled is the reference); for full
    fine-tuning a frozen copy of the base model, sharded like the policy under FSDP."""
    if method.adapter:
        return None
    from trl.trainer.utils import disable_dropout_in_model

    from kubetune_trainer.modeling import load_model
    from kubetune_trainer.parallel import wrap

    reference = load_model(base_model, method, load_on, False)
    reference.requires_grad_(False)
    reference.eval()
    disable_dropout_in_model(reference)
    if strategy == "fsdp":
        reference = wrap(reference, "fsdp", device, dist).model
    return reference


def prepare_policy(model: Any) -> None:
    """trl's default for DPO (`disable_dropout=True`): no dropout in the trained model, so
    the policy and the reference see the same network at step 0 (margins start at 0)."""
    from trl.trainer.utils import disable_dropout_in_model

    disable_dropout_in_model(model)
