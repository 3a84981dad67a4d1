"""Readers of the Job, its trainer pods and their Warning events (pure, no decisions).

What a Job's conditions say, the trainer container's state, the TrainerResult in its
termination message, which index of an Indexed Job a pod runs. The status derivation and
the reconciler decide with these; nothing here decides.
"""

from __future__ import annotations

import json

from kubetune_crd import names
from kubetune_crd.trainer_contract import TrainerResult
from pydantic import ValidationError

from kubetune_operator.kube_objects import Obj, meta

COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
"""Set by the Job controller on each pod of an Indexed Job (its index, the node rank)."""


# --- the Job ----------------------------------------------------------------------------------


def job_condition(job: Obj | None, ctype: str) -> Obj | None:
    """The Job's condition of type `ctype` when its status is True."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return dict(cond)
    return None


def job_finished(job: Obj | None) -> bool:
    return bool(job_condition(job, "Complete") or job_condition(job, "Failed"))


def job_world_size(job: Obj | None) -> int | None:
    """Training processes the Job runs (its trainer's PET_NNODES x PET_NPROC_PER_NODE).

    Read from the Job itself, so the status says what runs even after the operator's
    defaults change; None for a Job without these variables (an older operator's).
    """
    template = (((job or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in template.get("containers") or []:
        if container.get("name") != names.TRAINER_CONTAINER:
            continue
        env = {e.get("name"): e.get("value") for e in container.get("env") or []}
        try:
            return int(env[names.ENV_NNODES]) * int(env[names.ENV_NPROC_PER_NODE])
        except (KeyError, TypeError, ValueError):
            return None
    return None


# --- a trainer pod ------------------------------------------------------------------------------


def pod_name(pod: Obj) -> str:
    return str(meta(pod).get("name", ""))


def pod_phase(pod: Obj) -> str | None:
    phase = (pod.get("status") or {}).get("phase")
    return str(phase) if phase else None


def completion_index(pod: Obj) -> str:
    """The pod's index in an Indexed Job ("0" for a pod of an ordinary Job)."""
    return str((meta(pod).get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "0"))


def sorted_pods(pods: list[Obj]) -> list[Obj]:
    """Oldest first (creation time, then name)."""
    return sorted(
        pods, key=lambda p: (meta(p).get("creationTimestamp") or "", meta(p).get("name") or "")
    )


def container_status(pod: Obj) -> Obj | None:
    """The trainer container's status (else the first container's)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == names.TRAINER_CONTAINER:
            return dict(cs)
    return dict(statuses[0]) if statuses else None


def terminated_state(pod: Obj) -> Obj | None:
    """The trainer container's terminated state (current, else last), if it ended."""
    cs = container_status(pod)
    if not cs:
        return None
    state = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
        "terminated"
    )
    return dict(state) if state else None


def waiting_state(pod: Obj) -> Obj | None:
    cs = container_status(pod)
    waiting = ((cs or {}).get("state") or {}).get("waiting")
    return dict(waiting) if waiting else None


def is_running(pod: Obj) -> bool:
    cs = container_status(pod)
    return pod_phase(pod) == "Running" and bool(((cs or {}).get("state") or {}).get("running"))


def pod_started_at(pod: Obj) -> str | None:
    """When the trainer container started (running now, or terminated)."""
    cs = container_status(pod) or {}
    for state in (cs.get("state") or {}, cs.get("lastState") or {}):
        for key in ("running", "terminated"):
            started = (state.get(key) or {}).get("startedAt")
            if started:
                return str(started)
    return None


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


# --- Warning events ------------------------------------------------------------------------------


def events_for(events: list[Obj], kind: str, name: str, reason: str | None = None) -> list[Obj]:
    """The events about one object (optionally of one reason), oldest first."""
    found = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("kind") == kind
        and (e.get("involvedObject") or {}).get("name") == name
        and (reason is None or e.get("reason") == reason)
    ]
    return sorted(found, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
