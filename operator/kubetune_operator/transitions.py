"""Which status changes deserve a Kubernetes Event on the FineTuneJob (one per transition).

`kubectl describe ftj` shows them: Validating and PreflightPassed (the CPU pre-flight),
JobCreated, each Pending reason as it changes (Warnings for Unschedulable, ImagePull,
WaitingForRetry), Running (again on each new attempt) and the final phase, the
spec.promotion decision (Promoted / NotPromoted) and, for an hf:// base model, its model
cache lookup (ModelCacheHit / ModelCacheMiss): once per job, from the step that fetched it
first (the pre-flight when it runs, else the training run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kubetune_crd.promotion import PromotionOutcome
from kubetune_crd.status import FineTuneJobStatus

WARNING_PENDING_REASONS = ("Unschedulable", "ImagePull", "WaitingForRetry")


@dataclass(frozen=True)
class Transition:
    """A change worth a Kubernetes Event on the FineTuneJob."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def transitions(prev: FineTuneJobStatus, new: FineTuneJobStatus) -> list[Transition]:
    """The Events a change from `prev` to `new` deserves (one per transition)."""
    out: list[Transition] = []
    if _passed(new) and not _passed(prev):
        message = (new.preflight.message if new.preflight else None) or "pre-flight passed"
        out.append(Transition("Normal", "PreflightPassed", message))
    if new.job_name and not prev.job_name:
        out.append(Transition("Normal", "JobCreated", f"created Job {new.job_name}"))
    cache = cache_transition(prev, new)
    if cache is not None:
        out.append(cache)
    if new.phase == prev.phase and new.phase != "Pending":
        if new.phase == "Running" and new.attempts > prev.attempts:
            out.append(Transition("Normal", "Running", new.message or "trainer running"))
        return out
    phase_event = _phase_event(prev, new)
    if phase_event is not None:
        out.append(phase_event)
    if new.promotion is not None and prev.promotion is None:
        out.append(decision_transition(new.promotion))
    return out


CACHE_REASONS = {"hit": "ModelCacheHit", "miss": "ModelCacheMiss"}
"""Event reasons of an hf:// base model's cache lookup (the operator's metric counts them)."""


@dataclass(frozen=True)
class CacheLookup:
    """The first model cache lookup of a job: by its pre-flight, else by its training run."""

    result: Literal["hit", "miss"]
    revision: str | None
    by: str


def first_cache_lookup(status: FineTuneJobStatus) -> CacheLookup | None:
    """The pre-flight fetches an hf:// base model first (status.preflight); with no pre-flight
    (or a report without it) the training run's lookup (status.model) is the job's."""
    pre = status.preflight
    if pre is not None and pre.base_model_cache is not None:
        return CacheLookup(pre.base_model_cache, pre.base_model_revision, "the pre-flight")
    model = status.model
    if model is not None and model.base_model_cache is not None:
        return CacheLookup(model.base_model_cache, model.base_model_revision, "the training run")
    return None


def cache_transition(prev: FineTuneJobStatus, new: FineTuneJobStatus) -> Transition | None:
    """The first status that reports the job's hf:// base model cache lookup: hit or miss
    (once per job: the training run's hit after a pre-flight's download is no new Event)."""
    if first_cache_lookup(prev) is not None:
        return None
    lookup = first_cache_lookup(new)
    if lookup is None:
        return None
    how = (
        "taken from the shared model cache"
        if lookup.result == "hit"
        else "downloaded into the shared model cache"
    )
    model = new.model.base_model if new.model is not None else None
    what = f"base model {model}" if model else "hf:// base model"
    message = f"{what} (commit {lookup.revision}) {how} by {lookup.by}"
    return Transition("Normal", CACHE_REASONS[lookup.result], message)


def _passed(status: FineTuneJobStatus) -> bool:
    return status.preflight is not None and status.preflight.outcome == "Passed"


def decision_transition(outcome: PromotionOutcome) -> Transition:
    """The Event of a promotion decision (on the FineTuneJob and on its ModelAlias)."""
    if outcome.promoted:
        message = f"{outcome.model} is now {outcome.alias}: {outcome.reason}"
        return Transition("Normal", "Promoted", message)
    message = f"{outcome.model} not promoted to {outcome.alias}: {outcome.reason}"
    return Transition("Normal", "NotPromoted", message)


def _phase_event(prev: FineTuneJobStatus, new: FineTuneJobStatus) -> Transition | None:
    if new.phase == "Pending" and new.pending is not None:
        old_reason = prev.pending.reason if prev.pending else None
        if prev.phase == "Pending" and old_reason == new.pending.reason:
            return None
        warn = new.pending.reason in WARNING_PENDING_REASONS
        return Transition("Warning" if warn else "Normal", new.pending.reason, new.pending.message)
    if new.phase == "Validating":
        return Transition("Normal", "Validating", new.message or "pre-flight running")
    if new.phase == "Running":
        return Transition("Normal", "Running", new.message or "trainer running")
    if new.phase == "Succeeded":
        return Transition("Normal", "Succeeded", new.message or "succeeded")
    if new.phase == "Failed" and new.failure is not None:
        return Transition("Warning", new.failure.reason, new.failure.message)
    if new.phase == "Cancelled":
        return Transition("Normal", "Cancelled", new.message or "cancelled")
    return None
