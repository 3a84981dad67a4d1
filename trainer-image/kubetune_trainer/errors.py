"""Errors that decide the trainer's exit code (kubetune_crd.trainer_contract.ExitCode), and the
one place that turns any exception into a `TrainerResult` and that code."""

from __future__ import annotations

import traceback

from kubetune_crd.names import OUT_OF_MEMORY_MARKERS
from kubetune_crd.trainer_contract import ExitCode, TrainerResult

MESSAGE_MAX = 2048


class TrainerError(Exception):
    """Base class: the message is shown to users (keep it actionable and secret-free)."""


class BadInputError(TrainerError):
    """Bad dataset or configuration: retrying cannot help (exit 42)."""


class RetryableError(TrainerError):
    """A transient failure (network, storage): the Job retries and resumes (exit 75)."""


class PreemptedError(TrainerError):
    """SIGTERM received; a checkpoint was saved when training had started (exit 143)."""


OUT_OF_MEMORY_HINT = (
    f"{OUT_OF_MEMORY_MARKERS[0]}: lower hyperparameters.batchSize or maxSeqLength, or enable "
    "gradientCheckpointing"
)
"""Starts every out-of-memory message: the operator reports a failure whose message holds one
of `names.OUT_OF_MEMORY_MARKERS` as OutOfMemory."""


def classify(exc: BaseException) -> tuple[TrainerResult, ExitCode]:
    """The result and exit code of a run that raised `exc`."""
    if isinstance(exc, BadInputError):
        return TrainerResult(
            outcome="bad_input", message=str(exc)[:MESSAGE_MAX]
        ), ExitCode.BAD_INPUT
    if isinstance(exc, RetryableError):
        return TrainerResult(
            outcome="retryable", message=str(exc)[:MESSAGE_MAX]
        ), ExitCode.RETRYABLE
    if isinstance(exc, PreemptedError):
        return TrainerResult(
            outcome="preempted", message=str(exc)[:MESSAGE_MAX]
        ), ExitCode.PREEMPTED
    if isinstance(exc, MemoryError):
        return TrainerResult(outcome="error", message=OUT_OF_MEMORY_HINT), ExitCode.UNKNOWN_ERROR
    traceback.print_exception(exc)
    text = f"{type(exc).__name__}: {exc}"
    if any(marker in text.lower() for marker in OUT_OF_MEMORY_MARKERS):
        text = f"{OUT_OF_MEMORY_HINT} ({text[:300]})"
    return TrainerResult(outcome="error", message=text[:MESSAGE_MAX]), ExitCode.UNKNOWN_ERROR
