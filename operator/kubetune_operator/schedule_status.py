"""A FineTuneSchedule's status and Events, derived from its runs and the slot decision (pure).

The runs are the FineTuneJobs labelled with the schedule's name and owned by its uid (the
operator's own and the API's run-now alike). Counters only grow: a run is counted when this
operator created it, a slot when it was skipped or missed. The latest results are kept even
after the history limits delete the runs they came from (the status is written first).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from kubetune_crd import names
from kubetune_crd.promotion import PromotionOutcome
from kubetune_crd.schedule import CONDITION_READY, FineTuneScheduleStatus, ResultPhase, RunRef
from kubetune_crd.status import TERMINAL_PHASES

from kubetune_operator.conditions import ConditionSet, short
from kubetune_operator.kube_objects import Obj, meta
from kubetune_operator.schedule_slots import Decision
from kubetune_operator.transitions import Transition

_NEVER = datetime.min.replace(tzinfo=names.utc_now().tzinfo)


@dataclass(frozen=True)
class Outcome:
    """What this reconcile did to the cluster."""

    created: str | None = None
    """The run it created for `decision.slot` (None: none, or it existed already)."""
    cancelled: list[str] = field(default_factory=list)
    """Active runs it cancelled (Replace)."""


# --- reading runs --------------------------------------------------------------------------
def owned_runs(schedule_uid: str, runs: Iterable[Obj]) -> list[Obj]:
    """The runs whose controlling owner is the schedule with `schedule_uid`."""
    return [
        run
        for run in runs
        if any(
            ref.get("uid") == schedule_uid and ref.get("controller")
            for ref in meta(run).get("ownerReferences") or []
        )
    ]


def run_phase(run: Obj) -> str | None:
    return (run.get("status") or {}).get("phase")


def scheduled_time(run: Obj) -> datetime:
    """The slot a run was made for (its annotation; else its creation time)."""
    m = meta(run)
    text = (m.get("annotations") or {}).get(names.ANNOTATION_SCHEDULED_TIME)
    return names.parse_time(text) or names.parse_time(m.get("creationTimestamp")) or _NEVER


def _finished_at(run: Obj) -> datetime:
    status = run.get("status") or {}
    return names.parse_time(status.get("completionTime")) or scheduled_time(run)


def active_runs(runs: Iterable[Obj]) -> list[Obj]:
    """Runs not finished (and not being deleted), oldest slot first."""
    alive = [r for r in runs if run_phase(r) not in TERMINAL_PHASES]
    alive = [r for r in alive if not meta(r).get("deletionTimestamp")]
    return sorted(alive, key=scheduled_time)


def history_to_delete(runs: Iterable[Obj], succeeded_limit: int, failed_limit: int) -> list[Obj]:
    """Finished runs beyond the history limits (the oldest ones), to delete."""
    finished = [r for r in runs if run_phase(r) in TERMINAL_PHASES]
    finished.sort(key=scheduled_time, reverse=True)
    succeeded = [r for r in finished if run_phase(r) == "Succeeded"]
    failed = [r for r in finished if run_phase(r) != "Succeeded"]
    return succeeded[succeeded_limit:] + failed[failed_limit:]


def _ref(run: Obj) -> RunRef:
    return RunRef(
        name=str(meta(run)["name"]), scheduled_time=names.format_time(scheduled_time(run))
    )


# --- the status ------------------------------------------------------------------------------
def _later(old: str | None, new: datetime | None) -> str | None:
    """The later of a stored time and a new one, as stored text."""
    if new is None:
        return old
    previous = names.parse_time(old)
    return names.format_time(new) if previous is None or new > previous else old


def _results(status: FineTuneScheduleStatus, runs: list[Obj]) -> None:
    """Last run, last result, last success and last promotion decision, never going back in
    time. A run is a plain FineTuneJob: a template with `promotion` gives each run the same
    alias and policy, and the latest finished run's decision (status.promotion: promoted or
    kept, both figures) is copied here with its result."""
    if runs:
        newest = max(runs, key=scheduled_time)
        when = scheduled_time(newest)
        if status.last_run_time != _later(status.last_run_time, when):
            status.last_run_time = names.format_time(when)
            status.last_run_name = str(meta(newest)["name"])
    finished = [r for r in runs if run_phase(r) in TERMINAL_PHASES]
    if finished:
        latest = max(finished, key=_finished_at)
        ended = _later(status.last_finished_time, _finished_at(latest))
        if ended != status.last_finished_time:
            status.last_finished_time = ended
            status.last_result = cast(ResultPhase, run_phase(latest))
            decided = (latest.get("status") or {}).get("promotion")
            if decided:
                status.last_promotion = PromotionOutcome.model_validate(decided)
    succeeded = [_finished_at(r) for r in finished if run_phase(r) == "Succeeded"]
    if succeeded:
        status.last_successful_time = _later(status.last_successful_time, max(succeeded))


def derive_status(
    previous: FineTuneScheduleStatus,
    runs: list[Obj],
    decision: Decision,
    outcome: Outcome,
    suspended: bool,
    generation: int | None,
    now: datetime,
) -> FineTuneScheduleStatus:
    """The new status after `decision` and `outcome`, from the schedule's current runs."""
    status = previous.model_copy(deep=True)
    status.observed_generation = generation
    status.active = [_ref(r) for r in active_runs(runs)]
    if decision.slot is not None:
        status.last_schedule_time = _later(status.last_schedule_time, decision.slot)
    _results(status, runs)
    status.run_count += 1 if outcome.created else 0
    status.skipped_count += 1 if decision.action == "skip" else 0
    status.missed_count += decision.missed
    status.next_schedule_time = None if suspended else names.format_time(decision.next_slot)
    conditions = ConditionSet(status.conditions, names.format_time(now), generation)
    if suspended:
        conditions.set(CONDITION_READY, False, "Suspended", "suspended: no new runs")
        status.message = "suspended"
    else:
        next_text = status.next_schedule_time
        conditions.set(CONDITION_READY, True, "Scheduled", f"next run at {next_text}")
        status.message = f"next run at {next_text}"
    status.conditions = conditions.result()
    return status


