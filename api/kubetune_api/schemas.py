"""Response bodies of `/api/finetune/*` (the original API's shapes, plus richer details).

The request (`request_fields.StartRequest`) and its `config` echo (`echo.StartConfig`) are
generated from the FineTuneJob contract; the answers here are the API's own.
"""

from __future__ import annotations

from typing import Any, Literal

from kubetune_crd.names import MODEL_NAME_PATTERN
from pydantic import BaseModel, ConfigDict, Field

from kubetune_api.echo import StartConfig
from kubetune_api.request_fields import ORIGINAL_HYPERPARAMETERS, StartRequest, constraints


class StartResponse(BaseModel):
    status: Literal["started"] = "started"
    job_id: str = Field(examples=["ft_20240115_103045_abc123"])
    message: str
    config: StartConfig


OriginalStatus = Literal["pending", "queued", "running", "completed", "failed", "cancelled"]


class SampleAnswer(BaseModel):
    """One evaluation prompt with the base model's and the fine-tuned model's answer."""

    prompt: str
    before: str | None = None
    after: str | None = None


class AliasDecision(BaseModel):
    """One promotion decision, with both figures."""

    alias: str
    policy: str
    promoted: bool
    reason: str = ""
    model: str
    previous: str | None = None
    challenger_bits_per_byte: float | None = None
    champion_bits_per_byte: float | None = None
    version: int | None = None
    time: str | None = None


class JobStatus(BaseModel):
    """`GET /api/finetune/status/{job_id}`: the original API's four fields first."""

    job_id: str
    status: OriginalStatus
    progress: float = Field(ge=0.0, le=1.0)
    model_path: str | None
    model: str | None = Field(default=None, description="The model asked for (alias).")
    phase: str | None = None
    message: str | None = None
    stage: str | None = None
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    eta_seconds: float | None = None
    world_size: int | None = Field(
        default=None, description="Training processes in the run (once the operator knows)."
    )
    effective_batch_size: int | None = Field(
        default=None,
        description="Sequences per optimizer step: batch_size x gradient_accumulation_steps x "
        "world_size.",
    )
    pending_reason: str | None = None
    pending_message: str | None = None
    failure_reason: str | None = None
    failure_message: str | None = None
    cancel_requested: bool = False
    created: str | None = None
    started: str | None = None
    finished: str | None = None
    metrics: dict[str, Any] | None = None
    samples: list[SampleAnswer] = Field(
        default_factory=list,
        description="spec.evaluation.prompts answered by the base and the fine-tuned model.",
    )
    promotion: AliasDecision | None = Field(
        default=None, description="spec.promotion's decision, once the run ended."
    )


class ModelEntry(BaseModel):
    """One model of `GET /api/finetune/models`: the original API's fields (name, base_model,
    created, size_mb, latest, path), then the registry's figures, read from its record (so
    they outlive the job) or, for a model without one, from its job's status."""

    name: str
    base_model: str
    created: str | None
    size_mb: int
    latest: bool
    path: str
    job_id: str | None = Field(
        default=None, description="The job that trained it (the API's job id; may be deleted)."
    )
    metrics: dict[str, Any] | None = Field(
        default=None,
        description="Eval loss, perplexity and held-out bits per byte before and after.",
    )


class ModelsResponse(BaseModel):
    models: list[ModelEntry]
    total: int


class OpenAIModel(BaseModel):
    """`GET /v1/models/{model}`: one registry model in OpenAI's shape."""

    id: str = Field(description="The model's name, as /api/finetune/models lists it.")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix seconds when it was written.")
    owned_by: str = Field(description="The tenant (its namespace).")


