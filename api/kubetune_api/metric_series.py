"""A job's loss curves: from its stored metric history, or the trainer's stdout; downsample.

The stored history (`kubetune_crd.metric_history`, kept by the operator) is the source;
`series_of_history` turns it into the answer's points. Jobs without one (run before it
existed, or with the progress endpoint off) fall back to the pods' logs, parsed here:

The trainer prints one JSON line per logging step (`kubetune_trainer.progress`): `event`
`"progress"` with `kubetune_crd.status.Progress`'s camelCase fields (`step`, `loss`,
`learningRate`, `tokensPerSecond`, `epoch`, `totalSteps`, `updatedAt`). Lines with `event`
`"eval"` (`step`, `loss` or `evalLoss`, `updatedAt`) make the eval series. Everything else in
the log (other events, library warnings, a timestamp prefix) is skipped, never an error.

Pure functions (no I/O), so the route stays thin and the rules are unit-tested:
- the same step seen twice keeps the later line (a resumed pod trains those steps again);
- non-finite numbers are dropped (JSON has no NaN: the answer must stay serialisable);
- each series keeps at most `MAX_POINTS` points, chosen by largest-triangle-three-buckets
  (the first and last point always, and the points that shape the curve).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from kubetune_crd.metric_history import MetricHistory
from pydantic import BaseModel, Field

MAX_POINTS = 500
"""Points per series in an answer, at most."""


class TrainPoint(BaseModel):
    """One logging step of training."""

    step: int = Field(description="Optimizer steps done.")
    loss: float = Field(description="Mean training loss over the logging window.")
    learning_rate: float | None = None
    tokens_per_second: float | None = Field(default=None, description="Real (non-pad) tokens/s.")
    epoch: float | None = Field(default=None, description="Fractional epoch.")
    time: str | None = Field(default=None, description="When the trainer logged it (RFC 3339).")


class EvalPoint(BaseModel):
    """One evaluation on the held-out rows."""

    step: int = Field(description="Optimizer steps done when evaluated.")
    loss: float = Field(description="Held-out loss.")
    time: str | None = Field(default=None, description="When the trainer logged it (RFC 3339).")


class MetricSeries(BaseModel):
    """What one job's log holds, before downsampling."""

    train: list[TrainPoint] = Field(default_factory=list)
    eval: list[EvalPoint] = Field(default_factory=list)
    total_steps: int | None = None


def series_of_history(history: MetricHistory) -> MetricSeries:
    """The series of a stored metric history (the operator's `<job>-metrics` ConfigMap)."""
    return MetricSeries(
        train=[
            TrainPoint(
                step=p.step,
                loss=p.loss,
                learning_rate=p.learning_rate,
                tokens_per_second=p.tokens_per_second,
                epoch=p.epoch,
                time=p.time,
            )
            for p in history.train
        ],
        eval=[EvalPoint(step=p.step, loss=p.loss, time=p.time) for p in history.eval],
        total_steps=history.total_steps,
    )


def _number(value: Any) -> float | None:
    """A finite JSON number (booleans are not numbers here), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _step(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _time(value: Any) -> str | None:
    return value[:64] if isinstance(value, str) else None


def _json_object(line: str) -> dict[str, Any] | None:
    """The JSON object on a log line, if any (after an optional timestamp prefix)."""
    text = line.strip()
    if not text.startswith("{"):
        _, _, text = text.partition(" ")
        text = text.lstrip()
        if not text.startswith("{"):
            return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_lines(lines: Iterable[str]) -> MetricSeries:
    """The train and eval series of a log, sorted by step, one point per step."""
    train: dict[int, TrainPoint] = {}
    evals: dict[int, EvalPoint] = {}
    total: int | None = None
    for line in lines:
        obj = _json_object(line)
        if obj is None:
            continue
        event = obj.get("event")
        if event not in ("progress", "stage", "eval"):
            continue
        total = _step(obj.get("totalSteps")) or total
        step = _step(obj.get("step"))
        if step is None or event == "stage":  # a stage line repeats the last step's loss
            continue
        when = _time(obj.get("updatedAt"))
        if event == "progress":
            loss = _number(obj.get("loss"))
            if loss is not None:
                train[step] = TrainPoint(
                    step=step,
                    loss=loss,
                    learning_rate=_number(obj.get("learningRate")),
                    tokens_per_second=_number(obj.get("tokensPerSecond")),
                    epoch=_number(obj.get("epoch")),
                    time=when,
                )
        else:
            loss = _number(obj.get("loss", obj.get("evalLoss")))
            if loss is not None:
                evals[step] = EvalPoint(step=step, loss=loss, time=when)
    return MetricSeries(
        train=[train[s] for s in sorted(train)],
        eval=[evals[s] for s in sorted(evals)],
        total_steps=total,
    )


def parse_logs(logs: Iterable[bytes]) -> MetricSeries:
    """The series of several logs read in order (oldest pod first: later lines win)."""

    def lines() -> Iterable[str]:
        for data in logs:
            yield from data.decode("utf-8", errors="replace").splitlines()

    return parse_lines(lines())


P = TypeVar("P", TrainPoint, EvalPoint)


def downsample(points: Sequence[P], limit: int = MAX_POINTS) -> list[P]:
    """At most `limit` of `points` (sorted by step): largest-triangle-three-buckets, which
    keeps the first and last point and, per bucket, the one that best keeps the shape."""
    n = len(points)
    if n <= limit or limit < 3:
        return list(points) if n <= limit else [points[0], points[-1]][: max(limit, 0)]
    out = [points[0]]
    every = (n - 2) / (limit - 2)
    chosen = 0
    for i in range(limit - 2):
        start = int(i * every) + 1
        end = min(int((i + 1) * every) + 1, n - 1)
        nxt_start, nxt_end = end, min(int((i + 2) * every) + 1, n)
        nxt = points[nxt_start:nxt_end] or [points[-1]]
        avg_x = sum(p.step for p in nxt) / len(nxt)
        avg_y = sum(p.loss for p in nxt) / len(nxt)
        a = points[chosen]
        best, best_area = start, -1.0
        for j in range(start, max(end, start + 1)):
            p = points[j]
            area = abs((a.step - avg_x) * (p.loss - a.loss) - (a.step - p.step) * (avg_y - a.loss))
            if area > best_area:
                best, best_area = j, area
        out.append(points[best])
        chosen = best
    out.append(points[-1])
    return out
