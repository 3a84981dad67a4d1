"""What the trainer's last word can hold: the TrainerResult fitted into the termination message.

Kubernetes keeps at most 4 KiB of a container's termination message and cuts the rest, which
would leave the operator a JSON document it cannot read. The result is fitted, in order:
the before/after answers are shortened further (down to SAMPLES_FLOOR_BYTES; the model
manifest keeps them whole), then the model's file list is left out (its `manifestSha256`
still covers every file), then the message is halved until it fits.
"""

from __future__ import annotations

from kubetune_crd.trainer_contract import TrainerResult

from kubetune_trainer.evaluation import fit_samples

MAX_TERMINATION_BYTES = 4096
SAMPLES_FLOOR_BYTES = 768
"""The answers are never shortened below this to make room for the file list."""


def _size(result: TrainerResult) -> int:
    return len(body_of(result).encode("utf-8"))


def body_of(result: TrainerResult) -> str:
    """The termination message's text of `result`."""
    return result.model_dump_json(by_alias=True, exclude_none=True)


def fit_result(result: TrainerResult, limit: int = MAX_TERMINATION_BYTES) -> TrainerResult:
    """`result` shortened until its JSON takes at most `limit` bytes (see the module)."""
    if _size(result) <= limit:
        return result
    if result.samples:
        others = _size(result.model_copy(update={"samples": []}))
        room = max(limit - others - 16, SAMPLES_FLOOR_BYTES)
        result = result.model_copy(update={"samples": fit_samples(result.samples, room)})
    if _size(result) > limit and result.model is not None and result.model.files:
        model = result.model.model_copy(update={"files": None})
        result = result.model_copy(update={"model": model})
    while _size(result) > limit and len(result.message) > 16:
        result = result.model_copy(update={"message": result.message[: len(result.message) // 2]})
    return result
