"""OpenAI-compatible fine-tuning routes under `/v1/fine_tuning/jobs`, on the same resources.

Field names and status values are OpenAI's (validating_files, queued, running, succeeded,
failed, cancelled), so the `openai` client works with `base_url=<api>/v1`. `training_file`
takes what `dataset_url` takes (a path under the data root, https:// or s3://): there is no
files API. The learning rate is 2e-5 times `learning_rate_multiplier`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio
from fastapi import APIRouter, Header, HTTPException, Query
from kubetune_crd.spec import HyperparametersSpec
from kubetune_crd.status import TERMINAL_PHASES
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubetune_api.auth import Tenant
from kubetune_api.deps import CurrentTenant, State, find_job
from kubetune_api.routes.common import gather_events, request_cancel, submit
from kubetune_api.schemas import StartRequest
from kubetune_api.service import FieldError
from kubetune_api.views import JobRecord, parse_time, sort_newest_first

router = APIRouter(prefix="/v1/fine_tuning", tags=["openai"])

BASE_LEARNING_RATE: float = HyperparametersSpec.model_fields["learning_rate"].default
ANNOTATION_OPENAI = "kubetune.io/openai"

OpenAIStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
PHASE_TO_OPENAI: dict[str, OpenAIStatus] = {
    "Pending": "queued",
    "Running": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Cancelled": "cancelled",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Strict):
    n_epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=20, strict=True)] = "auto"
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=16, strict=True)] = "auto"
    learning_rate_multiplier: Literal["auto"] | Annotated[float, Field(gt=0, le=1000)] = "auto"


class Supervised(_Strict):
    hyperparameters: Hyperparameters | None = None


class Method(_Strict):
    type: Literal["supervised"] = "supervised"
    supervised: Supervised | None = None


class CreateJob(_Strict):
    """`POST /v1/fine_tuning/jobs` (OpenAI's fields; `training_file` is a dataset URL)."""

    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=2048)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, strict=True)
    validation_file: None = Field(
        default=None, description="Not supported: a held-out split is taken from training_file."
    )
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )
    integrations: list[Any] | None = Field(default=None, max_length=0)


class JobHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobMethod(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: dict[str, Any]


class FineTuningJob(BaseModel):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    model: str
    created_at: int
    finished_at: int | None
    fine_tuned_model: str | None
    organization_id: str
    result_files: list[str]
    status: OpenAIStatus
    validation_file: str | None
    training_file: str
    hyperparameters: JobHyperparameters
    trained_tokens: int | None
    error: JobError | None
    seed: int
    estimated_finish: int | None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None
    method: JobMethod
    user_provided_suffix: str | None = None


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class JobEvent(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEvent]
    has_more: bool


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None


class Checkpoint(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Checkpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


def openai_status(rec: JobRecord) -> OpenAIStatus:
    if rec.phase is None:
        return "validating_files"
    return PHASE_TO_OPENAI.get(rec.phase, "queued")


def _ts(value: str | None) -> int | None:
    parsed = parse_time(value)
    return int(parsed.timestamp()) if parsed else None


def to_openai(rec: JobRecord) -> FineTuningJob:
    spec = rec.spec
    hp = spec.get("hyperparameters") or {}
    st = rec.status
    extra = _openai_annotation(rec)
    lr = float(hp.get("learningRate", BASE_LEARNING_RATE))
    hyper = JobHyperparameters(
        n_epochs=int(hp.get("epochs", 3)),
        batch_size=int(hp.get("batchSize", 4)),
        learning_rate_multiplier=round(lr / BASE_LEARNING_RATE, 6),
    )
    error = None
    if st.phase == "Failed":
        failure = st.failure
        error = JobError(
            code=failure.reason if failure else "Unknown",
            message=(failure.message if failure else None) or st.message or "failed",
        )
    eta = st.progress.eta_seconds if st.progress else None
    now_finish = None
    if eta is not None and st.phase == "Running" and st.progress and st.progress.updated_at:
        updated = _ts(st.progress.updated_at)
        now_finish = updated + int(eta) if updated is not None else None
    model_name = st.model.name if (st.phase == "Succeeded" and st.model) else None
    return FineTuningJob(
        id=rec.job_id,
        model=rec.model,
        created_at=int(rec.created_ts),
        finished_at=_ts(st.completion_time) if st.phase in TERMINAL_PHASES else None,
        fine_tuned_model=model_name,
        organization_id=rec.namespace,
        result_files=[],
        status=openai_status(rec),
        validation_file=None,
        training_file=extra.get("training_file") or (spec.get("dataset") or {}).get("url", ""),
        hyperparameters=hyper,
        trained_tokens=st.metrics.train_tokens if st.metrics else None,
        error=error,
        seed=int(hp.get("seed", 42)),
        estimated_finish=now_finish,
        metadata=extra.get("metadata"),
        method=JobMethod(supervised={"hyperparameters": hyper.model_dump()}),
        user_provided_suffix=extra.get("suffix"),
    )


def _openai_annotation(rec: JobRecord) -> dict[str, Any]:
    raw = rec.annotations.get(ANNOTATION_OPENAI)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_OPENAI_FIELD = {
    "dataset_url": "training_file",
    "epochs": "hyperparameters.n_epochs",
    "batch_size": "hyperparameters.batch_size",
    "learning_rate": "hyperparameters.learning_rate_multiplier",
    "model": "model",
    "seed": "seed",
    "model_name": "suffix",
}


def to_start_request(body: CreateJob) -> StartRequest:
    hp = body.hyperparameters
    if (
        body.method is not None
        and body.method.supervised
        and body.method.supervised.hyperparameters
    ):
        if hp is not None:
            raise FieldError("method", "give hyperparameters either at the top or in method")
        hp = body.method.supervised.hyperparameters
    values: dict[str, Any] = {"model": body.model, "dataset_url": body.training_file}
    if hp is not None:
        if hp.n_epochs != "auto":
            values["epochs"] = hp.n_epochs
        if hp.batch_size != "auto":
            values["batch_size"] = hp.batch_size
        if hp.learning_rate_multiplier != "auto":
            values["learning_rate"] = BASE_LEARNING_RATE * float(hp.learning_rate_multiplier)
    if body.seed is not None:
        values["seed"] = body.seed
    try:
        return StartRequest.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = str(err["loc"][0]) if err.get("loc") else "body"
        raise FieldError(_OPENAI_FIELD.get(loc, loc), err.get("msg", "invalid")) from None


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
    done = submit(
        state,
        tenant,
        req,
        idempotency_key,
        kind="openai",
        request_payload=body.model_dump(mode="json"),
        extra_annotations={ANNOTATION_OPENAI: json.dumps(extra, sort_keys=True)},
        model_name_suffix=body.suffix,
        field_names={"model": "model", "dataset_url": "training_file"},
    )
    store = state.require_store()
    rec = done.record or store.cache.get(tenant.namespace, done.job_id.replace("_", "-"))
    if rec is None:
        raise HTTPException(status_code=503, detail="job stored but not readable yet")
    return to_openai(rec)


def _records(state: State, tenant: Tenant) -> list[JobRecord]:
    return sort_newest_first(state.require_store().list_jobs(tenant.namespace))


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
    after: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobList:
    """The tenant's jobs, newest first; `after` is the last id of the previous page."""
    store = state.require_store()
    if store.read_mode == "direct":
        records = await anyio.to_thread.run_sync(_records, state, tenant)
    else:
        records = _records(state, tenant)
    page, has_more = _page(records, lambda r: r.job_id, after, limit)
    return JobList(data=[to_openai(r) for r in page], has_more=has_more)


@router.get("/jobs/{job_id}", response_model=FineTuningJob)
async def retrieve_job(job_id: str, state: State, tenant: CurrentTenant) -> FineTuningJob:
    return to_openai(await find_job(state, tenant, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=FineTuningJob)
async def cancel_job(job_id: str, state: State, tenant: CurrentTenant) -> FineTuningJob:
    _, updated = await request_cancel(state, tenant, job_id, openai_status)
    return to_openai(updated)


def _event_id(job_id: str, index: int, text: str) -> str:
    digest = hashlib.sha256(f"{job_id}\x00{index}\x00{text}".encode()).hexdigest()[:20]
    return f"ftevent-{digest}"


@router.get("/jobs/{job_id}/events", response_model=EventList)
async def list_events(
    job_id: str,
    state: State,
    tenant: CurrentTenant,
    after: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> EventList:
    """Status transitions and Kubernetes events, newest first; plus the latest metrics."""
    rec = await find_job(state, tenant, job_id)
    store = state.require_store()
    rows = await anyio.to_thread.run_sync(gather_events, store, rec)
    events: list[JobEvent] = []
    for index, (when, ev) in enumerate(rows):
        level: Literal["info", "warn", "error"] = "warn" if ev.type == "Warning" else "info"
        events.append(
            JobEvent(
                id=_event_id(rec.job_id, index, ev.reason + ev.message),
                created_at=int(when.timestamp()) if when else int(rec.created_ts),
                level=level,
                message=f"{ev.reason}: {ev.message}" if ev.message else ev.reason,
            )
        )
    progress = rec.status.progress
    if progress is not None and progress.step:
        events.append(
            JobEvent(
                id=_event_id(rec.job_id, len(rows), f"metrics{progress.step}"),
                created_at=_ts(progress.updated_at) or int(rec.created_ts),
                level="info",
                message=f"Step {progress.step}/{progress.total_steps or '?'}: "
                f"training loss={progress.loss}",
                data={
                    "step": progress.step,
                    "train_loss": progress.loss,
                    "total_steps": progress.total_steps,
                },
                type="metrics",
            )
        )
    events.reverse()
    page, has_more = _page(events, lambda e: e.id, after, limit)
    return EventList(data=page, has_more=has_more)


@router.get("/jobs/{job_id}/checkpoints", response_model=CheckpointList)
async def list_checkpoints(
    job_id: str,
    state: State,
    tenant: CurrentTenant,
    after: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> CheckpointList:
    """The stored model of a succeeded job (kubetune keeps resumable checkpoints internal)."""
    rec = await find_job(state, tenant, job_id)
    st = rec.status
    data: list[Checkpoint] = []
    if st.phase == "Succeeded" and st.model is not None:
        progress = st.progress
        step = progress.step if progress else 0
        data.append(
            Checkpoint(
                id=f"ftckpt-{rec.name}-final",
                created_at=_ts(st.model.created or st.completion_time) or int(rec.created_ts),
                fine_tuned_model_checkpoint=st.model.path or st.model.uri,
                fine_tuning_job_id=rec.job_id,
                metrics=CheckpointMetrics(
                    step=float(step),
                    train_loss=st.metrics.train_loss if st.metrics else None,
                    valid_loss=st.metrics.eval_loss_after if st.metrics else None,
                ),
                step_number=step,
            )
        )
    page, has_more = _page(data, lambda c: c.id, after, limit)
    return CheckpointList(
        data=page,
        has_more=has_more,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
    )
