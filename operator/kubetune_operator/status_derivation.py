"""FineTuneJob + its Job, pods and Warning events -> the FineTuneJob status (pure).

The operator calls `derive_status` on every change it sees and writes the difference. Rules:

- Terminal phases (Succeeded, Failed, Cancelled) never revert: once written they are returned
  as they are, whatever the Job does afterwards (the operator may stop the Job after writing).
- The Job's own conditions decide success and failure (Complete / Failed with reason
  DeadlineExceeded, BackoffLimitExceeded or PodFailurePolicy). The failed pods say why:
  the trainer's exit code (42 bad input, 75 retryable, 143 preempted), the container's
  `OOMKilled` reason, image pull waiting reasons, and the `TrainerResult` JSON the trainer
  wrote to its termination message.
- A pod that exited with the bad-input code fails the FineTuneJob at once, even where the
  server has no podFailurePolicy (v1.20): retrying cannot fix a bad dataset.
- Pending says why: Creating, Queued (Kueue suspend), Unschedulable (with the scheduler's
  message from the pod's PodScheduled condition or its FailedScheduling event), ImagePull,
  ContainerCreating, WaitingForRetry. An image that cannot be pulled for longer than the
  grace period fails the job with reason ImagePull.
- Progress is written by the progress endpoint; derivation only completes it on success.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from kubetune_crd.resource import FineTuneJob
from kubetune_crd.status import (
    CONDITION_CANCELLED,
    CONDITION_FAILED,
    CONDITION_JOB_CREATED,
    CONDITION_RUNNING,
    CONDITION_SCHEDULED,
    CONDITION_SUCCEEDED,
    TERMINAL_PHASES,
    Condition,
    FailureInfo,
    FailureReason,
    FineTuneJobStatus,
    ModelInfo,
    PendingInfo,
    PendingReason,
    Progress,
)
from kubetune_crd.trainer_contract import ExitCode, TrainerResult
from pydantic import ValidationError

Obj = dict[str, Any]
UTC = timezone.utc

CONTAINER_NAME = "trainer"
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
OOM_MARKERS = ("out of memory", "outofmemoryerror", "cuda oom")
MAX_MESSAGE = 1000


def iso(moment: datetime) -> str:
    """RFC 3339 with second precision, like Kubernetes timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Transition:
    """A change worth a Kubernetes Event on the FineTuneJob."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class CreateError:
    """Why the Job could not be created (the operator retries unless `permanent`)."""

    message: str
    permanent: bool = False


@dataclass
class Derived:
    """The status to write, the Events it deserves, and when to look again."""

    status: FineTuneJobStatus
    transitions: list[Transition] = field(default_factory=list)
    requeue_after: float | None = None


# --- reading Jobs and pods ------------------------------------------------------------------


def job_condition(job: Obj | None, ctype: str) -> Obj | None:
    """The Job's condition of type `ctype` when its status is True."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return dict(cond)
    return None


def job_finished(job: Obj | None) -> bool:
    return bool(job_condition(job, "Complete") or job_condition(job, "Failed"))


def _container_status(pod: Obj) -> Obj | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == CONTAINER_NAME:
            return dict(cs)
    return dict(statuses[0]) if statuses else None


def terminated_state(pod: Obj) -> Obj | None:
    """The trainer container's terminated state (current, else last), if it ended."""
    cs = _container_status(pod)
    if not cs:
        return None
    state = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
        "terminated"
    )
    return dict(state) if state else None


def waiting_state(pod: Obj) -> Obj | None:
    cs = _container_status(pod)
    waiting = ((cs or {}).get("state") or {}).get("waiting")
    return dict(waiting) if waiting else None


def is_running(pod: Obj) -> bool:
    cs = _container_status(pod)
    return (pod.get("status") or {}).get("phase") == "Running" and bool(
        ((cs or {}).get("state") or {}).get("running")
    )


def trainer_result(pod: Obj) -> TrainerResult | None:
    """The TrainerResult JSON of the termination message, when there is a valid one."""
    state = terminated_state(pod)
    message = (state or {}).get("message")
    if not message:
        return None
    try:
        return TrainerResult.model_validate(json.loads(message))
    except (ValueError, ValidationError):
        return None


