"""FineTuneSchedules against the real local cluster: the operator subprocess runs every-minute
schedules with the stand-in trainer (tests/support/fake_trainer.py) on wall-clock minutes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubetune_local.cluster import LocalCluster
from kubetune_local.testing import wait_for
from schedule_cluster_helpers import (
    LONG,
    QUICK,
    Schedule,
    minute_after,
    schedule_manifest,
    sleep_until,
    slot_name,
    wait_for_second,
)
from support.operator_proc import OperatorProcess

pytestmark = pytest.mark.cluster


def _phase(run: dict[str, Any]) -> str | None:
    return (run.get("status") or {}).get("phase")


def _runs_named(s: Schedule, names: list[str]) -> list[dict[str, Any]] | None:
    runs = s.runs()
    return runs if [r["metadata"]["name"] for r in runs] == names else None


@pytest.mark.slow
def test_every_minute_schedules_run_once_per_slot_under_their_policies(
    cluster: LocalCluster,
    schedule_operator: OperatorProcess,
    ftj_namespace: str,
    schedule: Callable[[str], Schedule],
) -> None:
    every, forbid, replace = schedule("every"), schedule("forbid"), schedule("replace")
    paused, badinput = schedule("paused"), schedule("badinput")
    refused = {
        "badzone": ({"timeZone": "Mars/Olympus_Mons"}, QUICK, "InvalidTimeZone"),
        "badcron": ({"schedule": "61 * * * *"}, QUICK, "InvalidSchedule"),
        "badtemplate": ({}, "ftp://data/x_{{ .Year }}.csv", "InvalidTemplate"),
    }
    start = wait_for_second(38, 46)
    slot1 = minute_after(start)
    slot2 = slot1 + timedelta(minutes=1)
    model_name = "every-{{ .Hour }}{{ .Minute }}"
    every.create(
        schedule_manifest(
            "every",
            concurrencyPolicy="Allow",
            successfulJobsHistoryLimit=1,
            jobTemplate={
                "output": {"modelName": model_name, "pvc": {"claimName": "kubetune-models"}}
            },
        )
    )
    forbid.create(schedule_manifest("forbid", LONG))
    replace.create(schedule_manifest("replace", LONG, concurrencyPolicy="Replace"))
    paused.create(schedule_manifest("paused", LONG, concurrencyPolicy="Allow"))
    badinput.create(
        schedule_manifest(
            "badinput", "data/fake_exit-42_m-{{ .Month }}.csv", failedJobsHistoryLimit=5
        )
    )
    for name, (fields, url, _) in refused.items():
        schedule(name).create(schedule_manifest(name, url, **fields))

    # Schedules the operator refuses: Ready=False with the reason, a Warning, nothing created.
    for name, (_, _, reason) in refused.items():
        s = schedule(name)
        ready = wait_for(lambda s=s: s.condition() or None, 15, f"{name}'s Ready condition")
        assert (ready["status"], ready["reason"]) == ("False", reason), ready
        wait_for(
            lambda s=s, r=reason: ("Warning", r) in [(t, x) for t, x, _ in s.events()],
            10,
            f"{name}'s {reason} Warning (posted after the status is written)",
        )
    assert every.status()["nextScheduleTime"] == f"{slot1:%Y-%m-%dT%H:%M:%SZ}"

    # Slot 1: one run for each valid schedule, named after the slot.
    for s in (every, forbid, replace, paused, badinput):
        wait_for(lambda s=s: _runs_named(s, [slot_name(s.name, slot1)]), 40, f"{s.name} slot 1")
    bad_run = badinput.runs()[0]
    assert bad_run["spec"]["dataset"]["url"] == f"data/fake_exit-42_m-{slot1:%m}.csv"
    assert bad_run["metadata"]["ownerReferences"][0]["kind"] == "FineTuneSchedule"
    assert bad_run["metadata"]["labels"]["kubetune.io/schedule"] == "badinput"
    wait_for(lambda: _phase(every.runs()[0]) == "Succeeded", 40, "every's first run to succeed")
    paused.patch_spec(suspend=True)

    # Slot 2.
    sleep_until(slot2)
    second = [slot_name("every", slot2)]
    wait_for(lambda: _runs_named(every, second), 60, "every's slot 2 run, slot 1 pruned")
    wait_for(lambda: _phase(every.runs()[0]) == "Succeeded", 40, "every's second run")
    both = [slot_name("replace", slot1), slot_name("replace", slot2)]
    replaced = wait_for(lambda: _runs_named(replace, both), 30, "replace's second run")
    wait_for(lambda: _phase(replace.runs()[0]) == "Cancelled", 40, "replace's first run cancelled")
    wait_for(lambda: forbid.status().get("skippedCount") == 1, 20, "forbid to skip slot 2")
    wait_for(lambda: paused.status().get("skippedCount") == 1, 20, "paused to skip slot 2")
    bad_both = [slot_name("badinput", slot1), slot_name("badinput", slot2)]
    wait_for(lambda: _runs_named(badinput, bad_both), 30, "badinput's next slot to run")

    # every: one run per slot, the older pruned by the history limit, both models kept
    status = every.status()
    assert status["runCount"] == 2 and status["lastResult"] == "Succeeded"
    assert status["lastSuccessfulTime"] and status["lastRunName"] == second[0]
    models = cluster.pv_root / ftj_namespace / "kubetune-models" / "models"
    for slot in (slot1, slot2):
        assert (models / f"every-{slot:%H%M}" / "adapter_model.safetensors").is_file()
    reasons = every.reasons()
    assert reasons.count("RunStarted") == 2 and "RunDeleted" in reasons

    # forbid: the slot-1 run goes on, slot 2 was skipped and nothing else created
    assert forbid.run_names() == [slot_name("forbid", slot1)]
    assert _phase(forbid.runs()[0]) in (None, "Pending", "Running")
    assert [a["name"] for a in forbid.status()["active"]] == [slot_name("forbid", slot1)]
    assert "RunSkipped" in forbid.reasons()

    # replace: the first run was cancelled (record kept), the second started
    first = replace.runs()[0]
    assert first["spec"]["cancel"] is True and len(replaced) == 2
    assert "RunReplaced" in replace.reasons()

    # paused: no new run; the active one was not stopped
    assert paused.run_names() == [slot_name("paused", slot1)]
    assert _phase(paused.runs()[0]) in (None, "Pending", "Running")
    assert paused.condition()["reason"] == "Suspended"
    assert "nextScheduleTime" not in paused.status()

    # badinput: the first run failed as BadInput, the schedule went on; no retries between
    failed = wait_for(
        lambda: badinput.runs()[0] if _phase(badinput.runs()[0]) == "Failed" else None,
        30,
        "badinput's first run to fail",
    )
    assert failed["status"]["failure"]["reason"] == "BadInput"
    assert failed["status"]["attempts"] == 1
    wait_for(lambda: badinput.status().get("lastResult") == "Failed", 30, "lastResult Failed")
    failures = [m for t, r, m in badinput.events() if (t, r) == ("Warning", "RunFailed")]
    assert failures and "(BadInput)" in failures[0], badinput.events()

    for name in refused:
        assert schedule(name).runs() == [], name
        assert schedule(name).status().get("runCount", 0) == 0


@pytest.mark.slow
def test_operator_down_across_a_slot_runs_it_late_once_or_counts_it_missed(
    cluster: LocalCluster,
    schedule_operator: OperatorProcess,
    schedule: Callable[[str], Schedule],
) -> None:
    late, expired = schedule("late"), schedule("expired")
    start = wait_for_second(30, 45)
    slot = minute_after(start)
    late.create(schedule_manifest("late", startingDeadlineSeconds=3600))
    expired.create(schedule_manifest("expired", startingDeadlineSeconds=5))
    for s in (late, expired):
        wait_for(lambda s=s: s.status().get("nextScheduleTime"), 10, f"{s.name} seen")
    schedule_operator.kill()  # down across the slot boundary
    assert datetime.now(slot.tzinfo) < slot, "the operator was not down before the slot"
    restart_at = slot + timedelta(seconds=12)
    sleep_until(restart_at)
    assert late.runs() == [] and expired.runs() == []
    schedule_operator.restart()

    run = wait_for(lambda: _runs_named(late, [slot_name("late", slot)]), 20, "the late run")[0]
    created = datetime.fromisoformat(run["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert created >= restart_at  # it ran late, after the restart
    wait_for(lambda: expired.status().get("missedCount") == 1, 20, "the expired slot missed")
    assert expired.runs() == []
    assert "RunMissed" in expired.reasons()
    assert late.status().get("missedCount", 0) == 0 and late.status()["runCount"] == 1

    # Another restart before the next slot: the slot is not run (or counted) twice.
    schedule_operator.restart()
    sleep_until(
        min(datetime.now(created.tzinfo) + timedelta(seconds=6), slot + timedelta(seconds=50))
    )
    assert late.run_names() == [slot_name("late", slot)]
    assert late.status()["runCount"] == 1
    assert expired.runs() == [] and expired.status()["missedCount"] == 1


def test_the_apiserver_refuses_what_the_schema_can_express(
    cluster: LocalCluster,
    crd: None,
    ftj_namespace: str,
    schedule: Callable[[str], Schedule],
) -> None:
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "cron": (schedule_manifest("a", schedule="* * * *"), "spec.schedule"),
        "placeholder": (schedule_manifest("b", "data/x_{{ .Yaer }}.csv"), "url"),
        "template": (
            schedule_manifest("c", jobTemplate={"hyperparameters": {"epochs": 99}}),
            "epochs",
        ),
        "policy": (schedule_manifest("d", concurrencyPolicy="Sometimes"), "concurrencyPolicy"),
        "name": (schedule_manifest("x" * 34), "metadata.name"),
    }
    s = schedule("any")
    for case, (body, field) in cases.items():
        with pytest.raises(client.ApiException) as info:
            s.create(body)
        assert info.value.status == 422, case
        assert field in str(info.value.body), (case, info.value.body)
    listed = s.custom.list_namespaced_custom_object(
        "kubetune.io", "v1alpha1", ftj_namespace, "finetuneschedules"
    )
    assert listed["items"] == []