class OpenAIModelList(BaseModel):
    """`GET /v1/models`: the tenant's registry models, newest first."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class ModelDetail(ModelEntry):
    """`GET /api/finetune/models/{name}`: the list entry with its lineage."""

    aliases: list[str] = Field(default_factory=list, description="Aliases naming it now.")
    uri: str | None = None
    format: str | None = None
    method: str | None = None
    job: str | None = Field(default=None, description="The FineTuneJob that trained it.")
    dataset: dict[str, Any] | None = Field(
        default=None, description="url, sha256, validation_split, seed."
    )
    hyperparameters: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    samples: list[SampleAnswer] = Field(default_factory=list)
    files: list[dict[str, Any]] | None = Field(
        default=None, description="path, sha256, size of each file (from its manifest)."
    )
    manifest_sha256: str | None = Field(
        default=None, description="sha256 of its kubetune-model.json (lists every file)."
    )


class CompareEntry(BaseModel):
    rank: int
    name: str
    base_model: str
    bits_per_byte: float | None = Field(description="Held-out bits per byte (lower is better).")
    bits_per_byte_before: float | None = None
    eval_loss: float | None = Field(default=None, description="Per token: not comparable.")
    job: str | None = None


class CompareResponse(BaseModel):
    """Models trained on the same data and split, ranked by held-out bits per byte."""

    dataset: dict[str, Any]
    models: list[CompareEntry]
    total: int


class PendingRequest(BaseModel):
    """A manual promotion or rollback the operator has not carried out yet."""

    id: str
    action: str
    model: str
    time: str | None = None


class PromoteRequest(BaseModel):
    """`POST /api/finetune/aliases/{alias}/promote`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        pattern=MODEL_NAME_PATTERN, max_length=128, description="A model /models lists."
    )


class AliasSummary(BaseModel):
    """One alias of `GET /api/finetune/aliases`: its current model and its last decision."""

    alias: str
    model: str | None = Field(description="The current model's name (as /models lists it).")
    path: str | None = Field(description="Its path on the models volume (or its S3 URI).")
    uri: str | None = None
    version: int | None = Field(default=None, description="The pointer's version.")
    bits_per_byte: float | None = None
    last_decision: AliasDecision | None = Field(
        default=None, description="The newest decision (promoted or kept), if any."
    )
    pending: PendingRequest | None = Field(
        default=None, description="A promote or rollback asked for and not carried out yet."
    )


class AliasesResponse(BaseModel):
    """`GET /api/finetune/aliases`: the tenant's aliases, by name."""

    aliases: list[AliasSummary]
    total: int


class AliasView(AliasSummary):
    """`GET /api/finetune/aliases/{alias}`: the summary and every decision."""

    history: list[AliasDecision] = Field(default_factory=list, description="Oldest first.")


class JobsResponse(BaseModel):
    jobs: list[JobStatus]
    total: int
    limit: int
    offset: int


class CancelResponse(BaseModel):
    job_id: str
    status: OriginalStatus
    message: str


class JobEventEntry(BaseModel):
    """One Kubernetes event or status transition of a job."""

    time: str | None
    type: str
    reason: str
    message: str
    object: str
    count: int = 1


class EventsResponse(BaseModel):
    job_id: str
    events: list[JobEventEntry]


class ParameterInfo(BaseModel):
    type: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    description: str | None = None


class CatalogModelInfo(BaseModel):
    description: str
    parameters: str | None


class InfoResponse(BaseModel):
    available: bool
    supported_models: list[str]
    supported_formats: list[str]
    endpoints: dict[str, str]
    parameters: dict[str, ParameterInfo]
    models: dict[str, CatalogModelInfo]


def parameter_ranges() -> dict[str, ParameterInfo]:
    """The original API's parameter table, read from the request model's constraints."""
    out: dict[str, ParameterInfo] = {}
    for name in ("model", "dataset_url", *ORIGINAL_HYPERPARAMETERS):
        info = StartRequest.model_fields[name]
        bounds = constraints(info)
        default = None if info.is_required() else info.default
        kind = info.annotation.__name__ if isinstance(info.annotation, type) else "string"
        kind = {"str": "string", "int": "integer", "float": "number"}.get(kind, kind)
        out[name] = ParameterInfo(
            type=kind,
            default=default,
            minimum=bounds.get("gt", bounds.get("ge")),
            maximum=bounds.get("le"),
            description=info.description,
        )
    return out


__all__ = [
    "CancelResponse",
    "EventsResponse",
    "InfoResponse",
    "JobEventEntry",
    "JobStatus",
    "JobsResponse",
    "ModelEntry",
    "ModelsResponse",
    "StartResponse",
    "parameter_ranges",
]