def _pod_started_at(pod: Obj) -> str | None:
    cs = _container_status(pod) or {}
    for state in (cs.get("state") or {}, cs.get("lastState") or {}):
        for key in ("running", "terminated"):
            started = (state.get(key) or {}).get("startedAt")
            if started:
                return str(started)
    return None


def _sorted_pods(pods: list[Obj]) -> list[Obj]:
    return sorted(
        pods,
        key=lambda p: (
            (p.get("metadata") or {}).get("creationTimestamp") or "",
            (p.get("metadata") or {}).get("name") or "",
        ),
    )


def _pod_name(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def classify_pod_failure(pod: Obj) -> FailureInfo | None:
    """Why a trainer pod failed, or None while it has not failed."""
    waiting = waiting_state(pod)
    if waiting and waiting.get("reason") in IMAGE_PULL_REASONS:
        return FailureInfo(
            reason="ImagePull", message=_short(str(waiting.get("message") or waiting["reason"]))
        )
    state = terminated_state(pod)
    if state is None:
        pod_status = pod.get("status") or {}
        if pod_status.get("phase") == "Failed":
            text = pod_status.get("message") or pod_status.get("reason") or "pod failed"
            return FailureInfo(reason="Unknown", message=_short(str(text)))
        return None
    code = state.get("exitCode")
    if code == 0:
        return None
    result = trainer_result(pod)
    raw = str(state.get("message") or "")
    message = result.message if result and result.message else raw
    term_reason = str(state.get("reason") or "")
    reason: FailureReason
    if term_reason == "OOMKilled":
        reason = "OutOfMemory"
        message = message or "the trainer ran out of memory (OOMKilled)"
    elif code == ExitCode.BAD_INPUT or (result is not None and result.outcome == "bad_input"):
        reason = "BadInput"
    elif any(marker in message.lower() for marker in OOM_MARKERS):
        reason = "OutOfMemory"
    else:
        reason = "Unknown"
    if not message:
        message = f"the trainer exited with code {code}" + (
            f" ({term_reason})" if term_reason else ""
        )
    return FailureInfo(reason=reason, message=_short(message), exit_code=code)


def _failed_pods(pods: list[Obj]) -> list[Obj]:
    return [p for p in _sorted_pods(pods) if classify_pod_failure(p) is not None]


def _events_for(events: list[Obj], kind: str, name: str, reason: str | None = None) -> list[Obj]:
    found = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("kind") == kind
        and (e.get("involvedObject") or {}).get("name") == name
        and (reason is None or e.get("reason") == reason)
    ]
    return sorted(found, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))


# --- conditions ------------------------------------------------------------------------------


class _Conditions:
    def __init__(self, previous: list[Condition], now: str, generation: int | None) -> None:
        self._by_type = {c.type: c for c in previous}
        self._order = [c.type for c in previous]
        self._now = now
        self._generation = generation

    def set(self, ctype: str, status: bool, reason: str, message: str = "") -> None:
        value: Literal["True", "False"] = "True" if status else "False"
        old = self._by_type.get(ctype)
        since = old.last_transition_time if old is not None and old.status == value else self._now
        self._by_type[ctype] = Condition(
            type=ctype,
            status=value,
            reason=reason,
            # Never "": the v1.20 apiserver's merge patch turns "" inside lists into null.
            message=_short(message) or reason,
            last_transition_time=since,
            observed_generation=self._generation,
        )
        if ctype not in self._order:
            self._order.append(ctype)

    def has(self, ctype: str) -> bool:
        return ctype in self._by_type

    def result(self) -> list[Condition]:
        return [self._by_type[t] for t in self._order]


