"""Request and response bodies of `/api/finetune/*` (the seed's shapes, plus richer options).

Request fields mirror the FineTuneJob spec's fields (same defaults, ranges and patterns, read
from `kubetune_crd` rather than restated), so the API and the CRD cannot drift. Nested option
groups reuse the spec's own models (`lora`, `resources`, `scheduling`, `checkpoint`); they
accept snake_case or camelCase keys. Unknown fields are rejected (422 naming the field).
"""

from __future__ import annotations

from typing import Any, Literal

from kubetune_crd.spec import (
    DNS_LABEL,
    S3_URI,
    CheckpointSpec,
    DatasetFormat,
    DatasetSpec,
    FineTuneJobSpec,
    HyperparametersSpec,
    LoraSpec,
    Method,
    MethodSpec,
    OutputSpec,
    ResourcesSpec,
    SchedulingSpec,
)
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

_CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern", "multiple_of")


def mirror(
    model: type[BaseModel], name: str, *, required: bool = False, pattern: bool = True
) -> Any:
    """A Field with the spec field's default, description and constraints."""
    info: FieldInfo = model.model_fields[name]
    kwargs: dict[str, Any] = {}
    for meta in info.metadata:
        for attr in _CONSTRAINTS:
            value = getattr(meta, attr, None)
            if value is not None and (pattern or attr != "pattern"):
                kwargs[attr] = value
    if required:
        return Field(..., description=info.description, **kwargs)
    default = info.get_default(call_default_factory=True)
    return Field(default=default, description=info.description, **kwargs)


class StrictModel(BaseModel):
    """Unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StartRequest(StrictModel):
    """`POST /api/finetune/start`: the seed's five fields, then the resource's options."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"model": "tiny", "dataset_url": "data/frigo_training.csv"}]
        },
    )

    # The seed's fields
    model: str = mirror(FineTuneJobSpec, "model", required=True)
    dataset_url: str = mirror(DatasetSpec, "url", required=True, pattern=False)
    epochs: int = mirror(HyperparametersSpec, "epochs")
    batch_size: int = mirror(HyperparametersSpec, "batch_size")
    learning_rate: float = mirror(HyperparametersSpec, "learning_rate")

    # Dataset
    dataset_format: DatasetFormat = mirror(DatasetSpec, "format")
    text_column: str = mirror(DatasetSpec, "text_column")
    prompt_column: str = mirror(DatasetSpec, "prompt_column")
    completion_column: str = mirror(DatasetSpec, "completion_column")
    messages_column: str = mirror(DatasetSpec, "messages_column")
    validation_split: float = mirror(DatasetSpec, "validation_split")
    dataset_credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_LABEL,
        description="Secret (in your namespace) with S3 credentials for an s3:// dataset.",
    )

    # Method
    method: Method = mirror(MethodSpec, "type")
    lora: LoraSpec | None = Field(default=None, description="LoRA settings (method lora).")
    merge_adapter: bool = mirror(MethodSpec, "merge_adapter")

    # More hyperparameters
    max_seq_length: int = mirror(HyperparametersSpec, "max_seq_length")
    gradient_accumulation_steps: int = mirror(HyperparametersSpec, "gradient_accumulation_steps")
    warmup_ratio: float = mirror(HyperparametersSpec, "warmup_ratio")
    weight_decay: float = mirror(HyperparametersSpec, "weight_decay")
    seed: int = mirror(HyperparametersSpec, "seed")
    packing: bool = mirror(HyperparametersSpec, "packing")
    gradient_checkpointing: bool = mirror(HyperparametersSpec, "gradient_checkpointing")
    max_steps: int | None = mirror(HyperparametersSpec, "max_steps")
    logging_steps: int = mirror(HyperparametersSpec, "logging_steps")

    # Compute, scheduling, checkpoints, limits
    resources: ResourcesSpec | None = Field(default=None, description="GPUs, CPU, memory.")
    scheduling: SchedulingSpec | None = Field(default=None, description="Node placement.")
    checkpoint: CheckpointSpec | None = Field(default=None, description="Checkpointing.")
    deadline_seconds: int = mirror(FineTuneJobSpec, "deadline_seconds")
    max_retries: int = mirror(FineTuneJobSpec, "max_retries")

    # Output
    model_name: str | None = mirror(OutputSpec, "model_name")
    output_s3_uri: str | None = Field(
        default=None,
        pattern=S3_URI,
        max_length=1024,
        description="Store the model under this s3://bucket/prefix instead of the models PVC.",
    )
    output_s3_credentials_secret: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=253,
        description="Secret with the S3 credentials for the output.",
    )
    output_s3_region: str | None = Field(default=None, max_length=64, description="Bucket region.")


