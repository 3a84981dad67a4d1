"""A FineTuneJob's metric history: every point the trainer reports, kept per job and bounded.

Why here (the contract package): three processes share it. The trainer sends its points
with each progress report (`ProgressReport.points`), the operator merges them into the
ConfigMap `names.metrics_configmap_name(job)` (owned by the FineTuneJob, so it outlives the
pods and goes with the job), and the API reads that ConfigMap for
`GET /api/finetune/metrics/{job_id}`, the OpenAI events and the CLI.

Bounded whatever the run length: each series keeps every point up to its cap
(`MAX_TRAIN_POINTS`, `MAX_EVAL_POINTS`: eval points have their own budget, so a long run's
train points never push them out); past it the series is thinned to half its cap by step
buckets of equal width, keeping in each bucket the lowest- and highest-loss point, plus
the first and the last point (`thin`). So the curve keeps its shape, its minimum and its
spikes, its density stays even over the steps, and the stored JSON stays under
`MAX_RECORD_BYTES`, far below the 1 MiB object limit. Pure code, no I/O.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from kubetune_crd.base import StatusModel
from kubetune_crd.status import Progress

RECORD_VERSION = 1
MAX_TRAIN_POINTS = 2000
"""Train points stored per job, at most (thinned to half when exceeded)."""
MAX_EVAL_POINTS = 500
"""Eval points stored per job, at most (a budget of their own)."""
MAX_RECORD_BYTES = 256 * 1024
"""The stored JSON's size, at most (a ConfigMap holds 1 MiB)."""
MAX_REPORT_POINTS = 200
"""Points in one progress report, at most (the trainer sends more in later reports)."""


class MetricPoint(StatusModel):
    """One logged point: a training step (`train`) or a held-out evaluation (`eval`)."""

    kind: Literal["train", "eval"] = "train"
    step: int = Field(ge=0, description="Optimizer steps done.")
    loss: float = Field(description="Train loss of the logging window, or the held-out loss.")
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    epoch: float | None = Field(default=None, ge=0.0)
    updated_at: str | None = Field(default=None, max_length=64)


class ProgressReport(Progress):
    """What the trainer POSTs: its latest `Progress` plus the points not yet delivered."""

    points: list[MetricPoint] | None = Field(
        default=None,
        max_length=MAX_REPORT_POINTS,
        description="Points logged since the last accepted report, oldest first.",
    )

    def progress(self) -> Progress:
        """The status part (without the points)."""
        return Progress.model_validate(self.model_dump(exclude={"points"}))


@dataclass(frozen=True, slots=True)
class Point:
    """A stored point (train points use every field, eval points step, loss, time)."""

    step: int
    loss: float
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    epoch: float | None = None
    time: str | None = None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _short(value: float | None) -> float | None:
    """Six significant digits: what a curve needs, a third of repr's bytes."""
    return None if value is None else float(f"{value:.6g}")


def point_of(metric: MetricPoint) -> Point | None:
    """The stored form of a reported point; None when its loss is not a finite number."""
    loss = _finite(metric.loss)
    if loss is None:
        return None
    return Point(
        step=metric.step,
        loss=loss,
        learning_rate=_finite(metric.learning_rate),
        tokens_per_second=_finite(metric.tokens_per_second),
        epoch=_finite(metric.epoch),
        time=metric.updated_at,
    )