# --- the derivation --------------------------------------------------------------------------


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
) -> Derived:
    """The status `ftj` should have given what the cluster shows (see the module docstring).

    `pods` are the pods of `job` (the caller filters by owner); `events` are Warning events
    about the Job and those pods; `progress` is the freshest progress report known.
    """
    prev = ftj.status
    if prev.phase in TERMINAL_PHASES:
        return Derived(status=prev)
    events = events or []
    generation = ftj.metadata.get("generation")
    now_s = iso(now)
    status = prev.model_copy(deep=True)
    status.observed_generation = generation
    conds = _Conditions(prev.conditions, now_s, generation)
    pods = _sorted_pods(pods)
    job_status = (job or {}).get("status") or {}
    name = str(ftj.metadata.get("name", ""))
    if job is not None:
        status.job_name = str(job["metadata"]["name"])

    # attempts and start time
    started = [p for p in pods if _pod_started_at(p)]
    counted = int(job_status.get("failed") or 0) + int(job_status.get("succeeded") or 0)
    counted += sum(1 for p in pods if is_running(p))
    # A pod deleted outright (a lost node) leaves no trace in the Job's counters: a newest
    # started pod we have not recorded yet is one more attempt.
    seen = prev.attempts
    if started and _pod_name(started[-1]) != prev.last_pod:
        seen = prev.attempts + 1 if prev.last_pod else max(prev.attempts, 1)
        status.last_pod = _pod_name(started[-1])
    status.attempts = max(seen, len(started), counted)
    if status.start_time is None:
        starts = sorted(s for s in (_pod_started_at(p) for p in pods) if s)
        if starts:
            status.start_time = starts[0]

    complete = job_condition(job, "Complete")
    failed_cond = job_condition(job, "Failed")
    failed_pods = _failed_pods(pods)
    last_failure = classify_pod_failure(failed_pods[-1]) if failed_pods else None
    bad_input = next(
        (
            info
            for info in (classify_pod_failure(p) for p in failed_pods)
            if info is not None and info.reason == "BadInput"
        ),
        None,
    )
    requeue: float | None = None

    if complete is not None:
        succeeded = [p for p in pods if (terminated_state(p) or {}).get("exitCode") == 0]
        result = trainer_result(succeeded[-1]) if succeeded else None
        model = expected_model
        if result is not None and result.model is not None:
            model = result.model
            if expected_model is not None and model.path is None and expected_model.path:
                model = model.model_copy(update={"path": expected_model.path})
        status.phase = "Succeeded"
        status.model = model
        if result is not None and result.metrics is not None:
            status.metrics = result.metrics
        status.pending = None
        status.failure = None
        status.completion_time = str(job_status.get("completionTime") or now_s)
        base = progress or prev.progress or Progress()
        status.progress = base.model_copy(
            update={"fraction": 1.0, "eta_seconds": 0.0, "stage": "done"}
        )
        where = model.uri if model is not None else "the output volume"
        status.message = f"Succeeded: model stored at {where}"
        conds.set(CONDITION_JOB_CREATED, True, "JobCreated", f"Job {status.job_name}")
        conds.set(CONDITION_SCHEDULED, True, "Scheduled")
        conds.set(CONDITION_RUNNING, False, "Completed", "the trainer finished")
        conds.set(CONDITION_SUCCEEDED, True, "ModelStored", status.message)
    elif failed_cond is not None or bad_input is not None or _is_permanent(create_error):
        failure = _job_failure(failed_cond, bad_input, last_failure, create_error, ftj)
        _fail(status, conds, failure, now_s, failed_cond)
    elif ftj.spec.cancel:
        status.phase = "Cancelled"
        status.pending = None
        status.failure = FailureInfo(reason="Cancelled", message="cancelled by spec.cancel")
        status.completion_time = now_s
        status.message = "Cancelled: the trainer was stopped; the record is kept"
        conds.set(CONDITION_RUNNING, False, "Cancelled", "cancelled by spec.cancel")
        conds.set(CONDITION_CANCELLED, True, "CancelRequested", "spec.cancel is true")
    else:
        pull = _image_pull_problem(pods)
        running = [p for p in pods if is_running(p)]
        if pull is not None and not running:
            pod, waiting = pull
            pend = _pending(
                prev,
                "ImagePull",
                f"pod {_pod_name(pod)}: {waiting.get('reason')}: {waiting.get('message') or ''}",
                now_s,
            )
            since = parse_time(pend.since) or now
            waited = (now - since).total_seconds()
            if waited >= image_pull_grace_seconds:
                info = FailureInfo(
                    reason="ImagePull",
                    message=_short(f"image could not be pulled for {int(waited)}s: {pend.message}"),
                )
                _fail(status, conds, info, now_s, None)
            else:
                _set_pending(status, conds, pend)
                requeue = max(1.0, image_pull_grace_seconds - waited)
        elif running:
            pod = running[-1]
            status.phase = "Running"
            status.pending = None
            status.message = f"Running: attempt {status.attempts}, pod {_pod_name(pod)}"
            conds.set(CONDITION_JOB_CREATED, True, "JobCreated", f"Job {status.job_name}")
            conds.set(CONDITION_SCHEDULED, True, "Scheduled", f"pod {_pod_name(pod)}")
            conds.set(CONDITION_RUNNING, True, "TrainerRunning", f"pod {_pod_name(pod)}")
        elif any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods):
            # The pod finished; the Job controller will mark the Job Complete in a moment.
            status.phase = "Running"
            status.pending = None
        else:
            reason, message = _pending_reason(job, pods, events, create_error, last_failure, name)
            _set_pending(status, conds, _pending(prev, reason, message, now_s))
            if job is not None:
                conds.set(CONDITION_JOB_CREATED, True, "JobCreated", f"Job {status.job_name}")

    status.conditions = conds.result()
    return Derived(status=status, transitions=transitions(prev, status), requeue_after=requeue)


