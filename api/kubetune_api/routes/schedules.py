"""`/api/finetune/schedules`: retraining on a schedule (FineTuneSchedules), with the job routes'
auth, tenancy (a tenant sees only its namespace's schedules; others' are 404), validation
(422 naming the field) and Idempotency-Key semantics.

Create, list, get, suspend or resume (PATCH), delete, "run now" and the jobs of a schedule.
The operator runs the slots; "run now" creates the run here, named and labelled like the
operator's runs (`kubetune_crd.schedule.run_manifest`), its placeholders rendered for the
time of the request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, HTTPException, Query
from kubernetes import client as k8s
from kubetune_crd import names
from kubetune_crd.base import DNS_LABEL
from kubetune_crd.schedule import FineTuneSchedule, run_manifest
from pydantic import ValidationError

from kubetune_api.auth import Tenant
from kubetune_api.deps import AppState, CurrentTenant, State
from kubetune_api.idempotency import (
    IdempotencyInfo,
    IdempotencyMismatchError,
    create_job,
    request_hash,
)
from kubetune_api.routes.finetune import IdempotencyKey
from kubetune_api.schedule_requests import (
    REQUEST_KIND,
    DeleteResponse,
    RunResponse,
    ScheduleRequest,
    SchedulesResponse,
    ScheduleView,
    SuspendRequest,
    schedule_object,
    schedule_spec,
    schedule_view,
)
from kubetune_api.schemas import JobsResponse
from kubetune_api.service import check_idempotency_key
from kubetune_api.store.errors import ConflictError
from kubetune_api.store.schedules import FineTuneSchedules
from kubetune_api.views import JobRecord, job_status, sort_newest_first

router = APIRouter(prefix="/api/finetune/schedules", tags=["schedules"])

RUN_REQUEST_KIND = "schedule-run"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    404: {"description": "Unknown schedule (or another tenant's)"},
}
Obj = dict[str, Any]


def _schedules(state: AppState) -> FineTuneSchedules:
    """The schedules store over the API's one apiserver client."""
    store = state.require_store()
    held = state.extra.get("schedules")
    if held is None or held[0] is not store:
        held = (store, FineTuneSchedules(k8s.CustomObjectsApi(store.api_client)))
        state.extra["schedules"] = held
    schedules: FineTuneSchedules = held[1]
    return schedules


def _find(state: AppState, tenant: Tenant, name: str) -> Obj:
    """The tenant's schedule (blocking), or 404 (also for a name no schedule can have)."""
    valid = len(name) <= names.SCHEDULE_NAME_MAX and re.fullmatch(DNS_LABEL, name)
    obj = _schedules(state).get(tenant.namespace, name) if valid else None
    if obj is None:
        raise HTTPException(status_code=404, detail=f"schedule {name} not found")
    return obj


@router.post("", status_code=201, response_model=ScheduleView, responses=_ERRORS)
def create_schedule(
    body: ScheduleRequest,
    state: State,
    tenant: CurrentTenant,
    idempotency_key: IdempotencyKey = None,
) -> ScheduleView:
    """Create a schedule; the same Idempotency-Key and body give the same answer."""
    key = check_idempotency_key(idempotency_key)
    spec = schedule_spec(body, state)
    payload = body.model_dump(mode="json")
    idem = (
        IdempotencyInfo.build(tenant.namespace, key, request_hash(REQUEST_KIND, payload))
        if key is not None
        else None
    )
    schedules = _schedules(state)
    try:
        created = schedules.create(tenant.namespace, schedule_object(body, spec, payload, idem))
    except ConflictError:
        created = _replayed(schedules, tenant.namespace, body.name, idem)
    return schedule_view(created)


def _replayed(
    schedules: FineTuneSchedules, namespace: str, name: str, idem: IdempotencyInfo | None
) -> Obj:
    """The existing schedule when this Idempotency-Key made it; else 409 (or 422: other body)."""
    existing = schedules.get(namespace, name)
    annotations = ((existing or {}).get("metadata") or {}).get("annotations") or {}
    if existing is None or idem is None:
        raise HTTPException(status_code=409, detail=f"schedule {name} already exists")
    if annotations.get(names.ANNOTATION_IDEMPOTENCY_KEY) != idem.key:
        raise HTTPException(status_code=409, detail=f"schedule {name} already exists")
    if annotations.get(names.ANNOTATION_REQUEST_HASH) != idem.request_hash:
        raise IdempotencyMismatchError(name)
    return existing


@router.get("", response_model=SchedulesResponse, responses=_ERRORS)
def list_schedules(state: State, tenant: CurrentTenant) -> SchedulesResponse:
    """The tenant's schedules, by name."""
    views = [schedule_view(o) for o in _schedules(state).list(tenant.namespace)]
    return SchedulesResponse(schedules=views, total=len(views))


@router.get("/{name}", response_model=ScheduleView, responses=_ERRORS)
def get_schedule(name: str, state: State, tenant: CurrentTenant) -> ScheduleView:
    """One schedule: its spec, its next run and how its runs went."""
    return schedule_view(_find(state, tenant, name))


