"""A real fine-tune's loss curve on its job page: the real operator, API and `kubetune-trainer`
on the offline tiny model (a short run), then `GET /api/finetune/metrics` and the SVG chart
of `/ui/jobs/{job_id}` in headless Chromium."""

from __future__ import annotations

from typing import Any

import pytest
from e2e.stack import E2EStack, short_job

from console.conftest import (
    BADGE,
    EVAL_DOTS,
    POLYLINE_PAIRS,
    TRAIN_POINTS,
    browser_errors,
    wait_js,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

STEPS = 8


@pytest.mark.timeout(480)
def test_job_page_draws_a_real_runs_loss_curve(stack: E2EStack, page: Any) -> None:
    stack.start_operator()
    api = stack.start_api()
    job = stack.start_job(short_job(max_steps=STEPS, logging_steps=1))
    page.get(f"{api.url}/ui/jobs/{job}")
    done = stack.wait_api_status(job, {"completed", "failed", "cancelled"}, 360)
    assert done["status"] == "completed", stack.diagnostics(job.replace("_", "-"))

    data = stack.http.get(f"/api/finetune/metrics/{job}").json()
    train = data["train"]
    assert [p["step"] for p in train] == list(range(1, STEPS + 1)), data
    assert data["total_steps"] == STEPS and data["downsampled"] is False
    for point in train:  # what the trainer measured at each logging step
        assert point["loss"] > 0 and point["learning_rate"] >= 0, point
        assert point["tokens_per_second"] > 0 and point["epoch"] > 0, point
        assert point["time"] and point["time"].endswith("Z"), point
    assert train[0]["learning_rate"] > train[-1]["learning_rate"]  # the schedule decays
    metrics = done["metrics"]
    # the trainer's eval points (before and after training), timed, with the status's figures
    # (the stored history keeps six significant digits: metric_history._short)
    evals = data["eval"]
    assert [(e["step"], e["loss"]) for e in evals] == [
        (0, pytest.approx(metrics["eval_loss_before"], rel=1e-5)),
        (STEPS, pytest.approx(metrics["eval_loss_after"], rel=1e-5)),
    ], evals
    assert all(e["time"] and e["time"].endswith("Z") for e in evals), evals

    wait_js(page, f"return {TRAIN_POINTS} === {STEPS}", 60)
    pairs = wait_js(page, POLYLINE_PAIRS)
    assert len(pairs) == STEPS
    xs = [float(p.split(",")[0]) for p in pairs]
    assert xs == sorted(xs) and xs[0] < xs[-1], pairs  # drawn left to right by step
    wait_js(page, f"return {BADGE} === 'completed'")
    # the eval losses before and after arrive with the final status
    assert wait_js(page, f"return {EVAL_DOTS} === 2 ? 2 : 0") == 2
    assert browser_errors(page) == []
