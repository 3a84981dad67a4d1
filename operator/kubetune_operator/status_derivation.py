"""FineTuneJob + its Job, pods and Warning events -> the FineTuneJob status (pure).

The operator calls `derive_status` on every change it sees and writes the difference. Rules:

- Terminal phases (Succeeded, Failed, Cancelled) never revert: once written they are returned
  as they are, whatever the Job does afterwards (the operator may stop the Job after writing).
- The Job's own conditions decide success and failure (Complete / Failed with reason
  DeadlineExceeded, BackoffLimitExceeded or PodFailurePolicy); the failed pods say why
  (`failure_classification`).
- A pod that exited with the bad-input code fails the FineTuneJob at once, even where the
  server has no podFailurePolicy (v1.20): retrying cannot fix a bad dataset. So does a
  permanent create error (the API server refused the Job, or the operator refused the spec).
- Pending says why (`pending_reasons`). An image that cannot be pulled for longer than the
  grace period fails the job with reason ImagePull.
- Attempts: one per pod of a single-node run; one per gang restart of a multi-node run
  (counted on the index-0 pod, which every restart replaces). A pod deleted outright still
  counts. worldSize and the effective batch are written once the Job exists.
- Progress is written by the progress endpoint; derivation only completes it on success.
- The CPU pre-flight (`preflight.py`): Validating while its Job runs and no training Job
  exists; its failure fails the FineTuneJob (no training Job is ever made); its report goes
  to status.preflight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from kubetune_crd import names
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.status import (
    CONDITION_CANCELLED,
    CONDITION_FAILED,
    CONDITION_JOB_CREATED,
    CONDITION_RUNNING,
    CONDITION_SCHEDULED,
    CONDITION_SUCCEEDED,
    CONDITION_TRACKING,
    TERMINAL_PHASES,
    FailureInfo,
    FineTuneJobStatus,
    ModelInfo,
    PendingInfo,
    PendingReason,
    Progress,
)
from kubetune_crd.tracking import TrackingReport

from kubetune_operator.conditions import ConditionSet, short
from kubetune_operator.create_error import CreateError, is_permanent
from kubetune_operator.failure_classification import (
    bad_input_failure,
    failed_pods,
    job_failure,
    latest_failure,
)
from kubetune_operator.kube_objects import Obj
from kubetune_operator.pending_reasons import image_pull_problem, pending_reason
from kubetune_operator.pod_readers import (
    completion_index,
    is_running,
    job_condition,
    job_world_size,
    pod_name,
    pod_phase,
    pod_started_at,
    sorted_pods,
    terminated_state,
    trainer_result,
)
from kubetune_operator.preflight import PreflightView, record_preflight, validating
from kubetune_operator.transitions import Transition, transitions


@dataclass
class Derived:
    """The status to write, the Events it deserves, and when to look again."""

    status: FineTuneJobStatus
    transitions: list[Transition] = field(default_factory=list)
    requeue_after: float | None = None


@dataclass(frozen=True)
class Observed:
    """What the cluster shows about one FineTuneJob (the inputs of one derivation)."""

    ftj: FineTuneJob
    job: Obj | None
    pods: list[Obj]  # oldest first
    events: list[Obj]
    now: datetime
    expected_model: ModelInfo | None
    progress: Progress | None
    create_error: CreateError | None
    image_pull_grace_seconds: float
    preflight: PreflightView | None = None

    @property
    def prev(self) -> FineTuneJobStatus:
        return self.ftj.status

    @property
    def now_s(self) -> str:
        return names.format_time(self.now)

    @property
    def job_status(self) -> Obj:
        return dict((self.job or {}).get("status") or {})


def derive_status(
    ftj: FineTuneJob,
    job: Obj | None,
    pods: list[Obj],
    events: list[Obj] | None = None,
    *,
    now: datetime,
    expected_model: ModelInfo | None = None,
    progress: Progress | None = None,
    create_error: CreateError | None = None,
    image_pull_grace_seconds: float = 600.0,
    preflight: PreflightView | None = None,
) -> Derived:
    """The status `ftj` should have given what the cluster shows (see the module docstring).

    `pods` are the pods of `job` (the caller filters by owner); `events` are Warning events
    about the Job and those pods; `progress` is the freshest progress report known;
    `preflight` what the CPU pre-flight Job shows (None: none exists, or it is gone).
    """
    prev = ftj.status
    if prev.phase in TERMINAL_PHASES:
        return Derived(status=prev)
    seen = Observed(
        ftj=ftj,
        job=job,
        pods=sorted_pods(pods),
        events=events or [],
        now=now,
        expected_model=expected_model,
        progress=progress,
        create_error=create_error,
        image_pull_grace_seconds=image_pull_grace_seconds,
        preflight=preflight,
    )
    generation = ftj.metadata.get("generation")
    status = prev.model_copy(deep=True)
    status.observed_generation = generation
    conds = ConditionSet(prev.conditions, seen.now_s, generation)
    if job is not None:
        status.job_name = str(job["metadata"]["name"])
        _record_world_size(status, ftj, job)
    _count_attempts(status, seen)
    record_preflight(preflight, status, conds)
    requeue = _derive_phase(seen, status, conds)
    status.conditions = conds.result()
    return Derived(status=status, transitions=transitions(prev, status), requeue_after=requeue)


# --- what the Job's existence fixes ------------------------------------------------------------


def _record_world_size(status: FineTuneJobStatus, ftj: FineTuneJob, job: Obj) -> None:
    """worldSize and the effective batch, as the Job runs them."""
    world_size = job_world_size(job)
    if world_size is None:
        return
    hp = ftj.spec.hyperparameters
    status.world_size = world_size
    status.effective_batch_size = names.effective_batch_size(
        hp.batch_size, hp.gradient_accumulation_steps, world_size
    )


def _count_attempts(status: FineTuneJobStatus, seen: Observed) -> None:
    """Attempts and start time (see the module docstring)."""
    prev = seen.prev
    nodes = seen.ftj.spec.resources.nodes
    marking = seen.pods if nodes == 1 else [p for p in seen.pods if completion_index(p) == "0"]
    started = [p for p in marking if pod_started_at(p)]
    # A pod deleted outright (a lost node) leaves no trace in the Job's counters: a newest
    # started pod we have not recorded yet is one more attempt.
    attempts = prev.attempts
    if started and pod_name(started[-1]) != prev.last_pod:
        attempts = prev.attempts + 1 if prev.last_pod else max(prev.attempts, 1)
        status.last_pod = pod_name(started[-1])
    status.attempts = max(attempts, len(started), _counted_by_job(seen, nodes))
    if status.start_time is None:
        starts = sorted(s for s in (pod_started_at(p) for p in seen.pods) if s)
        if starts:
            status.start_time = starts[0]


def _counted_by_job(seen: Observed, nodes: int) -> int:
    """Attempts the Job's counters show: ended pods plus the running one(s), per gang."""
    failed = int(seen.job_status.get("failed") or 0)
    succeeded = int(seen.job_status.get("succeeded") or 0)
    running = sum(1 for p in seen.pods if is_running(p))
    if nodes == 1:
        return failed + succeeded + running
    # every gang restart fails each of its pods once; the current gang counts once
    return math.ceil(failed / nodes) + (1 if running or succeeded else 0)


