"""`GET /api/finetune/metrics/{job_id}`: a job's train and eval loss curves.

Read from the job's metric history, the ConfigMap `<job>-metrics` the operator keeps from the
trainer's progress reports (durable, bounded: it outlives the pods and restarts). Only while
no such record exists (a job run before it, or with the progress endpoint off) are the
trainer pods' logs read instead (the JSON line the trainer prints per logging step), with
the same pod log reader as `/api/finetune/logs`, every pod of the job oldest first (a
retried job resumes in a new pod). Parsed and downsampled by `kubetune_api.metric_series`.
Same tenant rules and 404 as `/api/finetune/status/{job_id}`. A job with no point yet
answers empty series. When no eval point was logged, the eval losses before and after
training the trainer reported in the status (`metrics`) are the eval series (steps 0 and
the last step).
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter
from pydantic import BaseModel, Field

from kubetune_api.deps import AppState, CurrentTenant, State, find_job
from kubetune_api.metric_series import (
    MAX_POINTS,
    EvalPoint,
    MetricSeries,
    TrainPoint,
    downsample,
    parse_logs,
    series_of_history,
)
from kubetune_api.store.errors import NotFoundError, StoreUnavailableError
from kubetune_api.store.trainer_pods import TrainerPods
from kubetune_api.views import JobRecord

router = APIRouter(prefix="/api/finetune", tags=["finetune"])


class MetricsResponse(BaseModel):
    """A job's loss curves, at most `MAX_POINTS` points per series."""

    job_id: str
    train: list[TrainPoint] = Field(description="One point per logging step, by step.")
    eval: list[EvalPoint] = Field(description="One point per evaluation, by step.")
    total_steps: int | None = Field(default=None, description="Optimizer steps planned.")
    downsampled: bool = Field(
        description=f"True when a series had more than {MAX_POINTS} points and was thinned, "
        "or the stored history of a long run was (first, last and the points that shape the "
        "curve kept)."
    )


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    404: {"description": "Unknown job (or another tenant's)"},
}


def read_pod_logs(pods: TrainerPods, namespace: str, name: str) -> list[bytes]:
    """The whole log of each trainer pod of the job, oldest pod first (blocking). A pod
    whose container has not started or is gone has no log yet: skipped."""
    out: list[bytes] = []
    for pod in pods.of_job(namespace, name):
        try:
            response = pods.open_logs(namespace, pod, follow=False, tail_lines=None)
        except NotFoundError:
            continue
        except StoreUnavailableError as exc:
            if exc.status == 400:  # container not started yet, or already gone
                continue
            raise
        out.append(pods.read_log(response))
    return out


def _status_evals(rec: JobRecord, last_step: int | None) -> list[EvalPoint]:
    """Eval losses before (step 0) and after (last step) training, from the status."""
    metrics = rec.status.metrics
    if metrics is None:
        return []
    out = []
    if metrics.eval_loss_before is not None:
        out.append(EvalPoint(step=0, loss=metrics.eval_loss_before))
    if metrics.eval_loss_after is not None and last_step:
        out.append(EvalPoint(step=last_step, loss=metrics.eval_loss_after))
    return out


async def job_series(state: AppState, rec: JobRecord) -> tuple[MetricSeries, bool]:
    """The job's series and whether the stored history was thinned: the stored history,
    else (none stored yet) the pods' logs."""
    store = state.require_store()
    history = await anyio.to_thread.run_sync(store.histories.read, rec.namespace, rec.name, rec.uid)
    if history is not None:
        return series_of_history(history), history.thinned
    logs = await anyio.to_thread.run_sync(read_pod_logs, store.pods, rec.namespace, rec.name)
    return await anyio.to_thread.run_sync(parse_logs, logs), False


def build_answer(rec: JobRecord, series: MetricSeries, thinned: bool = False) -> MetricsResponse:
    progress = rec.status.progress
    total = series.total_steps or (progress.total_steps if progress else None)
    last_step = series.train[-1].step if series.train else (progress.step if progress else None)
    evals = series.eval or _status_evals(rec, last_step)
    train = downsample(series.train)
    evals_kept = downsample(evals)
    return MetricsResponse(
        job_id=rec.job_id,
        train=train,
        eval=evals_kept,
        total_steps=total,
        downsampled=thinned or len(train) < len(series.train) or len(evals_kept) < len(evals),
    )


@router.get("/metrics/{job_id}", response_model=MetricsResponse, responses=_ERRORS)
async def metrics(job_id: str, state: State, tenant: CurrentTenant) -> MetricsResponse:
    """The job's train loss, learning rate and tokens/s per logging step, and its eval
    losses, by step (long runs downsampled to at most 500 points per series)."""
    rec = await find_job(state, tenant, job_id)
    series, thinned = await job_series(state, rec)
    return build_answer(rec, series, thinned)
