"""OpenAI's fine-tuning shapes, and the pure mappings between them and kubetune's.

Field names and status values are OpenAI's (validating_files, queued, running, succeeded,
failed, cancelled), so the `openai` client works with `base_url=<api>/v1`. `training_file`
takes what `dataset_url` takes (a path under the data root, https:// or s3://): there is no
files API. The learning rate is the contract's default times `learning_rate_multiplier`.
Ranges and defaults of the hyperparameters are the contract's (`HyperparametersSpec`): the
request model reads them, and a job's answer reads its stored spec, defaults filled in.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

from kubetune_crd.method import DpoSpec
from kubetune_crd.names import ANNOTATION_OPENAI, parse_time
from kubetune_crd.spec import DatasetSpec, FineTuneJobSpec, HyperparametersSpec
from kubetune_crd.status import TERMINAL_PHASES
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from kubetune_api.metric_series import MetricSeries
from kubetune_api.openai_metrics import metrics_rows, train_loss_at, valid_loss_at
from kubetune_api.request_fields import StartRequest, constraints, hyperparameter_constraints
from kubetune_api.schemas import JobEventEntry
from kubetune_api.service import FieldError
from kubetune_api.views import JobRecord

BASE_LEARNING_RATE: float = HyperparametersSpec.model_fields["learning_rate"].default
DEFAULT_BETA: float = DpoSpec.model_fields["beta"].default

OpenAIStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
PHASE_TO_OPENAI: dict[str, OpenAIStatus] = {
    "Pending": "queued",
    "Validating": "validating_files",  # the CPU pre-flight checks the dataset
    "Running": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Cancelled": "cancelled",
}

Epochs = Annotated[int, Strict(), hyperparameter_constraints("epochs")]
BatchSize = Annotated[int, Strict(), hyperparameter_constraints("batch_size")]
Seed = Annotated[int, Strict(), hyperparameter_constraints("seed")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Strict):
    n_epochs: Literal["auto"] | Epochs = "auto"
    batch_size: Literal["auto"] | BatchSize = "auto"
    learning_rate_multiplier: Literal["auto"] | Annotated[float, Field(gt=0, le=1000)] = "auto"


class Supervised(_Strict):
    hyperparameters: Hyperparameters | None = None


Beta = Annotated[float, Strict(), Field(**constraints(DpoSpec.model_fields["beta"]))]


class DpoHyperparameters(Hyperparameters):
    beta: Literal["auto"] | Beta = "auto"


class Dpo(_Strict):
    hyperparameters: DpoHyperparameters | None = None


class OpenAIMethod(_Strict):
    """OpenAI's `method` object of a create request: `supervised` or `dpo` (preference pairs,
    kubetune's `method.objective: dpo`)."""

    type: Literal["supervised", "dpo"] = "supervised"
    supervised: Supervised | None = None
    dpo: Dpo | None = None


class CreateJob(_Strict):
    """`POST /v1/fine_tuning/jobs` (OpenAI's fields; `training_file` is a dataset URL)."""

    model: str = Field(**constraints(FineTuneJobSpec.model_fields["model"], pattern=False))
    training_file: str = Field(**constraints(DatasetSpec.model_fields["url"], pattern=False))
    hyperparameters: Hyperparameters | None = None
    method: OpenAIMethod | None = None
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    seed: Seed | None = None
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
    type: Literal["supervised", "dpo"] = "supervised"
    supervised: dict[str, Any] | None = None
    dpo: dict[str, Any] | None = None


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


class OpenAIEvent(BaseModel):
    """OpenAI's `fine_tuning.job.event`."""

    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEvent]
    has_more: bool


class CheckpointMetrics(BaseModel):
    """OpenAI's checkpoint metrics: train loss and eval loss at the checkpoint's step;
    `full_valid_loss` is the held-out loss over every eval row after training."""

    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    full_valid_loss: float | None = None


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


# -- OpenAI's request -> the original API's request --------------------------------------------
_OPENAI_FIELD = {
    "dataset_url": "training_file",
    "epochs": "hyperparameters.n_epochs",
    "batch_size": "hyperparameters.batch_size",
    "learning_rate": "hyperparameters.learning_rate_multiplier",
    "model": "model",
    "seed": "seed",
    "model_name": "suffix",
    "objective": "method.type",
    "dpo_beta": "method.dpo.hyperparameters.beta",
}


def _method_hyperparameters(method: OpenAIMethod | None) -> Hyperparameters | None:
    """The hyperparameters given inside `method`, whose object must match its type."""
    if method is None:
        return None
    other = "supervised" if method.type == "dpo" else "dpo"
    if getattr(method, other) is not None:
        raise FieldError(f"method.{other}", f"method.type is {method.type!r}")
    given = method.dpo if method.type == "dpo" else method.supervised
    return given.hyperparameters if given is not None else None


def to_start_request(body: CreateJob) -> StartRequest:
    """The request this create body asks for ("auto": the contract's default)."""
    hp = body.hyperparameters
    method_hp = _method_hyperparameters(body.method)
    if method_hp is not None:
        if hp is not None:
            raise FieldError("method", "give hyperparameters either at the top or in method")
        hp = method_hp
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
    if body.method is not None and body.method.type == "dpo":
        values["objective"] = "dpo"
        if isinstance(hp, DpoHyperparameters) and hp.beta != "auto":
            values["dpo_beta"] = hp.beta
    try:
        return StartRequest.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = str(err["loc"][0]) if err.get("loc") else "body"
        raise FieldError(_OPENAI_FIELD.get(loc, loc), err.get("msg", "invalid")) from None