def _is_permanent(error: CreateError | None) -> bool:
    return error is not None and error.permanent


def _job_failure(
    failed_cond: Obj | None,
    bad_input: FailureInfo | None,
    last_failure: FailureInfo | None,
    create_error: CreateError | None,
    ftj: FineTuneJob,
) -> FailureInfo:
    if bad_input is not None:
        return bad_input
    if failed_cond is None:
        assert create_error is not None
        return FailureInfo(
            reason="BadInput", message=_short(f"the Job was rejected: {create_error.message}")
        )
    job_reason = str(failed_cond.get("reason") or "")
    if job_reason == "DeadlineExceeded":
        return FailureInfo(
            reason="DeadlineExceeded",
            message=f"the job ran longer than spec.deadlineSeconds ({ftj.spec.deadline_seconds}s)",
            exit_code=last_failure.exit_code if last_failure else None,
        )
    if last_failure is not None:
        retryable = (ExitCode.RETRYABLE, ExitCode.PREEMPTED)
        if last_failure.reason == "Unknown" and last_failure.exit_code in retryable:
            return FailureInfo(
                reason="BackoffLimitExceeded",
                message=_short(
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
    return FailureInfo(reason=reason, message=_short(text))


def _fail(
    status: FineTuneJobStatus,
    conds: _Conditions,
    failure: FailureInfo,
    now_s: str,
    failed_cond: Obj | None,
) -> None:
    status.phase = "Failed"
    status.pending = None
    status.failure = failure
    status.completion_time = str((failed_cond or {}).get("lastTransitionTime") or now_s)
    status.message = _short(f"Failed ({failure.reason}): {failure.message}", 300)
    conds.set(CONDITION_RUNNING, False, failure.reason, failure.message)
    conds.set(CONDITION_FAILED, True, failure.reason, failure.message)


def _pending(
    prev: FineTuneJobStatus, reason: PendingReason, message: str, now_s: str
) -> PendingInfo:
    since = prev.pending.since if prev.pending and prev.pending.reason == reason else None
    return PendingInfo(reason=reason, message=_short(message), since=since or now_s)


def _set_pending(status: FineTuneJobStatus, conds: _Conditions, pend: PendingInfo) -> None:
    status.phase = "Pending"
    status.pending = pend
    status.message = _short(f"Pending ({pend.reason}): {pend.message}", 300)
    conds.set(CONDITION_SCHEDULED, False, pend.reason, pend.message)
    if conds.has(CONDITION_RUNNING):
        conds.set(CONDITION_RUNNING, False, pend.reason, pend.message)
    if pend.reason == "Creating":
        conds.set(CONDITION_JOB_CREATED, False, "Creating", pend.message)


def _image_pull_problem(pods: list[Obj]) -> tuple[Obj, Obj] | None:
    for pod in reversed(pods):
        waiting = waiting_state(pod)
        if waiting and waiting.get("reason") in IMAGE_PULL_REASONS:
            return pod, waiting
    return None


def _unschedulable(pod: Obj, events: list[Obj]) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return str(cond.get("message") or "no node fits the trainer pod")
    found = _events_for(events, "Pod", _pod_name(pod), "FailedScheduling")
    if found and not (pod.get("spec") or {}).get("nodeName"):
        return str(found[-1].get("message") or "")
    return None


def _pending_reason(
    job: Obj | None,
    pods: list[Obj],
    events: list[Obj],
    create_error: CreateError | None,
    last_failure: FailureInfo | None,
    name: str,
) -> tuple[PendingReason, str]:
    if job is None:
        if create_error is not None:
            return "Creating", f"cannot create the Job yet: {create_error.message}"
        return "Creating", "creating the Job"
    spec = job.get("spec") or {}
    if spec.get("suspend"):
        queue = ((job.get("metadata") or {}).get("labels") or {}).get("kueue.x-k8s.io/queue-name")
        where = f" in queue {queue}" if queue else ""
        return "Queued", f"waiting for Kueue to admit the Job{where}"
    live = [p for p in pods if (p.get("status") or {}).get("phase") in (None, "Pending")]
    for pod in reversed(live):
        message = _unschedulable(pod, events)
        if message is not None:
            return "Unschedulable", message
    for pod in reversed(live):
        waiting = waiting_state(pod)
        if waiting and waiting.get("reason") in CONFIG_ERROR_REASONS:
            text = f"{waiting.get('reason')}: {waiting.get('message') or ''}"
            return "ContainerCreating", text
    if live:
        pod = live[-1]
        if (pod.get("spec") or {}).get("nodeName"):
            return "ContainerCreating", f"pod {_pod_name(pod)} is starting"
        return "ContainerCreating", f"pod {_pod_name(pod)} is waiting to be scheduled"
    if last_failure is not None:
        text = f"attempt failed ({last_failure.message}); the Job controller retries"
        return "WaitingForRetry", text
    failed_create = _events_for(events, "Job", str(job["metadata"]["name"]), "FailedCreate")
    if failed_create:
        return "Creating", f"the Job cannot create its pod: {failed_create[-1].get('message')}"
    return "Creating", f"waiting for Job {name} to create the trainer pod"


def transitions(prev: FineTuneJobStatus, new: FineTuneJobStatus) -> list[Transition]:
    """The Events a change from `prev` to `new` deserves (one per transition)."""
    out: list[Transition] = []
    if new.job_name and not prev.job_name:
        out.append(Transition("Normal", "JobCreated", f"created Job {new.job_name}"))
    if new.phase == prev.phase and new.phase != "Pending":
        if new.phase == "Running" and new.attempts > prev.attempts:
            out.append(Transition("Normal", "Running", new.message or "trainer running"))
        return out
    if new.phase == "Pending" and new.pending is not None:
        old_reason = prev.pending.reason if prev.pending else None
        if prev.phase != "Pending" or old_reason != new.pending.reason:
            warn = new.pending.reason in ("Unschedulable", "ImagePull", "WaitingForRetry")
            out.append(
                Transition("Warning" if warn else "Normal", new.pending.reason, new.pending.message)
            )
    elif new.phase == "Running":
        out.append(Transition("Normal", "Running", new.message or "trainer running"))
    elif new.phase == "Succeeded":
        out.append(Transition("Normal", "Succeeded", new.message or "succeeded"))
    elif new.phase == "Failed" and new.failure is not None:
        out.append(Transition("Warning", new.failure.reason, new.failure.message))
    elif new.phase == "Cancelled":
        out.append(Transition("Normal", "Cancelled", new.message or "cancelled"))
    return out


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) turning `old` into `new` ({} when equal)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: Obj = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = merge_patch(old[key], value)
            if sub != {}:
                patch[key] = sub
        elif old[key] != value:
            patch[key] = value
    return patch


def now_utc() -> datetime:
    return datetime.now(UTC)