class LoraConfig(BaseModel):
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]


class ResourcesConfig(BaseModel):
    gpus: int
    cpu: str | None
    memory: str | None


class OutputConfig(BaseModel):
    model_name: str | None
    path: str | None = Field(description="models/<name> on the models PVC (PVC output).")
    uri: str | None = Field(description="s3://... (S3 output).")


class StartConfig(BaseModel):
    """The seed's `config` (model, dataset, epochs, batch_size, learning_rate), every default
    filled in, followed by the other options as stored."""

    model: str
    dataset: str
    epochs: int
    batch_size: int
    learning_rate: float
    dataset_format: str
    validation_split: float
    method: str
    lora: LoraConfig | None
    merge_adapter: bool
    max_seq_length: int
    gradient_accumulation_steps: int
    warmup_ratio: float
    weight_decay: float
    seed: int
    packing: bool
    max_steps: int | None
    resources: ResourcesConfig
    deadline_seconds: int
    max_retries: int
    output: OutputConfig


class StartResponse(BaseModel):
    status: Literal["started"] = "started"
    job_id: str = Field(examples=["ft_20240115_103045_abc123"])
    message: str
    config: StartConfig


SeedStatus = Literal["pending", "queued", "running", "completed", "failed", "cancelled"]


class JobStatus(BaseModel):
    """`GET /api/finetune/status/{job_id}`: the seed's four fields first."""

    job_id: str
    status: SeedStatus
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
    pending_reason: str | None = None
    pending_message: str | None = None
    failure_reason: str | None = None
    failure_message: str | None = None
    cancel_requested: bool = False
    created: str | None = None
    started: str | None = None
    finished: str | None = None
    metrics: dict[str, Any] | None = None


class ModelEntry(BaseModel):
    name: str
    base_model: str
    created: str | None
    size_mb: int
    latest: bool
    path: str


class ModelsResponse(BaseModel):
    models: list[ModelEntry]
    total: int


class JobsResponse(BaseModel):
    jobs: list[JobStatus]
    total: int
    limit: int
    offset: int


class CancelResponse(BaseModel):
    job_id: str
    status: SeedStatus
    message: str


class JobEvent(BaseModel):
    time: str | None
    type: str
    reason: str
    message: str
    object: str
    count: int = 1


class EventsResponse(BaseModel):
    job_id: str
    events: list[JobEvent]


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


class Problem(BaseModel):
    detail: str


def parameter_ranges() -> dict[str, ParameterInfo]:
    """The seed's parameter table, read from the request model's constraints."""
    out: dict[str, ParameterInfo] = {}
    for name in ("model", "dataset_url", "epochs", "batch_size", "learning_rate"):
        info = StartRequest.model_fields[name]
        lo: float | None = None
        hi: float | None = None
        for meta in info.metadata:
            lo = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else lo
            lo = getattr(meta, "gt", None) if getattr(meta, "gt", None) is not None else lo
            hi = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else hi
        default = None if info.is_required() else info.default
        kind = info.annotation.__name__ if isinstance(info.annotation, type) else "string"
        kind = {"str": "string", "int": "integer", "float": "number"}.get(kind, kind)
        out[name] = ParameterInfo(
            type=kind, default=default, minimum=lo, maximum=hi, description=info.description
        )
    return out


__all__ = [
    "CancelResponse",
    "EventsResponse",
    "InfoResponse",
    "JobEvent",
    "JobStatus",
    "JobsResponse",
    "ModelEntry",
    "ModelsResponse",
    "StartConfig",
    "StartRequest",
    "StartResponse",
    "parameter_ranges",
]
