"""OpenAI's `fine_tuning.job.metrics` events from a job's metric history.

OpenAI lists one event of type `metrics` per logged step, `data` holding `step`,
`train_loss`, `valid_loss` (where an evaluation ran at that step) and `total_steps`. kubetune
builds them from the stored history (`kubetune_api.metric_series.MetricSeries`, the same
points `GET /api/finetune/metrics` serves): one event per step that has a train or an eval
point, the eval before training as step 0. Event ids depend on the job and the step only,
so the `after` cursor stays valid while points are added. Pure functions.
"""

from __future__ import annotations

import hashlib

from kubetune_crd.names import parse_time

from kubetune_api.metric_series import EvalPoint, MetricSeries, TrainPoint
from kubetune_api.views import JobRecord


def metrics_event_id(job_id: str, step: int) -> str:
    digest = hashlib.sha256(f"{job_id}\x00metrics\x00{step}".encode()).hexdigest()[:20]
    return f"ftevent-{digest}"


def _when(rec: JobRecord, *times: str | None) -> int:
    for value in times:
        parsed = parse_time(value) if value else None
        if parsed is not None:
            return int(parsed.timestamp())
    return int(rec.created_ts)


def _message(step: int, total: int | None, train: float | None, valid: float | None) -> str:
    parts = [f"training loss={train:.4f}"] if train is not None else []
    if valid is not None:
        parts.append(f"validation loss={valid:.4f}")
    return f"Step {step}/{total or '?'}: " + ", ".join(parts)


def metrics_rows(
    rec: JobRecord, series: MetricSeries
) -> list[tuple[str, int, str, dict[str, float | int | None]]]:
    """(id, created_at, message, data) of each step's metrics event, oldest step first."""
    train: dict[int, TrainPoint] = {p.step: p for p in series.train}
    evals: dict[int, EvalPoint] = {p.step: p for p in series.eval}
    total = series.total_steps or (rec.status.progress.total_steps if rec.status.progress else None)
    rows = []
    for step in sorted(train.keys() | evals.keys()):
        t, e = train.get(step), evals.get(step)
        data: dict[str, float | int | None] = {"step": step, "total_steps": total}
        if t is not None:
            data["train_loss"] = t.loss
        if e is not None:
            data["valid_loss"] = e.loss
        when = _when(rec, t.time if t else None, e.time if e else None)
        message = _message(step, total, t.loss if t else None, e.loss if e else None)
        rows.append((metrics_event_id(rec.job_id, step), when, message, data))
    return rows


def valid_loss_at(series: MetricSeries, step: int) -> float | None:
    """The eval loss logged at `step` (the checkpoint's), if any."""
    return next((p.loss for p in reversed(series.eval) if p.step == step), None)


def train_loss_at(series: MetricSeries, step: int) -> float | None:
    """The train loss logged at `step`, else the last one logged before it."""
    before = [p for p in series.train if p.step <= step]
    return before[-1].loss if before else None
