"""The pure status, history and Event derivation of FineTuneSchedules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from kubetune_crd.schedule import FineTuneScheduleStatus
from kubetune_operator.schedule_slots import Decision
from kubetune_operator.schedule_status import (
    Outcome,
    active_runs,
    decision_transitions,
    derive_status,
    finished_transitions,
    history_to_delete,
    invalid_status,
    owned_runs,
)

UTC = timezone.utc
SLOT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
NEXT = datetime(2027, 1, 1, 2, 0, tzinfo=UTC)


def run(
    name: str, slot: datetime, phase: str | None = None, done: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if done is not None:
        status["completionTime"] = done.strftime("%Y-%m-%dT%H:%M:%SZ")
    status.update(extra)
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "annotations": {"kubetune.io/scheduled-time": slot.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "ownerReferences": [{"kind": "FineTuneSchedule", "uid": "sched", "controller": True}],
        },
        "status": status,
    }


def decision(action: str = "run", missed: int = 0, reason: str = "Scheduled") -> Decision:
    return Decision(action, SLOT, missed, reason, False, NEXT)  # type: ignore[arg-type]


def test_owned_runs_are_those_of_this_schedule_uid() -> None:
    mine = run("a", SLOT)
    theirs = run("b", SLOT)
    theirs["metadata"]["ownerReferences"][0]["uid"] = "other"
    assert owned_runs("sched", [mine, theirs]) == [mine]


def test_active_runs_oldest_first_without_finished_or_deleting_ones() -> None:
    later = run("later", SLOT + timedelta(days=1), "Running")
    earlier = run("earlier", SLOT)
    done = run("done", SLOT - timedelta(days=1), "Succeeded")
    going = run("going", SLOT, "Running")
    going["metadata"]["deletionTimestamp"] = "2026-12-01T03:00:00Z"
    assert [r["metadata"]["name"] for r in active_runs([later, done, going, earlier])] == [
        "earlier",
        "later",
    ]


def test_history_limits_delete_the_oldest_of_each_kind() -> None:
    runs = [
        run(f"ok{i}", SLOT + timedelta(days=i), "Succeeded", SLOT + timedelta(days=i, hours=1))
        for i in range(4)
    ]
    runs += [run("bad0", SLOT, "Failed"), run("bad1", SLOT + timedelta(days=1), "Cancelled")]
    runs.append(run("active", SLOT - timedelta(days=9), "Running"))
    doomed = [r["metadata"]["name"] for r in history_to_delete(runs, 2, 1)]
    assert sorted(doomed) == ["bad0", "ok0", "ok1"]
    assert [r["metadata"]["name"] for r in history_to_delete(runs, 0, 0)] == [
        "ok3",
        "ok2",
        "ok1",
        "ok0",
        "bad1",
        "bad0",
    ]


def test_status_after_a_run_was_created() -> None:
    new = run("s-202612010200", SLOT)
    status = derive_status(
        FineTuneScheduleStatus(run_count=4, skipped_count=1),
        [new],
        decision(missed=2),
        Outcome(created="s-202612010200"),
        suspended=False,
        generation=3,
        now=SLOT,
    )
    assert [a.name for a in status.active] == ["s-202612010200"]
    assert status.last_schedule_time == "2026-12-01T02:00:00Z"
    assert (status.last_run_name, status.last_run_time) == (
        "s-202612010200",
        "2026-12-01T02:00:00Z",
    )
    assert (status.run_count, status.skipped_count, status.missed_count) == (5, 1, 2)
    assert status.next_schedule_time == "2027-01-01T02:00:00Z"
    assert status.observed_generation == 3
    ready = status.conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "True", "Scheduled")


def test_results_never_go_back_once_runs_are_pruned() -> None:
    ok = run("ok", SLOT, "Succeeded", SLOT + timedelta(hours=1))
    failed = run("late-fail", SLOT + timedelta(days=1), "Failed", SLOT + timedelta(days=1, hours=1))
    wait = Decision("wait", None, 0, "NotDue", False, NEXT)
    first = derive_status(FineTuneScheduleStatus(), [ok, failed], wait, Outcome(), False, 1, SLOT)
    assert first.last_result == "Failed"
    assert first.last_successful_time == "2026-12-01T03:00:00Z"
    assert first.last_finished_time == "2026-12-02T03:00:00Z"
    # the failed run was deleted (history): the older success does not become the last result
    again = derive_status(first, [ok], wait, Outcome(), False, 1, SLOT)
    assert again.last_result == "Failed"
    assert again.last_run_name == "late-fail"
    assert again == first.model_copy(update={"active": []})


def test_the_latest_finished_runs_promotion_decision_is_kept() -> None:
    def decided(model: str, promoted: bool) -> dict[str, Any]:
        return {
            "alias": "frigo",
            "policy": "if-better",
            "promoted": promoted,
            "model": model,
            "challengerBitsPerByte": 1.5 if promoted else 3.0,
            "championBitsPerByte": 2.0,
        }

    wait = Decision("wait", None, 0, "NotDue", False, NEXT)
    won = run("jan", SLOT, "Succeeded", SLOT + timedelta(hours=1), promotion=decided("m1", True))
    first = derive_status(FineTuneScheduleStatus(), [won], wait, Outcome(), False, 1, SLOT)
    assert first.last_promotion is not None and first.last_promotion.promoted
    lost = run(
        "feb",
        SLOT + timedelta(days=31),
        "Succeeded",
        SLOT + timedelta(days=31, hours=1),
        promotion=decided("m2", False),
    )
    second = derive_status(first, [won, lost], wait, Outcome(), False, 1, SLOT)
    assert second.last_promotion is not None
    assert (second.last_promotion.model, second.last_promotion.promoted) == ("m2", False)
    assert second.last_promotion.challenger_bits_per_byte == 3.0
    failed = run("mar", SLOT + timedelta(days=59), "Failed", SLOT + timedelta(days=59, hours=1))
    third = derive_status(second, [won, lost, failed], wait, Outcome(), False, 1, SLOT)
    assert third.last_result == "Failed" and third.last_promotion == second.last_promotion


def test_a_suspended_schedule_has_no_next_run_and_counts_its_skips() -> None:
    status = derive_status(
        FineTuneScheduleStatus(),
        [],
        decision("skip", reason="Suspended"),
        Outcome(),
        suspended=True,
        generation=2,
        now=SLOT,
    )
    assert status.next_schedule_time is None and status.skipped_count == 1
    assert status.conditions[0].reason == "Suspended" and status.conditions[0].status == "False"
    assert status.run_count == 0


def test_invalid_status_keeps_the_history_and_clears_the_next_run() -> None:
    previous = FineTuneScheduleStatus(run_count=3, next_schedule_time="2027-01-01T02:00:00Z")
    status = invalid_status(previous, "InvalidTimeZone", "spec.timeZone: unknown", 4, "now")
    assert status.run_count == 3 and status.next_schedule_time is None
    ready = status.conditions[0]
    assert (ready.status, ready.reason, ready.message) == (
        "False",
        "InvalidTimeZone",
        "spec.timeZone: unknown",
    )


def test_events_for_a_decision() -> None:
    active = [run("s-1", SLOT - timedelta(days=31), "Running")]
    started = decision_transitions(
        decision(missed=1), Outcome(created="s-2", cancelled=["s-1"]), []
    )
    assert [(t.type, t.reason) for t in started] == [
        ("Warning", "RunMissed"),
        ("Normal", "RunReplaced"),
        ("Normal", "RunStarted"),
    ]
    assert "created s-2 for 2026-12-01T02:00:00Z" in started[2].message
    skipped = decision_transitions(decision("skip", reason="ConcurrencyForbid"), Outcome(), active)
    assert [(t.reason, "s-1 still active" in t.message) for t in skipped] == [("RunSkipped", True)]
    missed = decision_transitions(decision("miss", 1, "DeadlineExceeded"), Outcome(), [])
    assert "startingDeadlineSeconds" in missed[0].message


def test_events_for_runs_that_ended() -> None:
    previous = FineTuneScheduleStatus.model_validate(
        {"active": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}
    )
    runs = [
        run("a", SLOT, "Succeeded"),
        run("b", SLOT, "Failed", failure={"reason": "BadInput", "message": "no such dataset"}),
        run("c", SLOT, "Running"),
        run("d", SLOT, "Failed"),  # was never seen active: no Event again
    ]
    found = [(t.type, t.reason, t.message) for t in finished_transitions(previous, runs)]
    assert found == [
        ("Normal", "RunSucceeded", "a succeeded"),
        ("Warning", "RunFailed", "b failed (BadInput): no such dataset"),
    ]