@router.patch("/{name}", response_model=ScheduleView, responses=_ERRORS)
def update_schedule(
    name: str, body: SuspendRequest, state: State, tenant: CurrentTenant
) -> ScheduleView:
    """Suspend (no new runs; a running one goes on) or resume the schedule."""
    _find(state, tenant, name)
    return schedule_view(_schedules(state).set_suspend(tenant.namespace, name, body.suspend))


@router.delete("/{name}", response_model=DeleteResponse, responses=_ERRORS)
def delete_schedule(
    name: str,
    state: State,
    tenant: CurrentTenant,
    keep_jobs: Annotated[
        bool, Query(description="Keep its runs (the models are always kept).")
    ] = False,
) -> DeleteResponse:
    """Delete the schedule (and its runs unless keep_jobs); the models stay."""
    _find(state, tenant, name)
    _schedules(state).delete(tenant.namespace, name, keep_jobs)
    return DeleteResponse(name=name, jobs_kept=keep_jobs)


def _manual_time(job_id: str, default: datetime) -> datetime:
    """The request time a run-now name carries (a replayed claim keeps its first time)."""
    try:
        stamp = datetime.strptime(job_id.rsplit("-", 1)[-1], "%Y%m%d%H%M%S")
    except ValueError:
        return default
    return stamp.replace(tzinfo=timezone.utc)


@router.post("/{name}/run", status_code=202, response_model=RunResponse, responses=_ERRORS)
def run_now(
    name: str, state: State, tenant: CurrentTenant, idempotency_key: IdempotencyKey = None
) -> RunResponse:
    """Start a run now, whatever the concurrency policy (like `kubectl create job --from`);
    its placeholders render the time of the request."""
    key = check_idempotency_key(idempotency_key)
    namespace, obj = tenant.namespace, _find(state, tenant, name)
    try:
        schedule = FineTuneSchedule.from_k8s(obj)
    except ValidationError as exc:
        detail = f"schedule {name} is invalid: {exc.errors()[0]['msg']}"
        raise HTTPException(status_code=409, detail=detail) from None
    now = names.utc_now().replace(microsecond=0)
    run_hash = request_hash(RUN_REQUEST_KIND, {"schedule": name, "uid": _uid(obj)})
    idem = IdempotencyInfo.build(namespace, key, run_hash) if key is not None else None

    def build(job_id: str) -> Obj:
        manifest = run_manifest(schedule, _manual_time(job_id, now), manual=True)
        meta = manifest["metadata"]
        meta["labels"][names.LABEL_CREATED_BY] = names.CREATED_BY_API
        if idem is not None:
            meta["labels"][names.LABEL_IDEMPOTENCY] = idem.key_hash
            meta["annotations"][names.ANNOTATION_IDEMPOTENCY_KEY] = idem.key
            meta["annotations"][names.ANNOTATION_REQUEST_HASH] = idem.request_hash
        return manifest

    job_name = names.manual_job_name(name, now)
    record, replayed = _create_run(state, namespace, build, idem, job_name)
    if not replayed:
        state.metrics.jobs_created.inc()
    run = record.obj if record is not None else build(job_name)  # None: deleted at once
    spec, annotations = run["spec"], run["metadata"].get("annotations") or {}
    return RunResponse(
        job_id=record.job_id if record is not None else job_name,
        schedule=name,
        scheduled_time=annotations.get(names.ANNOTATION_SCHEDULED_TIME, names.format_time(now)),
        dataset_url=spec["dataset"]["url"],
        model_name=(spec.get("output") or {}).get("modelName"),
    )


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid"))


def _create_run(
    state: AppState,
    namespace: str,
    build: Callable[[str], Obj],
    idem: IdempotencyInfo | None,
    job_name: str,
) -> tuple[JobRecord | None, bool]:
    """Create the run (the job routes' Idempotency-Key flow with a key); (record, replayed)."""
    store = state.require_store()
    if idem is not None:
        created = create_job(
            store.jobs, store.claims, namespace, build, idem, make_id=lambda: job_name
        )
        return created.record, created.replayed
    try:
        return store.jobs.create(namespace, build(job_name)), False
    except ConflictError:  # asked twice within one second: that is one run
        return store.jobs.get_direct(namespace, job_name), True


@router.get("/{name}/jobs", response_model=JobsResponse, responses=_ERRORS)
async def schedule_jobs(
    name: str,
    state: State,
    tenant: CurrentTenant,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobsResponse:
    """The schedule's runs (its slots' and run-now's), newest first."""
    await anyio.to_thread.run_sync(_find, state, tenant, name)
    records = await state.require_store().jobs.in_namespace(tenant.namespace)
    mine = [r for r in sort_newest_first(records) if _schedule_of(r) == name]
    page = mine[offset : offset + limit]
    return JobsResponse(
        jobs=[job_status(r) for r in page], total=len(mine), limit=limit, offset=offset
    )


def _schedule_of(rec: JobRecord) -> str | None:
    labels = (rec.obj.get("metadata") or {}).get("labels") or {}
    value = labels.get(names.LABEL_SCHEDULE)
    return str(value) if value else None
