"""Why a FineTuneJob is not running yet: one PendingReason and a message a user can act on.

Creating (no Job yet, or no pod yet), Queued (Kueue holds the Job suspended), Unschedulable
(the scheduler's own message, from the pod's PodScheduled condition or its FailedScheduling
event), ContainerCreating, WaitingForRetry (an attempt failed, the Job controller retries).
ImagePull is found separately: past a grace period it fails the job.
"""

from __future__ import annotations

from kubetune_crd import names
from kubetune_crd.status import FailureInfo, PendingReason

from kubetune_operator.create_error import CreateError
from kubetune_operator.failure_classification import IMAGE_PULL_REASONS
from kubetune_operator.kube_objects import Obj, labels_of
from kubetune_operator.pod_readers import events_for, pod_name, pod_phase, waiting_state

CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})


def image_pull_problem(pods: list[Obj]) -> tuple[Obj, Obj] | None:
    """The newest pod whose image cannot be pulled, with its waiting state."""
    for pod in reversed(pods):
        waiting = waiting_state(pod)
        if waiting and waiting.get("reason") in IMAGE_PULL_REASONS:
            return pod, waiting
    return None


def unschedulable(pod: Obj, events: list[Obj]) -> str | None:
    """The scheduler's message when the pod fits no node, else None."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return str(cond.get("message") or "no node fits the trainer pod")
    found = events_for(events, "Pod", pod_name(pod), "FailedScheduling")
    if found and not (pod.get("spec") or {}).get("nodeName"):
        return str(found[-1].get("message") or "")
    return None


def pending_reason(
    job: Obj | None,
    pods: list[Obj],
    events: list[Obj],
    create_error: CreateError | None,
    last_failure: FailureInfo | None,
    name: str,
) -> tuple[PendingReason, str]:
    """Why nothing runs (pods oldest first; no pod runs and none pulls an image)."""
    if job is None:
        if create_error is not None:
            return "Creating", f"cannot create the Job yet: {create_error.message}"
        return "Creating", "creating the Job"
    if (job.get("spec") or {}).get("suspend"):
        queue = labels_of(job).get(names.LABEL_KUEUE_QUEUE)
        where = f" in queue {queue}" if queue else ""
        return "Queued", f"waiting for Kueue to admit the Job{where}"
    live = [p for p in pods if pod_phase(p) in (None, "Pending")]
    if live:
        return _live_pod_reason(live, events)
    if last_failure is not None:
        text = f"attempt failed ({last_failure.message}); the Job controller retries"
        return "WaitingForRetry", text
    failed_create = events_for(events, "Job", str(job["metadata"]["name"]), "FailedCreate")
    if failed_create:
        return "Creating", f"the Job cannot create its pod: {failed_create[-1].get('message')}"
    return "Creating", f"waiting for Job {name} to create the trainer pod"


def _live_pod_reason(live: list[Obj], events: list[Obj]) -> tuple[PendingReason, str]:
    """A pod exists but has not started: unschedulable, a config error, or still starting."""
    for pod in reversed(live):
        message = unschedulable(pod, events)
        if message is not None:
            return "Unschedulable", message
    for pod in reversed(live):
        waiting = waiting_state(pod)
        if waiting and waiting.get("reason") in CONFIG_ERROR_REASONS:
            return "ContainerCreating", f"{waiting.get('reason')}: {waiting.get('message') or ''}"
    pod = live[-1]
    if (pod.get("spec") or {}).get("nodeName"):
        return "ContainerCreating", f"pod {pod_name(pod)} is starting"
    return "ContainerCreating", f"pod {pod_name(pod)} is waiting to be scheduled"
