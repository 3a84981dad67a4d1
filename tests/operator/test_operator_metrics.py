"""The operator's Prometheus metrics: the collectors fed real slot decisions, the liveness server
serving them, and the real operator's /metrics scraped after a schedule ran and one skipped."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import aiohttp
import pytest
from kubetune_crd import names
from kubetune_crd.schedule import FineTuneSchedule, FineTuneScheduleSpec, run_manifest
from kubetune_local.testing import wait_for
from kubetune_operator.health_server import HealthServer
from kubetune_operator.metrics import PHASES, OperatorMetrics
from kubetune_operator.schedule_slots import decide
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from schedule_cluster_helpers import (
    FTJS,
    GROUP,
    LONG,
    VERSION,
    Schedule,
    minute_after,
    schedule_manifest,
    sleep_until,
    slot_name,
    wait_for_second,
)
from support.operator_proc import OperatorProcess

KEY = ("team-a", "frigo")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def spec(**fields: Any) -> FineTuneScheduleSpec:
    body = {"schedule": "* * * * *", "jobTemplate": {"model": "tiny", "dataset": {"url": "d.csv"}}}
    return FineTuneScheduleSpec.model_validate({**body, **fields})


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scraped(m: OperatorMetrics) -> Samples:
    return parse(m.exposition().decode())


# ---- the collectors ----------------------------------------------------------------------------


def test_a_fresh_process_exports_every_phase_and_the_job_counter_at_zero() -> None:
    samples = scraped(OperatorMetrics())
    assert value(samples, "kubetune_finetunejobs_created_total") == 0
    for phase in PHASES:
        assert value(samples, "kubetune_finetunejob_phase_transitions_total", phase=phase) == 0
    assert not [name for name, _ in samples if name.startswith("kubetune_schedule_")]


def test_schedule_passes_count_runs_skips_and_misses_like_the_status() -> None:
    m = OperatorMetrics()
    ns, name = KEY
    # Nothing due yet: the schedule's series appear at 0.
    m.schedule_pass(
        KEY, decide(spec(), at("2026-11-30T10:00:30"), at("2026-11-30T10:00:50"), 0), None
    )
    samples = scraped(m)
    assert value(samples, "kubetune_schedule_runs_total", namespace=ns, schedule=name) == 0
    assert value(samples, "kubetune_schedule_missed_total", namespace=ns, schedule=name) == 0

    # A slot run; the same slot again finds its run existing (409): not counted twice.
    run = decide(spec(), at("2026-11-30T10:00:30"), at("2026-11-30T10:01:02"), 0)
    assert run.action == "run"
    m.schedule_pass(KEY, run, slot_name(name, at("2026-11-30T10:01:00")))
    m.schedule_pass(KEY, run, None)
    # Forbid with a run active, then suspended: skipped, by reason.
    forbid = decide(spec(), at("2026-11-30T10:01:00"), at("2026-11-30T10:02:01"), 1)
    m.schedule_pass(KEY, forbid, None)
    paused = decide(spec(suspend=True), at("2026-11-30T10:02:00"), at("2026-11-30T10:03:01"), 0)
    m.schedule_pass(KEY, paused, None)
    # Down 10:03 -> 10:06:40 with a 10 s deadline: 10:04 and 10:05 passed, 10:06 is too late.
    late = decide(
        spec(startingDeadlineSeconds=10), at("2026-11-30T10:03:00"), at("2026-11-30T10:06:40"), 0
    )
    assert (late.action, late.missed) == ("miss", 3)
    m.schedule_pass(KEY, late, None)
    # Without a deadline the latest slot runs late and only the older ones are missed.
    catch_up = decide(spec(), at("2026-11-30T10:06:00"), at("2026-11-30T10:09:05"), 0)
    m.schedule_pass(KEY, catch_up, slot_name(name, at("2026-11-30T10:09:00")))

    samples = scraped(m)
    assert value(samples, "kubetune_schedule_runs_total", namespace=ns, schedule=name) == 2
    assert value(samples, "kubetune_schedule_missed_total", namespace=ns, schedule=name) == 5
    skipped = "kubetune_schedule_skipped_total"
    for reason in ("ConcurrencyForbid", "Suspended"):
        assert value(samples, skipped, namespace=ns, schedule=name, reason=reason) == 1
    assert value(samples, skipped, namespace=ns, schedule=name, reason="Scheduled") is None
    # Another schedule and another operator keep their own series.
    m.schedule_pass(("team-b", name), run, "x")
    other = scraped(m)
    assert value(other, "kubetune_schedule_runs_total", namespace="team-b", schedule=name) == 1
    assert value(other, "kubetune_schedule_runs_total", namespace=ns, schedule=name) == 2
    fresh = scraped(OperatorMetrics())
    assert value(fresh, "kubetune_schedule_runs_total", namespace=ns, schedule=name) is None


def test_jobs_created_and_phase_changes() -> None:
    m = OperatorMetrics()
    m.job_created()
    m.job_created()
    for previous, phase in [
        (None, "Validating"),  # the CPU pre-flight runs first
        ("Validating", "Pending"),  # it passed: the training Job is being created
        ("Pending", "Pending"),  # another pending reason: no phase change
        ("Pending", "Running"),
        ("Running", "Running"),  # progress
        ("Running", None),  # a write without a phase
        ("Running", "Succeeded"),
        (None, "Failed"),  # a spec the models refuse
    ]:
        m.phase_written(previous, phase)
    samples = scraped(m)
    assert value(samples, "kubetune_finetunejobs_created_total") == 2
    counted = {
        phase: value(samples, "kubetune_finetunejob_phase_transitions_total", phase=phase)
        for phase in PHASES
    }
    assert counted == {
        "Pending": 1,
        "Validating": 1,
        "Running": 1,
        "Succeeded": 1,
        "Failed": 1,
        "Cancelled": 0,
    }


# ---- the liveness server -------------------------------------------------------------------------


async def _serve_and_get(probe: Callable[[], dict[str, Any] | None], m: OperatorMetrics) -> Any:
    server = HealthServer(probe, m)
    port = await server.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as health:
                health_answer = (health.status, await health.json())
            async with http.get(f"{base}/metrics") as metrics:
                metrics_answer = (metrics.status, metrics.content_type, await metrics.text())
            async with http.get(f"{base}/other") as other:
                other_status = other.status
    finally:
        await server.stop()
    return health_answer, metrics_answer, other_status


def test_the_liveness_server_answers_healthz_and_metrics_on_one_port() -> None:
    m = OperatorMetrics()
    m.job_created()
    health, metrics, other = asyncio.run(_serve_and_get(lambda: None, m))
    assert health == (503, {"controller": "not started"})
    status, content_type, text = metrics
    assert (status, content_type) == (200, "text/plain")
    assert value(parse(text), "kubetune_finetunejobs_created_total") == 1
    assert other == 404
    probe = {"finetunejobs": 3, "jobsCreated": 1}
    health, _, _ = asyncio.run(_serve_and_get(lambda: probe, m))
    assert health == (200, {"controller": probe})


# ---- the real operator ---------------------------------------------------------------------------


def _scrape(op: OperatorProcess) -> tuple[str, Samples]:
    url = f"http://127.0.0.1:{op.liveness_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.headers["Content-Type"], parse(resp.read().decode())


def _phase(run: dict[str, Any]) -> str | None:
    return (run.get("status") or {}).get("phase")


@pytest.mark.cluster
def test_the_operator_serves_schedule_and_job_metrics(
    schedule_operator: OperatorProcess,
    ftj_namespace: str,
    schedule: Callable[[str], Schedule],
) -> None:
    ns, op = ftj_namespace, schedule_operator
    ran, forbid = schedule("ran"), schedule("forbid")
    slot = minute_after(wait_for_second(25, 50))  # 10 to 35 s ahead
    ran.create(schedule_manifest("ran"))
    # Forbid's run-now (the API's manifest): active at the slot, so the slot is skipped.
    obj = forbid.create(schedule_manifest("forbid", LONG))
    manual = run_manifest(FineTuneSchedule.from_k8s(obj), names.utc_now(), manual=True)
    forbid.custom.create_namespaced_custom_object(GROUP, VERSION, ns, FTJS, manual)
    wait_for(lambda: _phase(forbid.runs()[0]) == "Running", 20, "forbid's run-now to run")
    _, before = _scrape(op)
    for name in ("ran", "forbid"):  # the run-now is not the operator's run
        assert value(before, "kubetune_schedule_runs_total", namespace=ns, schedule=name) == 0
    assert value(before, "kubetune_finetunejobs_created_total") == 1

    sleep_until(slot)
    wait_for(lambda: ran.run_names() == [slot_name("ran", slot)], 30, "ran's slot run")
    wait_for(lambda: _phase(ran.runs()[0]) == "Succeeded", 30, "ran's run to succeed")
    wait_for(lambda: forbid.status().get("skippedCount") == 1, 20, "forbid to skip the slot")
    assert len(forbid.runs()) == 1

    def counted() -> Samples | None:
        _, samples = _scrape(op)
        done = value(samples, "kubetune_finetunejob_phase_transitions_total", phase="Succeeded")
        return samples if done == 1 else None

    samples = wait_for(counted, 15, "the metrics of the slot")
    content_type, _ = _scrape(op)
    assert content_type == CONTENT_TYPE_LATEST  # Prometheus's text format
    runs, skipped = "kubetune_schedule_runs_total", "kubetune_schedule_skipped_total"
    assert value(samples, runs, namespace=ns, schedule="ran") == 1
    assert value(samples, runs, namespace=ns, schedule="forbid") == 0
    assert value(samples, skipped, namespace=ns, schedule="forbid", reason="ConcurrencyForbid") == 1
    assert not [k for k in samples if k[0] == skipped and ("schedule", "ran") in k[1]]
    for name in ("ran", "forbid"):
        assert value(samples, "kubetune_schedule_missed_total", namespace=ns, schedule=name) == 0
    assert value(samples, "kubetune_finetunejobs_created_total") == 2
    transitions = {
        phase: value(samples, "kubetune_finetunejob_phase_transitions_total", phase=phase)
        for phase in PHASES
    }
    assert transitions["Pending"] == 2 and transitions["Succeeded"] == 1, transitions
    assert transitions["Running"] in (1, 2), transitions  # the quick run may skip Running
    assert transitions["Failed"] == 0 and transitions["Cancelled"] == 0, transitions
    assert op.health()["controller"]["jobsCreated"] == 2  # /healthz on the same port