# --- the phase --------------------------------------------------------------------------------


def _derive_phase(seen: Observed, status: FineTuneJobStatus, conds: ConditionSet) -> float | None:
    """Set the phase and its conditions; seconds after which to look again, if any."""
    if job_condition(seen.job, "Complete") is not None:
        _succeed(seen, status, conds)
        return None
    failed = failed_pods(seen.pods)
    last_failure = latest_failure(failed)
    failed_cond = job_condition(seen.job, "Failed")
    bad_input = bad_input_failure(failed)
    preflight = seen.preflight if seen.job is None else None
    if preflight is not None and preflight.failure is not None:
        conds.set(CONDITION_JOB_CREATED, False, "PreflightFailed", preflight.failure.message)
        _fail(status, conds, preflight.failure, seen.now_s, None)
        return None
    if failed_cond is not None or bad_input is not None or is_permanent(seen.create_error):
        _record_refusal(seen, conds)
        failure = job_failure(failed_cond, bad_input, last_failure, seen.create_error, seen.ftj)
        _fail(status, conds, failure, seen.now_s, failed_cond)
        return None
    if seen.ftj.spec.cancel:
        _cancel(status, conds, seen.now_s)
        return None
    if preflight is not None and preflight.running:
        validating(status, preflight)
        return None
    return _derive_active(seen, status, conds, last_failure)


