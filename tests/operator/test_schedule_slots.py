"""The pure slot logic of FineTuneSchedules: which slots came due, and what to do about them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from kubetune_crd.schedule import FineTuneScheduleSpec
from kubetune_operator.schedule_slots import MAX_SLOTS, cron_slots, decide

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def spec(**fields: Any) -> FineTuneScheduleSpec:
    body = {"schedule": "* * * * *", "jobTemplate": {"model": "tiny", "dataset": {"url": "d.csv"}}}
    return FineTuneScheduleSpec.model_validate({**body, **fields})


def test_slots_since_the_last_one_and_the_next() -> None:
    slots = cron_slots("* * * * *", "UTC", at("2026-11-30T10:00:30"), at("2026-11-30T10:03:10"))
    assert slots.due == at("2026-11-30T10:03:00")
    assert slots.older == 2  # 10:01 and 10:02 passed without a run
    assert slots.next == at("2026-11-30T10:04:00")


def test_no_slot_due_yet() -> None:
    slots = cron_slots("0 2 1 * *", "UTC", at("2026-11-01T02:00:00"), at("2026-11-20T00:00:00"))
    assert slots.due is None and slots.older == 0
    assert slots.next == at("2026-12-01T02:00:00")


def test_a_slot_exactly_at_the_last_one_is_not_due_again() -> None:
    slots = cron_slots("* * * * *", "UTC", at("2026-11-30T10:03:00"), at("2026-11-30T10:03:00"))
    assert slots.due is None
    assert slots.next == at("2026-11-30T10:04:00")


def test_time_zone_applies_to_the_slots_across_daylight_saving() -> None:
    # 02:00 in Paris: 01:00 UTC in winter, 00:00 UTC in summer (DST starts 2026-03-29)
    winter = cron_slots("0 2 * * *", "Europe/Paris", at("2026-03-27T12:00"), at("2026-03-28T12:00"))
    assert winter.due == at("2026-03-28T01:00:00")
    summer = cron_slots("0 2 * * *", "Europe/Paris", at("2026-03-30T12:00"), at("2026-03-31T12:00"))
    assert summer.due == at("2026-03-31T00:00:00")
    assert summer.next == at("2026-04-01T00:00:00")
    assert summer.next.tzinfo == UTC


def test_monthly_macro_in_a_time_zone() -> None:
    slots = cron_slots(
        "@monthly", "America/New_York", at("2026-11-15T00:00"), at("2026-12-01T06:00")
    )
    assert slots.due == at("2026-12-01T05:00:00")  # midnight in New York
    assert slots.next == at("2027-01-01T05:00:00")


def test_a_long_outage_is_counted_without_listing_every_slot() -> None:
    start = at("2026-01-01T00:00:30")
    slots = cron_slots("* * * * *", "UTC", start, start + timedelta(days=30))
    assert slots.due == at("2026-01-31T00:00:00")
    assert slots.older >= MAX_SLOTS - 1
    assert slots.next == at("2026-01-31T00:01:00")


def test_decide_runs_the_due_slot_on_time() -> None:
    d = decide(spec(), at("2026-11-30T10:00:30"), at("2026-11-30T10:01:00.2"), active=0)
    assert (d.action, d.slot, d.missed, d.reason) == (
        "run",
        at("2026-11-30T10:01:00"),
        0,
        "Scheduled",
    )
    assert d.cancel_active is False
    assert d.late_seconds == pytest.approx(0.2)


def test_decide_waits_when_nothing_is_due() -> None:
    d = decide(spec(), at("2026-11-30T10:01:00"), at("2026-11-30T10:01:40"), active=0)
    assert (d.action, d.slot, d.missed) == ("wait", None, 0)
    assert d.next_slot == at("2026-11-30T10:02:00")


def test_a_missed_slot_within_the_deadline_runs_late_once_older_ones_are_missed() -> None:
    s = spec(startingDeadlineSeconds=120)
    d = decide(s, at("2026-11-30T10:00:00"), at("2026-11-30T10:03:30"), active=0)
    assert (d.action, d.slot) == ("run", at("2026-11-30T10:03:00"))
    assert d.missed == 2  # 10:01 and 10:02: only the latest slot runs
    # after it ran (the last slot handled is 10:03), nothing is due again
    again = decide(s, at("2026-11-30T10:03:00"), at("2026-11-30T10:03:40"), active=1)
    assert again.action == "wait"


def test_a_slot_past_the_deadline_is_missed() -> None:
    s = spec(schedule="0 2 1 * *", startingDeadlineSeconds=3600)
    d = decide(s, at("2026-11-01T02:00:00"), at("2026-12-01T04:00:00"), active=0)
    assert (d.action, d.slot, d.missed, d.reason) == (
        "miss",
        at("2026-12-01T02:00:00"),
        1,
        "DeadlineExceeded",
    )
    assert d.next_slot == at("2027-01-01T02:00:00")


def test_without_a_deadline_the_latest_missed_slot_always_runs() -> None:
    s = spec(schedule="0 2 1 * *")
    d = decide(s, at("2026-10-01T02:00:00"), at("2026-12-20T00:00:00"), active=0)
    assert (d.action, d.slot, d.missed) == ("run", at("2026-12-01T02:00:00"), 1)


def test_suspend_skips_the_slot() -> None:
    d = decide(spec(suspend=True), at("2026-11-30T10:00:30"), at("2026-11-30T10:01:01"), 0)
    assert (d.action, d.reason, d.missed) == ("skip", "Suspended", 0)
    assert d.slot == at("2026-11-30T10:01:00")


@pytest.mark.parametrize(
    ("policy", "active", "action", "cancel"),
    [
        ("Forbid", 1, "skip", False),
        ("Forbid", 0, "run", False),
        ("Replace", 1, "run", True),
        ("Replace", 0, "run", False),
        ("Allow", 2, "run", False),
    ],
)
def test_concurrency_policy(policy: str, active: int, action: str, cancel: bool) -> None:
    s = spec(concurrencyPolicy=policy)
    d = decide(s, at("2026-11-30T10:00:30"), at("2026-11-30T10:01:01"), active=active)
    assert (d.action, d.cancel_active) == (action, cancel)
    if action == "skip":
        assert d.reason == "ConcurrencyForbid"