# -- a FineTuneJob -> OpenAI's answers ---------------------------------------------------------
def openai_status(rec: JobRecord) -> OpenAIStatus:
    if rec.phase is None:
        return "validating_files"
    return PHASE_TO_OPENAI.get(rec.phase, "queued")


def timestamp(value: str | None) -> int | None:
    """Unix seconds of an RFC 3339 time (None when absent or unreadable)."""
    parsed = parse_time(value)
    return int(parsed.timestamp()) if parsed else None


def _error(rec: JobRecord) -> JobError | None:
    st = rec.status
    if st.phase != "Failed":
        return None
    failure = st.failure
    return JobError(
        code=failure.reason if failure else "Unknown",
        message=(failure.message if failure else None) or st.message or "failed",
    )


def _estimated_finish(rec: JobRecord) -> int | None:
    progress = rec.status.progress
    if progress is None or progress.eta_seconds is None or rec.phase != "Running":
        return None
    updated = timestamp(progress.updated_at)
    return updated + int(progress.eta_seconds) if updated is not None else None


def to_openai(rec: JobRecord) -> FineTuningJob:
    hp = rec.hyperparameters
    st = rec.status
    extra = rec.annotation_json(ANNOTATION_OPENAI)
    hyper = JobHyperparameters(
        n_epochs=hp.epochs,
        batch_size=hp.batch_size,
        learning_rate_multiplier=round(hp.learning_rate / BASE_LEARNING_RATE, 6),
    )
    model_name = st.model.name if (st.phase == "Succeeded" and st.model) else None
    return FineTuningJob(
        id=rec.job_id,
        model=rec.model,
        created_at=int(rec.created_ts),
        finished_at=timestamp(st.completion_time) if st.phase in TERMINAL_PHASES else None,
        fine_tuned_model=model_name,
        organization_id=rec.namespace,
        result_files=[],
        status=openai_status(rec),
        validation_file=None,
        training_file=extra.get("training_file") or (rec.spec.get("dataset") or {}).get("url", ""),
        hyperparameters=hyper,
        trained_tokens=st.metrics.train_tokens if st.metrics else None,
        error=_error(rec),
        seed=hp.seed,
        estimated_finish=_estimated_finish(rec),
        metadata=extra.get("metadata"),
        method=_job_method(rec, hyper),
        user_provided_suffix=extra.get("suffix"),
    )


def _job_method(rec: JobRecord, hyper: JobHyperparameters) -> JobMethod:
    method = rec.spec.get("method") or {}
    if method.get("objective") == "dpo":
        beta = (method.get("dpo") or {}).get("beta", DEFAULT_BETA)
        return JobMethod(type="dpo", dpo={"hyperparameters": {**hyper.model_dump(), "beta": beta}})
    return JobMethod(supervised={"hyperparameters": hyper.model_dump()})


def _event_id(job_id: str, index: int, text: str) -> str:
    digest = hashlib.sha256(f"{job_id}\x00{index}\x00{text}".encode()).hexdigest()[:20]
    return f"ftevent-{digest}"


def openai_events(
    rec: JobRecord,
    rows: list[tuple[datetime | None, JobEventEntry]],
    series: MetricSeries | None = None,
) -> list[OpenAIEvent]:
    """Status transitions and Kubernetes events, and one `metrics` event per logged step of
    the job's metric history (without one: the latest progress); newest first."""
    events: list[OpenAIEvent] = []
    for index, (when, ev) in enumerate(rows):
        events.append(
            OpenAIEvent(
                id=_event_id(rec.job_id, index, ev.reason + ev.message),
                created_at=int(when.timestamp()) if when else int(rec.created_ts),
                level="warn" if ev.type == "Warning" else "info",
                message=f"{ev.reason}: {ev.message}" if ev.message else ev.reason,
            )
        )
    history = metrics_rows(rec, series) if series is not None else []
    for event_id, created, message, data in history:
        events.append(
            OpenAIEvent(
                id=event_id,
                created_at=created,
                level="info",
                message=message,
                data=data,
                type="metrics",
            )
        )
    progress = rec.status.progress
    if not history and progress is not None and progress.step:
        events.append(
            OpenAIEvent(
                id=_event_id(rec.job_id, len(rows), f"metrics{progress.step}"),
                created_at=timestamp(progress.updated_at) or int(rec.created_ts),
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
    # oldest first, stable (a status event and the step logged in the same second keep
    # their order), then newest first as OpenAI lists them
    events.sort(key=lambda e: e.created_at)
    events.reverse()
    return events


def final_checkpoints(rec: JobRecord, series: MetricSeries | None = None) -> list[Checkpoint]:
    """The stored model of a succeeded job (kubetune keeps resumable checkpoints internal),
    with the train and eval losses logged at its step."""
    st = rec.status
    if st.phase != "Succeeded" or st.model is None:
        return []
    step = st.progress.step if st.progress else 0
    if series is not None and series.train and not step:
        step = series.train[-1].step
    full_valid = st.metrics.eval_loss_after if st.metrics else None
    final_train = st.metrics.train_loss if st.metrics else None
    logged_train = train_loss_at(series, step) if series is not None else None
    logged_valid = valid_loss_at(series, step) if series is not None else None
    metrics = CheckpointMetrics(
        step=float(step),
        train_loss=logged_train if logged_train is not None else final_train,
        valid_loss=logged_valid if logged_valid is not None else full_valid,
        full_valid_loss=full_valid,
    )
    checkpoint = Checkpoint(
        id=f"ftckpt-{rec.name}-final",
        created_at=timestamp(st.model.created or st.completion_time) or int(rec.created_ts),
        fine_tuned_model_checkpoint=st.model.path or st.model.uri,
        fine_tuning_job_id=rec.job_id,
        metrics=metrics,
        step_number=step,
    )
    return [checkpoint]
