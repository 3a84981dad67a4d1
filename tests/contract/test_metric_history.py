"""`kubetune_crd.metric_history`: merging, thinning and the stored form of a job's history."""

from __future__ import annotations

import itertools
import json
import math

from kubetune_crd.metric_history import (
    MAX_EVAL_POINTS,
    MAX_RECORD_BYTES,
    MAX_TRAIN_POINTS,
    MetricHistory,
    MetricPoint,
    Point,
    ProgressReport,
    thin,
)
from kubetune_crd.status import Progress
from kubetune_operator.progress_server import points_of


def _curve(n: int, start: int = 1) -> list[MetricPoint]:
    """A noisy decaying loss with a spike at step 777 and its lowest point at step n // 2."""
    out = []
    for i in range(start, start + n):
        loss = 3 * math.exp(-i / 300) + (i % 7) * 0.01 + 0.5
        if i == 777:
            loss = 50.0
        if i == (start + n) // 2:
            loss = 0.01
        out.append(MetricPoint(step=i, loss=loss, learning_rate=1e-4, tokens_per_second=900.0))
    return out


def test_short_run_keeps_every_point_with_its_fields() -> None:
    history = MetricHistory()
    history.add(_curve(50), total_steps=50)
    history.add([MetricPoint(kind="eval", step=25, loss=2.5, updated_at="2026-01-01T00:00:00Z")])
    assert [p.step for p in history.train] == list(range(1, 51))
    assert history.train[0].learning_rate == 1e-4 and history.train[0].tokens_per_second == 900
    assert history.eval == [Point(step=25, loss=2.5, time="2026-01-01T00:00:00Z")]
    assert (history.total_steps, history.thinned) == (50, False)


def test_same_step_is_replaced_and_out_of_order_points_are_placed() -> None:
    history = MetricHistory()
    history.add([MetricPoint(step=s, loss=float(s)) for s in (1, 2, 3, 5)])
    history.add([MetricPoint(step=2, loss=9.0), MetricPoint(step=4, loss=4.0)])
    assert [(p.step, p.loss) for p in history.train] == [(1, 1), (2, 9), (3, 3), (4, 4), (5, 5)]


def test_non_finite_losses_are_dropped() -> None:
    history = MetricHistory()
    history.add([MetricPoint(step=1, loss=math.nan), MetricPoint(step=2, loss=math.inf)])
    history.add([MetricPoint(step=3, loss=1.0, learning_rate=math.nan)])
    assert history.train == [Point(step=3, loss=1.0)]
    json.loads(history.encode())  # still valid JSON (no NaN)


def test_thin_keeps_first_last_min_max_and_respects_the_target() -> None:
    points = [Point(step=p.step, loss=p.loss) for p in _curve(10_000)]
    kept = thin(points, 500)
    assert len(kept) <= 500
    assert kept[0] == points[0] and kept[-1] == points[-1]
    steps = [p.step for p in kept]
    assert steps == sorted(set(steps)), "in order, no duplicates"
    assert min(p.loss for p in kept) == min(p.loss for p in points) == 0.01
    assert max(p.loss for p in kept) == 50.0, "the spike is part of the curve's shape"
    # even in steps: no gap wider than about two buckets
    assert max(b - a for a, b in itertools.pairwise(steps)) <= 2 * 10_000 / 249 + 1
    assert thin(points[:10], 500) == points[:10]


def test_a_long_run_stays_bounded_and_keeps_its_shape() -> None:
    """60 000 steps reported in batches, as the trainer sends them."""
    history = MetricHistory()
    steps = 60_000
    curve = _curve(steps)
    for start in range(0, steps, 200):
        history.add(curve[start : start + 200], total_steps=steps)
        assert len(history.train) <= MAX_TRAIN_POINTS
    history.add(MetricPoint(kind="eval", step=s, loss=1.0 + 1 / s) for s in range(1, steps, 50))
    assert len(history.eval) <= MAX_EVAL_POINTS and history.thinned
    assert history.train[0].step == 1 and history.train[-1].step == steps
    assert min(p.loss for p in history.train) == 0.01
    assert any(p.loss == 50.0 for p in history.train)
    # the late part is not denser than the early part by more than the refill since thinning
    early = sum(1 for p in history.train if p.step <= steps // 2)
    assert early >= len(history.train) // 5
    text = history.encode()
    assert len(text.encode()) <= MAX_RECORD_BYTES
    back = MetricHistory.decode(text)
    assert [p.step for p in back.train] == [p.step for p in history.train]
    assert back.total_steps == steps and back.thinned is True
    assert len(back.eval) == len(history.eval)


def test_eval_points_survive_the_byte_cap_before_train_points() -> None:
    history = MetricHistory()
    long_time = "2026-01-01T00:00:00.123456789+00:00:" + "x" * 27  # 64 characters
    history.add(
        MetricPoint(step=i, loss=1 / i, learning_rate=1 / i, epoch=i / 7, updated_at=long_time)
        for i in range(1, MAX_TRAIN_POINTS + 1)
    )
    history.add(
        MetricPoint(kind="eval", step=i, loss=1 / i, updated_at=long_time)
        for i in range(1, MAX_EVAL_POINTS + 1)
    )
    before = len(history.eval)
    text = history.encode()
    assert len(text.encode()) <= MAX_RECORD_BYTES
    assert len(history.eval) == before == MAX_EVAL_POINTS


def test_stored_form_round_trips_and_bad_records_are_ignored() -> None:
    history = MetricHistory()
    history.add(_curve(5), total_steps=10)
    history.add(
        [MetricPoint(kind="eval", step=0, loss=2.0), MetricPoint(kind="eval", step=5, loss=1.0)]
    )
    back = MetricHistory.decode(history.encode())
    assert [(p.step, p.loss, p.learning_rate) for p in back.train] == [
        (p.step, float(f"{p.loss:.6g}"), 1e-4) for p in history.train
    ]
    assert [(p.step, p.loss) for p in back.eval] == [(0, 2.0), (5, 1.0)]
    for bad in (None, "", "not json", "[1]", '{"version": 99, "train": [[1, 2.0]]}'):
        assert MetricHistory.decode(bad) == MetricHistory()
    edited = json.dumps(
        {
            "version": 1,
            "totalSteps": True,
            "train": [[1, 2.0], ["2", 1.0], [3], [-1, 1.0], [4, "x"], [5, 1.5, "lr"], "row"],
            "eval": [[2, 1.0, 7]],
        }
    )
    out = MetricHistory.decode(edited)
    assert [(p.step, p.loss, p.learning_rate) for p in out.train] == [
        (1, 2.0, None),
        (5, 1.5, None),
    ]
    assert out.eval == [Point(step=2, loss=1.0)] and out.total_steps is None


def test_a_report_without_points_is_one_train_point() -> None:
    """An older trainer posts bare Progress: its step and loss still make the history."""
    bare = ProgressReport.model_validate({"step": 7, "loss": 1.25, "learningRate": 0.001})
    assert bare.points is None
    assert points_of(bare, bare.progress()) == [MetricPoint(step=7, loss=1.25, learning_rate=0.001)]
    assert points_of(ProgressReport(step=0, loss=2.0), Progress(step=0, loss=2.0)) == []
    full = ProgressReport.model_validate(
        {"step": 7, "loss": 1.0, "points": [{"kind": "eval", "step": 7, "loss": 0.9}], "x": 1}
    )
    assert points_of(full, full.progress()) == [MetricPoint(kind="eval", step=7, loss=0.9)]
    assert "points" not in full.progress().to_k8s()
