"""What the CPU pre-flight Job shows, and how it shapes the FineTuneJob status (pure).

`read_preflight` turns the pre-flight Job and its pod into a `PreflightView`: still
Validating, Passed (with the trainer's report from the termination message), or Failed
(classified like a trainer pod: a bad dataset is BadInput with the trainer's message, which
names the line). `record_preflight` puts the report into `status.preflight` and keeps the
`Validated` condition; the status derivation decides the phase with it (Validating while it
runs, Failed when it failed, the training Job's phases once it passed).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetune_crd import names
from kubetune_crd.preflight import PreflightReport
from kubetune_crd.status import CONDITION_VALIDATED, FailureInfo, FineTuneJobStatus

from kubetune_operator.conditions import ConditionSet, short
from kubetune_operator.failure_classification import (
    bad_input_failure,
    failed_pods,
    latest_failure,
)
from kubetune_operator.kube_objects import Obj, meta
from kubetune_operator.pod_readers import job_condition, terminated_state, trainer_result

PREFIX = "pre-flight: "


@dataclass(frozen=True)
class PreflightView:
    """The pre-flight as the cluster shows it."""

    report: PreflightReport
    failure: FailureInfo | None = None

    @property
    def passed(self) -> bool:
        return self.report.outcome == "Passed"

    @property
    def running(self) -> bool:
        return self.report.outcome == "Validating"


def passed_before(status: FineTuneJobStatus) -> bool:
    """Whether the status already records a passed pre-flight (its Job may be gone)."""
    return status.preflight is not None and status.preflight.outcome == "Passed"


def _duration(job: Obj) -> float | None:
    job_status = job.get("status") or {}
    start = names.parse_time(job_status.get("startTime"))
    end = names.parse_time(job_status.get("completionTime"))
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _report_of(pods: list[Obj]) -> PreflightReport:
    """The trainer's report from the newest ended pod that wrote one."""
    for pod in reversed(pods):
        result = trainer_result(pod) if terminated_state(pod) else None
        if result is not None:
            report = result.validation or PreflightReport()
            return report.model_copy(update={"message": short(result.message, 300) or None})
    return PreflightReport()


def read_preflight(job: Obj, pods: list[Obj]) -> PreflightView:
    """The view of pre-flight Job `job` from its pods (oldest first)."""
    report = _report_of(pods)
    update: dict[str, object] = {"job_name": str(meta(job).get("name"))}
    if job_condition(job, "Complete") is not None:
        update.update(outcome="Passed", duration_seconds=_duration(job))
        return PreflightView(report.model_copy(update=update))
    failed = failed_pods(pods)
    failure = bad_input_failure(failed)
    failed_cond = job_condition(job, "Failed")
    if failure is None and failed_cond is not None:
        text = str(failed_cond.get("message") or failed_cond.get("reason") or "the Job failed")
        failure = latest_failure(failed) or FailureInfo(reason="Unknown", message=short(text))
        if failed_cond.get("reason") == "DeadlineExceeded":
            failure = FailureInfo(reason="DeadlineExceeded", message=short(text))
    if failure is None:
        update["outcome"] = "Validating"
        return PreflightView(report.model_copy(update=update))
    failure = failure.model_copy(update={"message": short(PREFIX + failure.message)})
    update.update(outcome="Failed", message=failure.message)
    return PreflightView(report.model_copy(update=update), failure)


def record_preflight(
    view: PreflightView | None, status: FineTuneJobStatus, conds: ConditionSet
) -> None:
    """status.preflight and the Validated condition."""
    if view is None:
        return
    report = view.report
    status.preflight = report
    if view.failure is not None:
        conds.set(CONDITION_VALIDATED, False, view.failure.reason, view.failure.message)
    elif view.passed:
        conds.set(CONDITION_VALIDATED, True, "Passed", report.message or "pre-flight passed")
    else:
        conds.set(
            CONDITION_VALIDATED,
            False,
            "Validating",
            f"pre-flight Job {report.job_name} checks the dataset and the model on CPU",
        )


def validating(status: FineTuneJobStatus, view: PreflightView) -> None:
    """Phase Validating: nothing is scheduled on a GPU yet."""
    status.phase = "Validating"
    status.pending = None
    status.message = (
        f"Validating: pre-flight Job {view.report.job_name} checks the dataset and the model"
    )
