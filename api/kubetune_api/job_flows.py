"""The create, cancel and event-gathering flows both route families share.

The original API's `/api/finetune/*` routes and the OpenAI-compatible `/v1/fine_tuning/*`
ones answer in different shapes, but create, cancel and describe a job the same way: the
flows live here, the routes only translate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import anyio
from fastapi import HTTPException
from kubetune_crd.names import format_time, parse_time
from kubetune_crd.spec import FineTuneJobSpec
from kubetune_crd.status import TERMINAL_PHASES

from kubetune_api.auth import Tenant
from kubetune_api.deps import AppState, find_job
from kubetune_api.echo import StartConfig, start_config
from kubetune_api.idempotency import (
    IdempotencyInfo,
    create_job,
    request_hash,
)
from kubetune_api.request_fields import StartRequest
from kubetune_api.schemas import JobEventEntry
from kubetune_api.service import (
    ObjectMeta,
    build_object,
    build_spec,
    check_dataset,
    check_idempotency_key,
    check_model,
    check_tracking,
    for_job,
)
from kubetune_api.store.trainer_pods import TrainerPods
from kubetune_api.views import JobRecord

ORIGINAL_REQUEST_KIND = "seed"
"""The request kind hashed with original-API bodies for Idempotency-Key checks. The value
is kept as first released: stored request hashes were computed with it."""
OPENAI_REQUEST_KIND = "openai"


@dataclass(frozen=True)
class Submission:
    """How the route asked: its kind, its body as hashed and stored, its field names."""

    kind: str
    payload: dict[str, Any] | None = None
    """The body as the client sent it (default: the request's fields, defaults filled in)."""
    extra_annotations: dict[str, str] | None = None
    model_name_suffix: str | None = None
    field_names: dict[str, str] | None = None
    """Request field -> the route's own name for it, in errors."""


@dataclass(frozen=True)
class Submitted:
    job_id: str
    config: StartConfig
    record: JobRecord | None
    replayed: bool


def submit(
    state: AppState,
    tenant: Tenant,
    req: StartRequest,
    idempotency_key: str | None,
    how: Submission,
) -> Submitted:
    """Validate everything, then create the FineTuneJob (blocking: run in a worker thread).

    The spec is built once, before anything is written (FieldError, answered 422, when a
    field is unacceptable); each job id the create flow tries only fills in its model name.
    """
    store = state.require_store()
    spec = _checked_spec(state, req, idempotency_key, how.field_names or {})
    payload = how.payload if how.payload is not None else req.model_dump(mode="json")
    idem = (
        IdempotencyInfo.build(tenant.namespace, idempotency_key, request_hash(how.kind, payload))
        if idempotency_key is not None
        else None
    )
    meta = ObjectMeta(
        request=payload,
        idempotency_key=idem.key if idem else None,
        idempotency_hash=idem.key_hash if idem else None,
        request_hash=idem.request_hash if idem else None,
        extra_annotations=how.extra_annotations,
    )

    def build(job_id: str) -> dict[str, Any]:
        return build_object(job_id, for_job(spec, job_id, how.model_name_suffix), meta)

    created = create_job(store.jobs, store.claims, tenant.namespace, build, idem)
    if not created.replayed:
        state.metrics.jobs_created.inc()
    stored = for_job(spec, created.job_id, how.model_name_suffix)
    config = start_config(req.dataset_url, stored)
    return Submitted(created.job_id, config, created.record, created.replayed)


def _checked_spec(
    state: AppState, req: StartRequest, idempotency_key: str | None, names: dict[str, str]
) -> FineTuneJobSpec:
    """Model, dataset and Idempotency-Key checks, then the spec (FieldError on any)."""
    settings = state.settings
    check_model(req.model, state.catalog, settings, field=names.get("model", "model"))
    dataset = check_dataset(
        req.dataset_url,
        req.dataset_format,
        settings,
        state.resolver,
        field=names.get("dataset_url", "dataset_url"),
    )
    check_idempotency_key(idempotency_key)
    spec = build_spec(req, dataset, settings)
    check_tracking(spec, settings, state.resolver)
    return spec


async def request_cancel(
    state: AppState, tenant: Tenant, job_id: str, describe: Callable[[JobRecord], str]
) -> tuple[JobRecord, JobRecord]:
    """Set spec.cancel on the tenant's job (404 if unknown, 409 once it has ended, its status
    worded by `describe`); the record before and after."""
    rec = await find_job(state, tenant, job_id)
    if rec.phase in TERMINAL_PHASES:
        raise HTTPException(status_code=409, detail=f"job {job_id} already {describe(rec)}")
    store = state.require_store()
    updated = await anyio.to_thread.run_sync(store.jobs.request_cancel, rec.namespace, rec.name)
    return rec, updated


def _event_time(ev: Any) -> datetime | None:
    for attr in ("last_timestamp", "event_time", "first_timestamp"):
        value = getattr(ev, attr, None)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    meta = getattr(ev, "metadata", None)
    created = getattr(meta, "creation_timestamp", None)
    return created if isinstance(created, datetime) else None


EventRow = tuple[datetime | None, JobEventEntry]


def _kubernetes_event(ev: Any) -> EventRow:
    when = _event_time(ev)
    involved = ev.involved_object
    entry = JobEventEntry(
        time=format_time(when) if when else None,
        type=ev.type or "Normal",
        reason=ev.reason or "",
        message=ev.message or "",
        object=f"{involved.kind}/{involved.name}" if involved else "",
        count=ev.count or 1,
    )
    return when, entry


def _condition_events(rec: JobRecord) -> list[EventRow]:
    rows: list[EventRow] = []
    for cond in rec.status.conditions:
        failed = cond.type == "Failed" and cond.status == "True"
        entry = JobEventEntry(
            time=cond.last_transition_time,
            type="Warning" if failed else "Normal",
            reason=f"{cond.type}{'' if cond.status == 'True' else cond.status}",
            message=cond.message or cond.reason,
            object=f"FineTuneJob/{rec.name}",
        )
        rows.append((parse_time(cond.last_transition_time), entry))
    return rows


def gather_events(pods: TrainerPods, rec: JobRecord) -> list[EventRow]:
    """Kubernetes events of the job, its Job and pods, plus the status conditions; oldest first."""
    rows = [_kubernetes_event(ev) for ev in pods.events(rec.namespace, rec.name)]
    rows += _condition_events(rec)
    epoch = datetime.fromtimestamp(0, timezone.utc)
    rows.sort(key=lambda row: row[0] or epoch)
    return rows