def _record_refusal(seen: Observed, conds: ConditionSet) -> None:
    """The operator refused the spec: JobCreated False, with the refusal as its reason."""
    error = seen.create_error
    if seen.job is None and error is not None and error.refusal is not None:
        conds.set(CONDITION_JOB_CREATED, False, error.refusal, error.message)


def _succeed(seen: Observed, status: FineTuneJobStatus, conds: ConditionSet) -> None:
    """The Job is Complete: the trainer's model (else the expected one), metrics, 100%."""
    succeeded = [p for p in seen.pods if (terminated_state(p) or {}).get("exitCode") == 0]
    result = trainer_result(succeeded[-1]) if succeeded else None
    expected = seen.expected_model
    model = expected
    if result is not None and result.model is not None:
        model = result.model
        if expected is not None and model.path is None and expected.path:
            model = model.model_copy(update={"path": expected.path})
    status.phase = "Succeeded"
    status.model = model
    if result is not None and result.metrics is not None:
        status.metrics = result.metrics
    if result is not None and result.samples:
        status.samples = result.samples
    if result is not None and result.promotion is not None:
        status.promotion = result.promotion
    _record_tracking(result.tracking if result is not None else None, status, conds)
    status.pending = None
    status.failure = None
    status.completion_time = str(seen.job_status.get("completionTime") or seen.now_s)
    base = seen.progress or seen.prev.progress or Progress()
    status.progress = base.model_copy(update={"fraction": 1.0, "eta_seconds": 0.0, "stage": "done"})
    where = model.uri if model is not None else "the output volume"
    status.message = f"Succeeded: model stored at {where}"
    conds.set(CONDITION_JOB_CREATED, True, "JobCreated", f"Job {status.job_name}")
    conds.set(CONDITION_SCHEDULED, True, "Scheduled")
    conds.set(CONDITION_RUNNING, False, "Completed", "the trainer finished")
    conds.set(CONDITION_SUCCEEDED, True, "ModelStored", status.message)


def _record_tracking(
    report: TrackingReport | None, status: FineTuneJobStatus, conds: ConditionSet
) -> None:
    """The trainer's tracking report (spec.tracking): the run ids, and TrackingHealthy."""
    if report is None:
        return
    status.tracking = report
    if report.error:
        conds.set(CONDITION_TRACKING, False, "TrackingFailed", report.error)
    else:
        conds.set(CONDITION_TRACKING, True, "Logged", "every tracker logged the run")


def _fail(
    status: FineTuneJobStatus,
    conds: ConditionSet,
    failure: FailureInfo,
    now_s: str,
    failed_cond: Obj | None,
) -> None:
    status.phase = "Failed"
    status.pending = None
    status.failure = failure
    status.completion_time = str((failed_cond or {}).get("lastTransitionTime") or now_s)
    status.message = short(f"Failed ({failure.reason}): {failure.message}", 300)
    conds.set(CONDITION_RUNNING, False, failure.reason, failure.message)
    conds.set(CONDITION_FAILED, True, failure.reason, failure.message)


