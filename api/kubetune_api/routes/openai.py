"""OpenAI-compatible fine-tuning routes under `/v1/fine_tuning/jobs`, on the same resources.

The shapes and their mappings live in `openai_models`; the create, cancel and event flows
are the original API's (`job_flows`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Header, HTTPException, Query
from kubetune_crd.names import ANNOTATION_OPENAI, job_id_to_name

from kubetune_api.deps import CurrentTenant, State, find_job
from kubetune_api.job_flows import (
    OPENAI_REQUEST_KIND,
    Submission,
    gather_events,
    request_cancel,
    submit,
)
from kubetune_api.openai_models import (
    CheckpointList,
    CreateJob,
    EventList,
    FineTuningJob,
    JobList,
    final_checkpoints,
    openai_events,
    openai_status,
    to_openai,
    to_start_request,
)
from kubetune_api.routes.metrics import job_series
from kubetune_api.views import sort_newest_first

router = APIRouter(prefix="/v1/fine_tuning", tags=["openai"])

After = Annotated[str | None, Query(max_length=256)]


@router.post("/jobs", response_model=FineTuningJob)
def create_job(
    body: CreateJob,
    state: State,
    tenant: CurrentTenant,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> FineTuningJob:
    """Create a fine-tuning job (OpenAI's `client.fine_tuning.jobs.create`)."""
    req = to_start_request(body)
    extra = {"training_file": body.training_file, "suffix": body.suffix, "metadata": body.metadata}
    how = Submission(
        OPENAI_REQUEST_KIND,
        payload=body.model_dump(mode="json"),
        extra_annotations={ANNOTATION_OPENAI: json.dumps(extra, sort_keys=True)},
        model_name_suffix=body.suffix,
        field_names={"model": "model", "dataset_url": "training_file"},
    )
    done = submit(state, tenant, req, idempotency_key, how)
    rec = done.record
    if rec is None:
        name = job_id_to_name(done.job_id)
        rec = state.require_store().jobs.cache.get(tenant.namespace, name) if name else None
    if rec is None:
        raise HTTPException(
            status_code=503, detail="job stored but not readable yet", headers={"Retry-After": "1"}
        )
    return to_openai(rec)


_T = TypeVar("_T")


def _page(
    items: list[_T], id_of: Callable[[_T], str], after: str | None, limit: int
) -> tuple[list[_T], bool]:
    """OpenAI's cursor pagination: the items after the one with id `after` (none when that id
    is unknown), at most `limit` of them, and whether more follow."""
    if after is not None:
        ids = [id_of(item) for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return items[:limit], len(items) > limit


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    state: State,
    tenant: CurrentTenant,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobList:
    """The tenant's jobs, newest first; `after` is the last id of the previous page."""
    records = await state.require_store().jobs.in_namespace(tenant.namespace)
    page, has_more = _page(sort_newest_first(records), lambda r: r.job_id, after, limit)
    return JobList(data=[to_openai(r) for r in page], has_more=has_more)


@router.get("/jobs/{job_id}", response_model=FineTuningJob)
async def retrieve_job(job_id: str, state: State, tenant: CurrentTenant) -> FineTuningJob:
    return to_openai(await find_job(state, tenant, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=FineTuningJob)
async def cancel_job(job_id: str, state: State, tenant: CurrentTenant) -> FineTuningJob:
    _, updated = await request_cancel(state, tenant, job_id, openai_status)
    return to_openai(updated)


@router.get("/jobs/{job_id}/events", response_model=EventList)
async def list_events(
    job_id: str,
    state: State,
    tenant: CurrentTenant,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> EventList:
    """Status transitions, Kubernetes events and one `metrics` event per logged step (train
    and valid loss), newest first."""
    rec = await find_job(state, tenant, job_id)
    pods = state.require_store().pods
    rows = await anyio.to_thread.run_sync(gather_events, pods, rec)
    series, _ = await job_series(state, rec)
    page, has_more = _page(openai_events(rec, rows, series), lambda e: e.id, after, limit)
    return EventList(data=page, has_more=has_more)


@router.get("/jobs/{job_id}/checkpoints", response_model=CheckpointList)
async def list_checkpoints(
    job_id: str,
    state: State,
    tenant: CurrentTenant,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> CheckpointList:
    """The stored model of a succeeded job (kubetune keeps resumable checkpoints internal)."""
    rec = await find_job(state, tenant, job_id)
    series = (await job_series(state, rec))[0] if rec.status.phase == "Succeeded" else None
    page, has_more = _page(final_checkpoints(rec, series), lambda c: c.id, after, limit)
    return CheckpointList(
        data=page,
        has_more=has_more,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
    )
