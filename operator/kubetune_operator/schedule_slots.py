"""When a FineTuneSchedule runs: its cron slots and what to do about the one due now (pure).

Like the CronJob controller: the slots that came due since the last one handled (or since the
schedule was created) are listed; only the latest may run, the older ones are counted as
missed. The latest runs if it is still within `startingDeadlineSeconds` (always when unset),
else it is missed too. A due slot is skipped instead when the schedule is suspended (so a
resumed schedule does not start at once for a slot that passed while it was paused), or when a
run is still active under `concurrencyPolicy: Forbid`; `Replace` cancels the active runs
first. Nothing here reads a clock or the cluster: the reconciler passes `now` in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from croniter import croniter
from kubetune_crd.schedule import FineTuneScheduleSpec, zone

MAX_SLOTS = 10_000
"""Slots counted at most in one pass (a per-minute schedule down for a week has 10,080)."""

Action = Literal["wait", "run", "skip", "miss"]


@dataclass(frozen=True)
class Slots:
    """The slots after `after` up to `now`, and the next one."""

    due: datetime | None
    """The latest slot in (after, now], if any."""
    older: int
    """Slots in (after, due): passed without a run."""
    next: datetime
    """The first slot after `now`."""


def cron_slots(expression: str, time_zone: str, after: datetime, now: datetime) -> Slots:
    """The slots of `expression` (in `time_zone`) in (after, now], and the next one (UTC)."""
    tz = zone(time_zone)
    it = croniter(expression, after.astimezone(tz))
    due: datetime | None = None
    older = 0
    for _ in range(MAX_SLOTS):
        slot: datetime = it.get_next(datetime)
        if slot > now:
            return Slots(due=due, older=older, next=slot.astimezone(now.tzinfo))
        if due is not None:
            older += 1
        due = slot
    # Too many to list: the latest due slot and the next one, from now backwards/forwards.
    latest: datetime = croniter(expression, now.astimezone(tz)).get_prev(datetime)
    following: datetime = croniter(expression, now.astimezone(tz)).get_next(datetime)
    return Slots(due=latest, older=older, next=following.astimezone(now.tzinfo))


@dataclass(frozen=True)
class Decision:
    """What one reconcile does about the schedule's slots."""

    action: Action
    slot: datetime | None
    """The slot acted on (run, skipped or missed); None when none came due."""
    missed: int
    """Slots to add to the missed count (older ones, and `slot` itself for "miss")."""
    reason: str
    """Why: Scheduled, Late, Suspended, ConcurrencyForbid, DeadlineExceeded, NotDue."""
    cancel_active: bool
    """Replace: cancel the active runs before starting the new one."""
    next_slot: datetime
    late_seconds: float = 0.0


def decide(spec: FineTuneScheduleSpec, after: datetime, now: datetime, active: int) -> Decision:
    """The decision for a schedule last handled at `after`, with `active` unfinished runs."""
    slots = cron_slots(spec.schedule, spec.time_zone, after, now)
    if slots.due is None:
        return Decision("wait", None, 0, "NotDue", False, slots.next)
    late = (now - slots.due).total_seconds()
    if spec.suspend:
        return Decision("skip", slots.due, slots.older, "Suspended", False, slots.next, late)
    deadline = spec.starting_deadline_seconds
    if deadline is not None and late > deadline:
        return Decision("miss", slots.due, slots.older + 1, "DeadlineExceeded", False, slots.next)
    if active and spec.concurrency_policy == "Forbid":
        return Decision(
            "skip", slots.due, slots.older, "ConcurrencyForbid", False, slots.next, late
        )
    replace = bool(active) and spec.concurrency_policy == "Replace"
    return Decision("run", slots.due, slots.older, "Scheduled", replace, slots.next, late)
