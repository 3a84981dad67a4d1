"""`/api/finetune/*`: the original API's endpoints (same shapes), then jobs, cancel, logs and
events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from kubetune_api.deps import AppState, CurrentTenant, State, find_job, tenant_of
from kubetune_api.job_flows import (
    ORIGINAL_REQUEST_KIND,
    Submission,
    gather_events,
    request_cancel,
    submit,
)
from kubetune_api.request_fields import StartRequest
from kubetune_api.schemas import (
    CancelResponse,
    CatalogModelInfo,
    EventsResponse,
    InfoResponse,
    JobsResponse,
    JobStatus,
    OriginalStatus,
    StartResponse,
    parameter_ranges,
)
from kubetune_api.store.errors import TRANSPORT_ERRORS, StoreUnavailableError
from kubetune_api.validation import SUPPORTED_FORMATS
from kubetune_api.views import job_status, sort_newest_first

router = APIRouter(prefix="/api/finetune", tags=["finetune"])

ENDPOINTS = {
    "info": "GET /api/finetune/info",
    "start": "POST /api/finetune/start",
    "status": "GET /api/finetune/status/{job_id}",
    "models": "GET /api/finetune/models",
    "jobs": "GET /api/finetune/jobs?status=&model=&limit=&offset=",
    "cancel": "POST /api/finetune/cancel/{job_id}",
    "logs": "GET /api/finetune/logs/{job_id}?follow=true",
    "events": "GET /api/finetune/events/{job_id}",
    "openai": "/v1/fine_tuning/jobs",
    "docs": "GET /docs",
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    404: {"description": "Unknown job (or another tenant's)"},
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe creation: the same key and body give the same job.",
        max_length=255,
    ),
]


@router.get("/info", response_model=InfoResponse, responses=_ERRORS)
async def info(state: State, tenant: CurrentTenant) -> InfoResponse:
    """What can be fine-tuned, on which data formats, with which parameters."""
    catalog = state.catalog
    return InfoResponse(
        available=state.store is not None and state.store.jobs.health().ready,
        supported_models=catalog.aliases,
        supported_formats=list(SUPPORTED_FORMATS),
        endpoints=ENDPOINTS,
        parameters=parameter_ranges(),
        models={
            alias: CatalogModelInfo(description=entry.description, parameters=entry.parameters)
            for alias, entry in catalog.models.items()
        },
    )


@router.post(
    "/start",
    status_code=202,
    response_model=StartResponse,
    responses={**_ERRORS, 413: {"description": "Request body too large"}},
)
def start(
    body: StartRequest, state: State, tenant: CurrentTenant, idempotency_key: IdempotencyKey = None
) -> StartResponse:
    """Start a fine-tuning job: answered 202 once the FineTuneJob is stored."""
    done = submit(state, tenant, body, idempotency_key, Submission(ORIGINAL_REQUEST_KIND))
    return StartResponse(
        job_id=done.job_id, message=f"Fine-tuning lancé pour {body.model}", config=done.config
    )


@router.get("/status/{job_id}", response_model=JobStatus, responses=_ERRORS)
async def status(job_id: str, request: Request) -> Response:
    """The job's status in the original API's words (`completed` when done), progress and
    details (`world_size` and `effective_batch_size` once the operator knows them)."""
    # The hottest read: no sub-dependencies to solve (same checks as `State`/`CurrentTenant`),
    # and the record's pre-serialized JSON as is (`response_model` only documents it: FastAPI
    # does not re-validate a returned Response).
    state: AppState = request.app.state.kubetune
    rec = await find_job(state, tenant_of(request, state), job_id)
    return Response(content=rec.status_json, media_type="application/json")


@router.get("/jobs", response_model=JobsResponse, responses=_ERRORS)
async def jobs(
    state: State,
    tenant: CurrentTenant,
    status: Annotated[OriginalStatus | None, Query(description="Only jobs in this status.")] = None,
    model: Annotated[str | None, Query(max_length=256, description="Only this model.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobsResponse:
    """The tenant's jobs, newest first, filtered by status and model, paginated."""
    records = await state.require_store().jobs.in_namespace(tenant.namespace)
    selected = [
        r
        for r in sort_newest_first(records)
        if (status is None or r.original_status == status) and (model is None or r.model == model)
    ]
    page = selected[offset : offset + limit]
    return JobsResponse(
        jobs=[job_status(r) for r in page], total=len(selected), limit=limit, offset=offset
    )


@router.post(
    "/cancel/{job_id}",
    status_code=202,
    response_model=CancelResponse,
    responses={**_ERRORS, 409: {"description": "The job already ended"}},
)
async def cancel(job_id: str, state: State, tenant: CurrentTenant) -> CancelResponse:
    """Ask the operator to stop the job (sets spec.cancel); the job ends as `cancelled`."""
    rec, updated = await request_cancel(state, tenant, job_id, lambda r: r.original_status)
    return CancelResponse(
        job_id=updated.job_id,
        status=updated.original_status,
        message="cancellation requested" if not rec.cancel else "cancellation already requested",
    )


@router.get(
    "/logs/{job_id}",
    response_class=PlainTextResponse,
    responses={**_ERRORS, 409: {"description": "No trainer pod yet"}},
)
async def logs(
    job_id: str,
    state: State,
    tenant: CurrentTenant,
    follow: Annotated[bool, Query(description="Stream until the trainer ends.")] = False,
    tail_lines: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> Response:
    """The trainer's log (latest pod), through the apiserver; `follow=true` streams it."""
    rec = await find_job(state, tenant, job_id)
    store = state.require_store()
    pods = await anyio.to_thread.run_sync(store.pods.of_job, rec.namespace, rec.name)
    if not pods:
        raise HTTPException(status_code=409, detail=f"job {job_id} has no trainer pod yet")
    pod = pods[-1]

    def open_logs() -> Any:
        return store.pods.open_logs(rec.namespace, pod, follow=follow, tail_lines=tail_lines)

    try:
        response = await anyio.to_thread.run_sync(open_logs)
    except StoreUnavailableError as exc:
        if exc.status == 400:  # container not started yet, or already gone
            raise HTTPException(status_code=409, detail=str(exc)) from None
        raise
    if not follow:
        data = await anyio.to_thread.run_sync(store.pods.read_log, response)
        return PlainTextResponse(data)
    return StreamingResponse(_stream(response), media_type="text/plain; charset=utf-8")


async def _stream(response: Any) -> AsyncIterator[bytes]:
    chunks = response.stream(amt=None, decode_content=True)

    def next_chunk() -> bytes:
        return next(chunks, b"")

    try:
        while True:
            try:
                chunk: bytes = await anyio.to_thread.run_sync(next_chunk, abandon_on_cancel=True)
            except TRANSPORT_ERRORS:  # the apiserver went away mid-stream: end the log there
                break
            if not chunk:
                break
            yield chunk
    finally:
        try:
            response.shutdown()
        except Exception:
            response.close()
        response.release_conn()


@router.get("/events/{job_id}", response_model=EventsResponse, responses=_ERRORS)
async def events(job_id: str, state: State, tenant: CurrentTenant) -> EventsResponse:
    """Kubernetes events of the job, its Job and pods, with its status transitions."""
    rec = await find_job(state, tenant, job_id)
    store = state.require_store()
    rows = await anyio.to_thread.run_sync(gather_events, store.pods, rec)
    return EventsResponse(job_id=rec.job_id, events=[ev for _, ev in rows])
