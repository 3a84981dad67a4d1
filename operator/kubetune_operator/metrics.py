"""The operator's Prometheus metrics: schedule runs, skips and misses; FineTuneJob starts, phases.

Served at `/metrics` by the liveness server (health_server.py), on its port: no new port to
secure. One `OperatorMetrics` per process, with its own registry (so two operators in one test
process never share counters), handed to both reconcilers, which count where they act:

- the schedule reconciler once the schedule's status recording the pass is written, so the
  counters move exactly like `status.runCount`, `skippedCount` and `missedCount` (a pass retried
  after a conflict counts once); only the runs this operator creates count, not the API's
  "run now";
- the FineTuneJob reconciler when it creates a FineTuneJob's Job (an adopted one is not new),
  when a status write changes the phase, and when a written status first reports an hf://
  base model's cache lookup (with its ModelCacheHit / ModelCacheMiss Event).

Counters restart at 0 with the process, as Prometheus expects (`rate`, `increase`).
"""

from __future__ import annotations

from typing import get_args

from kubetune_crd.status import Phase
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from kubetune_operator.kube_objects import Key
from kubetune_operator.schedule_slots import Decision
from kubetune_operator.transitions import CACHE_REASONS, Transition

PHASES: tuple[str, ...] = get_args(Phase)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class OperatorMetrics:
    """The operator's counters, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.schedule_runs = Counter(
            "kubetune_schedule_runs",
            "FineTuneJobs the operator created for a schedule's slots",
            ["namespace", "schedule"],
            registry=self.registry,
        )
        self.schedule_skipped = Counter(
            "kubetune_schedule_skipped",
            "Schedule slots skipped: Suspended, or ConcurrencyForbid (a run still active)",
            ["namespace", "schedule", "reason"],
            registry=self.registry,
        )
        self.schedule_missed = Counter(
            "kubetune_schedule_missed",
            "Schedule slots missed: past startingDeadlineSeconds, or passed while a later slot ran",
            ["namespace", "schedule"],
            registry=self.registry,
        )
        self.finetunejobs_created = Counter(
            "kubetune_finetunejobs_created",
            "FineTuneJobs the operator started: the Jobs it created for them",
            registry=self.registry,
        )
        self.phase_transitions = Counter(
            "kubetune_finetunejob_phase_transitions",
            "FineTuneJob status phase changes written by the operator, by the new phase",
            ["phase"],
            registry=self.registry,
        )
        for phase in PHASES:  # every phase exported from the start, at 0
            self.phase_transitions.labels(phase)
        self.model_cache_lookups = Counter(
            "kubetune_model_cache_lookups",
            "hf:// base models of FineTuneJobs, once per job at its first lookup (the "
            "pre-flight's, else the training run's): taken from the shared model cache (hit) "
            "or downloaded into it (miss)",
            ["result"],
            registry=self.registry,
        )
        for result in CACHE_REASONS:
            self.model_cache_lookups.labels(result)

    # --- counted by the reconcilers -------------------------------------------------------------

    def schedule_pass(self, key: Key, decision: Decision, created: str | None) -> None:
        """One schedule reconcile whose status is written: its run, skip and missed slots."""
        namespace, name = key
        runs = self.schedule_runs.labels(namespace, name)
        missed = self.schedule_missed.labels(namespace, name)  # both exported from the first pass
        if created:
            runs.inc()
        if decision.missed:
            missed.inc(decision.missed)
        if decision.action == "skip":
            self.schedule_skipped.labels(namespace, name, decision.reason).inc()

    def job_created(self) -> None:
        self.finetunejobs_created.inc()

    def phase_written(self, previous: str | None, phase: str | None) -> None:
        """A status write that changes the phase from `previous` to `phase`."""
        if phase is not None and phase != previous:
            self.phase_transitions.labels(phase).inc()

    def transitions_posted(self, transitions: list[Transition]) -> None:
        """The Events of one status write: model cache hits and misses are counted."""
        for result, reason in CACHE_REASONS.items():
            hits = sum(1 for t in transitions if t.reason == reason)
            if hits:
                self.model_cache_lookups.labels(result).inc(hits)

    # --- served ----------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of every counter (GET /metrics)."""
        return generate_latest(self.registry)
