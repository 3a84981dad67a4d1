"""`kubetune_api.metric_series`: the trainer's progress lines to loss curves, downsampled."""

from __future__ import annotations

import io
import itertools
import json
import math
from typing import Any

from kubetune_api.metric_series import (
    MAX_POINTS,
    EvalPoint,
    MetricSeries,
    TrainPoint,
    downsample,
    parse_lines,
    parse_logs,
)
from kubetune_api.routes.metrics import build_answer
from kubetune_api.views import JobRecord, record_from_obj
from kubetune_crd.status import Progress
from kubetune_trainer.progress import ProgressReporter


def _line(**fields: object) -> str:
    return json.dumps(fields)


def test_reads_what_the_trainer_prints() -> None:
    """The real reporter's lines (stage lines and all) parse to one point per logging step."""
    out = io.StringIO()
    reporter = ProgressReporter(stream=out)
    reporter.stage("loading")
    reporter.stage("training", step=0, total_steps=20)
    for step in (5, 10, 15, 20):
        reporter.report(
            Progress(
                step=step,
                total_steps=20,
                loss=3.0 - step / 10,
                learning_rate=1e-3,
                tokens_per_second=1200.5,
                epoch=step / 20,
            )
        )
    reporter.stage("saving", step=20, total_steps=20, fraction=1.0)
    series = parse_lines(out.getvalue().splitlines())
    assert [p.step for p in series.train] == [5, 10, 15, 20]
    assert [p.loss for p in series.train] == [2.5, 2.0, 1.5, 1.0]
    first = series.train[0]
    assert (first.learning_rate, first.tokens_per_second, first.epoch) == (1e-3, 1200.5, 0.25)
    assert first.time is not None and first.time.endswith("Z")
    assert series.total_steps == 20
    assert series.eval == []


def test_skips_noise_and_keeps_the_later_line_of_a_step() -> None:
    lines = [
        "Some library warning: {not json",
        "",
        "[1, 2]",
        _line(event="start", step=1, loss=9.0),  # not a progress line
        _line(event="progress", step=1, loss=2.0),
        "2026-01-01T00:00:00.123456789Z " + _line(event="progress", step=2, loss=1.8),
        _line(event="progress", step=3, loss=1.7),
        _line(event="progress", step=2, loss=1.9),  # a resumed pod trains step 2 again
        _line(event="progress", step="4", loss=1.0),  # not an int step
        _line(event="progress", step=True, loss=1.0),
        _line(event="progress", step=-1, loss=1.0),
        _line(event="progress", step=5),  # no loss
        _line(event="progress", step=6, loss=True),
        _line(event="eval", step=2, loss=2.2, updatedAt="2026-01-01T00:00:01Z"),
        _line(event="eval", step=3, evalLoss=2.1),
    ]
    series = parse_lines(lines)
    assert [(p.step, p.loss) for p in series.train] == [(1, 2.0), (2, 1.9), (3, 1.7)]
    assert series.eval == [
        EvalPoint(step=2, loss=2.2, time="2026-01-01T00:00:01Z"),
        EvalPoint(step=3, loss=2.1),
    ]
    assert series.total_steps is None


def test_non_finite_numbers_are_dropped() -> None:
    """`json.dumps` writes NaN/Infinity and `json.loads` reads them: the answer cannot."""
    lines = [
        '{"event":"progress","step":1,"loss":NaN}',
        '{"event":"progress","step":2,"loss":1.5,"learningRate":Infinity,"epoch":-Infinity}',
    ]
    series = parse_lines(lines)
    assert series.train == [TrainPoint(step=2, loss=1.5)]
    json.dumps(series.model_dump(), allow_nan=False)


def test_logs_of_several_pods_later_wins_and_bad_utf8_is_no_error() -> None:
    first = (_line(event="progress", step=1, loss=2.0) + "\n").encode() + b"\xff\xfe garbage\n"
    second = (_line(event="progress", step=1, loss=1.5, totalSteps=4) + "\n").encode()
    series = parse_logs([first, second])
    assert [(p.step, p.loss) for p in series.train] == [(1, 1.5)]
    assert series.total_steps == 4


def _points(n: int) -> list[TrainPoint]:
    # a noisy decaying curve with one spike the downsampler must keep
    return [
        TrainPoint(step=i, loss=(50.0 if i == 777 else 3 * math.exp(-i / 300) + (i % 7) * 0.01))
        for i in range(1, n + 1)
    ]


def test_downsample_keeps_short_series_whole() -> None:
    points = _points(MAX_POINTS)
    assert downsample(points) == points
    assert downsample([]) == []


def test_downsample_bounds_long_series_keeping_ends_and_shape() -> None:
    points = _points(10_000)
    kept = downsample(points)
    assert len(kept) == MAX_POINTS
    assert kept[0] == points[0] and kept[-1] == points[-1]
    steps = [p.step for p in kept]
    assert steps == sorted(set(steps)), "in order, no duplicates"
    assert any(p.loss == 50.0 for p in kept), "the spike is part of the curve's shape"
    # evenly spread over the run: no gap wider than a few buckets
    assert max(b - a for a, b in itertools.pairwise(steps)) < 3 * 10_000 / MAX_POINTS


def test_downsample_tiny_limits() -> None:
    points = _points(10)
    assert downsample(points, 2) == [points[0], points[-1]]
    assert downsample(points, 3)[0] == points[0] and downsample(points, 3)[-1] == points[-1]
    assert len(downsample(points, 3)) == 3
    assert downsample(points, 0) == []


def _record(status: dict[str, Any]) -> JobRecord:
    meta = {"name": "ft-20240101-000000-abcdef", "namespace": "ns"}
    return record_from_obj({"metadata": meta, "spec": {"model": "tiny"}, "status": status})


def test_answer_of_a_long_run_is_downsampled_and_says_so() -> None:
    series = MetricSeries(train=_points(2000), total_steps=2000)
    answer = build_answer(_record({}), series)
    assert answer.job_id == "ft_20240101_000000_abcdef"
    assert len(answer.train) == MAX_POINTS and answer.downsampled is True
    assert answer.total_steps == 2000 and answer.eval == []
    short = build_answer(_record({}), MetricSeries(train=_points(10)))
    assert (len(short.train), short.downsampled) == (10, False)


def test_answer_falls_back_on_the_status() -> None:
    """No eval line: the status's eval losses at step 0 and the last step; no totalSteps in
    the log: the status's progress."""
    status = {
        "phase": "Succeeded",
        "progress": {"step": 10, "totalSteps": 10, "loss": 1.0},
        "metrics": {"evalLossBefore": 2.5, "evalLossAfter": 1.5},
    }
    answer = build_answer(_record(status), MetricSeries(train=_points(7)))
    assert answer.total_steps == 10
    assert answer.eval == [EvalPoint(step=0, loss=2.5), EvalPoint(step=7, loss=1.5)]
    logged = [EvalPoint(step=5, loss=1.9)]
    assert build_answer(_record(status), MetricSeries(eval=logged)).eval == logged
    empty = build_answer(_record({}), MetricSeries())
    assert (empty.train, empty.eval, empty.total_steps, empty.downsampled) == ([], [], None, False)