def _cancel(status: FineTuneJobStatus, conds: ConditionSet, now_s: str) -> None:
    status.phase = "Cancelled"
    status.pending = None
    status.failure = FailureInfo(reason="Cancelled", message="cancelled by spec.cancel")
    status.completion_time = now_s
    status.message = "Cancelled: the trainer was stopped; the record is kept"
    conds.set(CONDITION_RUNNING, False, "Cancelled", "cancelled by spec.cancel")
    conds.set(CONDITION_CANCELLED, True, "CancelRequested", "spec.cancel is true")


def _derive_active(
    seen: Observed,
    status: FineTuneJobStatus,
    conds: ConditionSet,
    last_failure: FailureInfo | None,
) -> float | None:
    """Not over: an image that does not pull, a running trainer, or pending (and why)."""
    pull = image_pull_problem(seen.pods)
    running = [p for p in seen.pods if is_running(p)]
    if pull is not None and not running:
        return _image_pull(seen, status, conds, *pull)
    if running:
        pod = pod_name(running[-1])
        status.phase = "Running"
        status.pending = None
        status.message = f"Running: attempt {status.attempts}, pod {pod}"
        conds.set(CONDITION_JOB_CREATED, True, "JobCreated", f"Job {status.job_name}")
        conds.set(CONDITION_SCHEDULED, True, "Scheduled", f"pod {pod}")
        conds.set(CONDITION_RUNNING, True, "TrainerRunning", f"pod {pod}")
        return None
    if any(pod_phase(p) == "Succeeded" for p in seen.pods):
        # The pod finished; the Job controller will mark the Job Complete in a moment.
        status.phase = "Running"
        status.pending = None
        return None
    name = str(seen.ftj.metadata.get("name", ""))
    reason, message = pending_reason(
        seen.job, seen.pods, seen.events, seen.create_error, last_failure, name
    )
    _set_pending(status, conds, _pending(seen.prev, reason, message, seen.now_s))
    if seen.job is not None:
        conds.set(CONDITION_JOB_CREATED, True, "JobCreated", f"Job {status.job_name}")
    return None


def _image_pull(
    seen: Observed, status: FineTuneJobStatus, conds: ConditionSet, pod: Obj, waiting: Obj
) -> float | None:
    """Pending ImagePull until the grace period is over, then Failed ImagePull."""
    text = f"pod {pod_name(pod)}: {waiting.get('reason')}: {waiting.get('message') or ''}"
    pend = _pending(seen.prev, "ImagePull", text, seen.now_s)
    since = names.parse_time(pend.since) or seen.now
    waited = (seen.now - since).total_seconds()
    grace = seen.image_pull_grace_seconds
    if waited >= grace:
        message = short(f"image could not be pulled for {int(waited)}s: {pend.message}")
        _fail(status, conds, FailureInfo(reason="ImagePull", message=message), seen.now_s, None)
        return None
    _set_pending(status, conds, pend)
    return max(1.0, grace - waited)


def _pending(
    prev: FineTuneJobStatus, reason: PendingReason, message: str, now_s: str
) -> PendingInfo:
    since = prev.pending.since if prev.pending and prev.pending.reason == reason else None
    return PendingInfo(reason=reason, message=short(message), since=since or now_s)


def _set_pending(status: FineTuneJobStatus, conds: ConditionSet, pend: PendingInfo) -> None:
    status.phase = "Pending"
    status.pending = pend
    status.message = short(f"Pending ({pend.reason}): {pend.message}", 300)
    conds.set(CONDITION_SCHEDULED, False, pend.reason, pend.message)
    if conds.has(CONDITION_RUNNING):
        conds.set(CONDITION_RUNNING, False, pend.reason, pend.message)
    if pend.reason == "Creating":
        conds.set(CONDITION_JOB_CREATED, False, "Creating", pend.message)