def invalid_status(
    previous: FineTuneScheduleStatus, reason: str, message: str, generation: int | None, now: str
) -> FineTuneScheduleStatus:
    """The status of a schedule the operator refuses: Ready False, nothing scheduled."""
    status = previous.model_copy(deep=True)
    status.observed_generation = generation
    status.next_schedule_time = None
    conditions = ConditionSet(status.conditions, now, generation)
    conditions.set(CONDITION_READY, False, reason, message)
    status.conditions = conditions.result()
    status.message = short(f"{reason}: {message}", 300)
    return status


# --- Events ----------------------------------------------------------------------------------
def decision_transitions(
    decision: Decision, outcome: Outcome, active: list[Obj]
) -> list[Transition]:
    """The Events one decision deserves: a run started, a slot skipped or missed."""
    out: list[Transition] = []
    slot = names.format_time(decision.slot) if decision.slot is not None else ""
    if decision.missed:
        why = (
            f"the latest, {slot}, is past startingDeadlineSeconds"
            if decision.action == "miss"
            else f"only the latest, {slot}, is acted on"
        )
        out.append(Transition("Warning", "RunMissed", f"{decision.missed} slot(s) missed: {why}"))
    for name in outcome.cancelled:
        out.append(Transition("Normal", "RunReplaced", f"cancelled {name} (Replace) for {slot}"))
    if outcome.created:
        late = f", {decision.late_seconds:.0f}s late" if decision.late_seconds >= 60 else ""
        out.append(
            Transition("Normal", "RunStarted", f"created {outcome.created} for {slot}{late}")
        )
    if decision.action == "skip":
        if decision.reason == "Suspended":
            message = f"slot {slot} skipped: the schedule is suspended"
        else:
            running = ", ".join(str(meta(r)["name"]) for r in active)
            message = f"slot {slot} skipped: {running} still active (concurrencyPolicy Forbid)"
        out.append(Transition("Normal", "RunSkipped", message))
    return out


def finished_transitions(previous: FineTuneScheduleStatus, runs: list[Obj]) -> list[Transition]:
    """An Event for each run that was active and is now finished (with its failure reason)."""
    was_active = {ref.name for ref in previous.active}
    out: list[Transition] = []
    for run in runs:
        name, phase = str(meta(run)["name"]), run_phase(run)
        if name not in was_active or phase not in TERMINAL_PHASES:
            continue
        failure = (run.get("status") or {}).get("failure") or {}
        if phase == "Succeeded":
            out.append(Transition("Normal", "RunSucceeded", f"{name} succeeded"))
        else:
            reason = failure.get("reason") or phase
            detail = short(f"{name} {str(phase).lower()} ({reason}): {failure.get('message', '')}")
            out.append(Transition("Warning", f"Run{phase}", detail))
    return out
