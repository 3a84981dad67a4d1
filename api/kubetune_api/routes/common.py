"""The job-creation, cancel and event-gathering flows shared by the seed and the OpenAI routes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import anyio
from fastapi import HTTPException
from kubetune_crd.status import TERMINAL_PHASES

from kubetune_api.auth import Tenant
from kubetune_api.deps import AppState, find_job
from kubetune_api.idempotency import (
    HEADER,
    IdempotencyInfo,
    create_job,
    request_hash,
    valid_key,
)
from kubetune_api.schemas import JobEvent, StartConfig, StartRequest
from kubetune_api.service import (
    FieldError,
    ObjectMeta,
    build_object,
    build_spec,
    check_dataset,
    check_model,
    start_config,
)
from kubetune_api.store import JobStore
from kubetune_api.views import JobRecord, parse_time

# Any well-formed id: used to check the spec before anything is written.
_PROBE_ID = "ft_20000101_000000_probe0"


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
    *,
    kind: str,
    request_payload: dict[str, Any] | None = None,
    extra_annotations: dict[str, str] | None = None,
    model_name_suffix: str | None = None,
    field_names: dict[str, str] | None = None,
) -> Submitted:
    """Validate everything, then create the FineTuneJob (blocking: run in a worker thread).

    Raises FieldError (422) before anything is written when a field is unacceptable.
    """
    names = field_names or {}
    store = state.require_store()
    settings = state.settings
    check_model(req.model, state.catalog, settings, field=names.get("model", "model"))
    dataset = check_dataset(
        req.dataset_url,
        req.dataset_format,
        settings,
        state.resolver,
        field=names.get("dataset_url", "dataset_url"),
    )
    if idempotency_key is not None and not valid_key(idempotency_key):
        raise FieldError(
            HEADER,
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
            idempotency_key,
            location="header",
        )
    build_spec(req, dataset, settings, _PROBE_ID, model_name_suffix=model_name_suffix)

    payload = request_payload if request_payload is not None else req.model_dump(mode="json")
    idem = (
        IdempotencyInfo.build(tenant.namespace, idempotency_key, request_hash(kind, payload))
        if idempotency_key is not None
        else None
    )

    def build(job_id: str) -> dict[str, Any]:
        spec = build_spec(req, dataset, settings, job_id, model_name_suffix=model_name_suffix)
        meta = ObjectMeta(
            request=payload,
            idempotency_key=idem.key if idem else None,
            idempotency_hash=idem.key_hash if idem else None,
            request_hash=idem.request_hash if idem else None,
            extra_annotations=extra_annotations,
        )
        return build_object(job_id, spec, meta)

    created = create_job(store, store.cache, tenant.namespace, build, idem)
    if not created.replayed:
        state.metrics.jobs_created.inc()
    spec = build_spec(req, dataset, settings, created.job_id, model_name_suffix=model_name_suffix)
    return Submitted(created.job_id, start_config(req, spec), created.record, created.replayed)


async def request_cancel(
    state: AppState, tenant: Tenant, job_id: str, describe: Callable[[JobRecord], str]
) -> tuple[JobRecord, JobRecord]:
    """Set spec.cancel on the tenant's job (404 if unknown, 409 once it has ended, its status
    worded by `describe`); the record before and after."""
    rec = await find_job(state, tenant, job_id)
    if rec.phase in TERMINAL_PHASES:
        raise HTTPException(status_code=409, detail=f"job {job_id} already {describe(rec)}")
    store = state.require_store()
    updated = await anyio.to_thread.run_sync(store.request_cancel, rec.namespace, rec.name)
    return rec, updated


def _event_time(ev: Any) -> datetime | None:
    for attr in ("last_timestamp", "event_time", "first_timestamp"):
        value = getattr(ev, attr, None)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    meta = getattr(ev, "metadata", None)
    created = getattr(meta, "creation_timestamp", None)
    return created if isinstance(created, datetime) else None


def gather_events(store: JobStore, rec: JobRecord) -> list[tuple[datetime | None, JobEvent]]:
    """Kubernetes events of the job, its Job and pods, plus the status conditions; oldest first."""
    rows: list[tuple[datetime | None, JobEvent]] = []
    for ev in store.events(rec.namespace, rec.name):
        when = _event_time(ev)
        involved = ev.involved_object
        rows.append(
            (
                when,
                JobEvent(
                    time=when.isoformat() if when else None,
                    type=ev.type or "Normal",
                    reason=ev.reason or "",
                    message=ev.message or "",
                    object=f"{involved.kind}/{involved.name}" if involved else "",
                    count=ev.count or 1,
                ),
            )
        )
    for cond in rec.status.conditions:
        when_c = parse_time(cond.last_transition_time)
        rows.append(
            (
                when_c,
                JobEvent(
                    time=cond.last_transition_time,
                    type="Warning" if cond.type == "Failed" and cond.status == "True" else "Normal",
                    reason=f"{cond.type}{'' if cond.status == 'True' else cond.status}",
                    message=cond.message or cond.reason,
                    object=f"FineTuneJob/{rec.name}",
                ),
            )
        )
    epoch = datetime.fromtimestamp(0, timezone.utc)
    rows.sort(key=lambda row: row[0] or epoch)
    return rows