def thin(points: Sequence[Point], target: int) -> list[Point]:
    """At most `target` (>= 4) of `points` (sorted by step, unique steps): the first and the
    last, and per step bucket of equal width the lowest- and the highest-loss point."""
    if len(points) <= target:
        return list(points)
    first, last = points[0], points[-1]
    buckets = max((target - 2) // 2, 1)
    span = last.step - first.step or 1
    low: list[Point | None] = [None] * buckets
    high: list[Point | None] = [None] * buckets
    for p in points[1:-1]:
        b = min(buckets - 1, (p.step - first.step) * buckets // span)
        lo, hi = low[b], high[b]
        if lo is None or p.loss < lo.loss:
            low[b] = p
        if hi is None or p.loss > hi.loss:
            high[b] = p
    kept = {p.step: p for p in (*low, *high) if p is not None}
    return [first, *(kept[s] for s in sorted(kept)), last]


def _merge(series: list[Point], point: Point) -> None:
    """Put `point` in its place by step; a point of the same step is replaced (a resumed
    pod trains those steps again, a re-sent report repeats them)."""
    if not series or point.step > series[-1].step:
        series.append(point)
        return
    i = bisect_left([p.step for p in series], point.step)
    if i < len(series) and series[i].step == point.step:
        series[i] = point
    else:
        series.insert(i, point)


@dataclass
class MetricHistory:
    """One job's stored series."""

    train: list[Point] = field(default_factory=list)
    eval: list[Point] = field(default_factory=list)
    total_steps: int | None = None
    thinned: bool = False

    def add(self, points: Iterable[MetricPoint], total_steps: int | None = None) -> None:
        """Merge reported points, then keep each series within its cap."""
        if total_steps is not None:
            self.total_steps = total_steps
        for metric in points:
            point = point_of(metric)
            if point is not None:
                _merge(self.eval if metric.kind == "eval" else self.train, point)
        if len(self.train) > MAX_TRAIN_POINTS:
            self.train, self.thinned = thin(self.train, MAX_TRAIN_POINTS // 2), True
        if len(self.eval) > MAX_EVAL_POINTS:
            self.eval, self.thinned = thin(self.eval, MAX_EVAL_POINTS // 2), True

    def copy(self) -> MetricHistory:
        return MetricHistory(list(self.train), list(self.eval), self.total_steps, self.thinned)

    # --- the stored form -----------------------------------------------------------------

    def encode(self) -> str:
        """Compact JSON (rows, not objects) under `MAX_RECORD_BYTES`; train points are
        thinned further first should it not fit (eval points are kept preferentially)."""
        while True:
            text = json.dumps(
                {
                    "version": RECORD_VERSION,
                    "totalSteps": self.total_steps,
                    "thinned": self.thinned,
                    "train": [_train_row(p) for p in self.train],
                    "eval": [_trimmed([p.step, _short(p.loss), p.time]) for p in self.eval],
                },
                separators=(",", ":"),
                allow_nan=False,
            )
            if len(text.encode()) <= MAX_RECORD_BYTES:
                return text
            if len(self.train) > 8:
                self.train = thin(self.train, len(self.train) // 2)
            elif len(self.eval) > 8:
                self.eval = thin(self.eval, len(self.eval) // 2)
            else:  # pragma: no cover - eight points of at most ~250 bytes each always fit
                raise ValueError("metric history does not fit its byte cap")
            self.thinned = True

    @classmethod
    def decode(cls, text: str | None) -> MetricHistory:
        """The history in a stored record; rows that are not well-formed are skipped
        (the ConfigMap is user-editable: never trusted to be what the operator wrote)."""
        if not text or len(text) > 4 * MAX_RECORD_BYTES:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            return cls()
        out = cls(thinned=data.get("thinned") is True)
        total = data.get("totalSteps")
        if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
            out.total_steps = total
        for row in _rows(data.get("train"), MAX_TRAIN_POINTS):
            point = _point_of_row(row, train=True)
            if point is not None:
                _merge(out.train, point)
        for row in _rows(data.get("eval"), MAX_EVAL_POINTS):
            point = _point_of_row(row, train=False)
            if point is not None:
                _merge(out.eval, point)
        return out


def _train_row(p: Point) -> list[Any]:
    row: list[Any] = [
        p.step,
        _short(p.loss),
        _short(p.learning_rate),
        _short(p.tokens_per_second),
        _short(p.epoch),
        p.time,
    ]
    return _trimmed(row)


def _trimmed(row: list[Any]) -> list[Any]:
    while row and row[-1] is None:  # trailing nulls cost bytes
        row.pop()
    return row


def _rows(value: Any, cap: int) -> list[Any]:
    return value[: 2 * cap] if isinstance(value, list) else []


def _point_of_row(row: Any, *, train: bool) -> Point | None:
    if not isinstance(row, list) or len(row) < 2:
        return None
    step, loss = row[0], _finite(row[1])
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or loss is None:
        return None
    cells = list(row[2:6]) + [None] * 4
    if not train:
        time = cells[0]
        return Point(step, loss, time=time[:64] if isinstance(time, str) else None)
    time = cells[3]
    return Point(
        step,
        loss,
        learning_rate=_finite(cells[0]),
        tokens_per_second=_finite(cells[1]),
        epoch=_finite(cells[2]),
        time=time[:64] if isinstance(time, str) else None,
    )
