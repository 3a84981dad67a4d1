"""Why a trainer pod, and so the FineTuneJob, failed: one FailureReason from what the pods show.

A failed pod says why through the trainer's exit code (42 bad input, 75 retryable, 143
preempted), the container's `OOMKilled` reason, image pull waiting reasons, and the
`TrainerResult` JSON in its termination message. The Job's Failed condition says whether the
whole run is over (DeadlineExceeded, BackoffLimitExceeded, PodFailurePolicy). In a multi-node
gang one rank's real failure (an out-of-memory, a bad dataset) makes its peers fail too
(they lose their peer): the specific reason is kept over theirs.
"""

from __future__ import annotations

from kubetune_crd import names
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.status import FailureInfo, FailureReason
from kubetune_crd.trainer_contract import ExitCode

from kubetune_operator.conditions import short
from kubetune_operator.create_error import CreateError
from kubetune_operator.kube_objects import Obj
from kubetune_operator.pod_readers import (
    completion_index,
    pod_phase,
    sorted_pods,
    terminated_state,
    trainer_result,
    waiting_state,
)

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
RETRYABLE_CODES = (ExitCode.RETRYABLE, ExitCode.PREEMPTED)


def classify_pod_failure(pod: Obj) -> FailureInfo | None:
    """Why a trainer pod failed, or None while it has not failed."""
    waiting = waiting_state(pod)
    if waiting and waiting.get("reason") in IMAGE_PULL_REASONS:
        return FailureInfo(
            reason="ImagePull", message=short(str(waiting.get("message") or waiting["reason"]))
        )
    state = terminated_state(pod)
    if state is None:
        if pod_phase(pod) == "Failed":
            pod_status = pod.get("status") or {}
            text = pod_status.get("message") or pod_status.get("reason") or "pod failed"
            return FailureInfo(reason="Unknown", message=short(str(text)))
        return None
    if state.get("exitCode") == 0:
        return None
    return _classify_exit(pod, state)


def _classify_exit(pod: Obj, state: Obj) -> FailureInfo:
    """A non-zero exit: OOMKilled, the bad-input code or outcome, an OOM message, or Unknown."""
    code = state.get("exitCode")
    result = trainer_result(pod)
    message = result.message if result and result.message else str(state.get("message") or "")
    term_reason = str(state.get("reason") or "")
    reason: FailureReason
    if term_reason == "OOMKilled":
        reason = "OutOfMemory"
        message = message or "the trainer ran out of memory (OOMKilled)"
    elif code == ExitCode.BAD_INPUT or (result is not None and result.outcome == "bad_input"):
        reason = "BadInput"
    elif any(marker in message.lower() for marker in names.OUT_OF_MEMORY_MARKERS):
        reason = "OutOfMemory"
    else:
        reason = "Unknown"
    if not message:
        message = f"the trainer exited with code {code}" + (
            f" ({term_reason})" if term_reason else ""
        )
    return FailureInfo(reason=reason, message=short(message), exit_code=code)


def failed_pods(pods: list[Obj]) -> list[Obj]:
    """The pods that failed, oldest first."""
    return [p for p in sorted_pods(pods) if classify_pod_failure(p) is not None]


def _finished_at(pod: Obj) -> str:
    return str((terminated_state(pod) or {}).get("finishedAt") or "~")


def latest_failure(failed: list[Obj]) -> FailureInfo | None:
    """The failure that explains the latest attempt (`failed`: oldest first).

    One pod per attempt: its newest failed pod. A gang: the newest failed pod of each index,
    a specific reason (out of memory, bad input...) before Unknown, then the first to end.
    """
    newest: dict[str, Obj] = {}
    for pod in failed:
        newest[completion_index(pod)] = pod
    if not newest:
        return None
    candidates = [(info, pod) for pod in newest.values() if (info := classify_pod_failure(pod))]
    if len(candidates) == 1:
        return candidates[0][0]
    candidates.sort(key=lambda c: (c[0].reason == "Unknown", _finished_at(c[1])))
    return candidates[0][0] if candidates else None


def bad_input_failure(failed: list[Obj]) -> FailureInfo | None:
    """The first bad-input failure: retrying cannot fix it, whatever the Job would do."""
    for pod in failed:
        info = classify_pod_failure(pod)
        if info is not None and info.reason == "BadInput":
            return info
    return None


def job_failure(
    failed_cond: Obj | None,
    bad_input: FailureInfo | None,
    last_failure: FailureInfo | None,
    create_error: CreateError | None,
    ftj: FineTuneJob,
) -> FailureInfo:
    """The FineTuneJob's failure once it is over (see the module docstring)."""
    if bad_input is not None:
        return bad_input
    if failed_cond is None:
        assert create_error is not None
        return FailureInfo(reason="BadInput", message=short(create_error.failure_message))
    job_reason = str(failed_cond.get("reason") or "")
    if job_reason == "DeadlineExceeded":
        return FailureInfo(
            reason="DeadlineExceeded",
            message=f"the job ran longer than spec.deadlineSeconds ({ftj.spec.deadline_seconds}s)",
            exit_code=last_failure.exit_code if last_failure else None,
        )
    if last_failure is not None:
        if last_failure.reason == "Unknown" and last_failure.exit_code in RETRYABLE_CODES:
            return FailureInfo(
                reason="BackoffLimitExceeded",
                message=short(
                    f"retries exhausted (spec.maxRetries={ftj.spec.max_retries}); "
                    f"last attempt: {last_failure.message}"
                ),
                exit_code=last_failure.exit_code,
            )
        return last_failure
    text = str(failed_cond.get("message") or job_reason or "the Job failed")
    reason: FailureReason = (
        "BackoffLimitExceeded" if job_reason == "BackoffLimitExceeded" else "Unknown"
    )
    return FailureInfo(reason=reason, message=short(text))
