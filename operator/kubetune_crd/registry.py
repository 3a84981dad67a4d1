"""The model registry's resources: FineTunedModel (one stored model) and ModelAlias (a stable
name for "the model in use").

A FineTunedModel is written by the operator when a FineTuneJob stores its model. It has no
owner reference: deleting the job keeps the record (and deleting the record never touches the
model's files), so `/api/finetune/models` lists what exists, not which jobs are left. Its name
is the FineTuneJob's name (a DNS subdomain; model directory names may not be one), in the
job's namespace (the tenant's).

A ModelAlias (named like the alias, e.g. `frigo`) keeps in its status the alias's current
model and the history of every decision with both figures; the pointer file serving reads
is written by `kubetune_trainer.publish`, the one pointer writer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kubetune_crd.base import CamelModel, StatusModel, StoredObject
from kubetune_crd.names import DNS_SUBDOMAIN_PATTERN, MODEL_NAME_PATTERN
from kubetune_crd.promotion import PromotionOutcome
from kubetune_crd.resource import API_VERSION
from kubetune_crd.spec import HyperparametersSpec
from kubetune_crd.status import Metrics, ModelInfo, Sample

MODEL_KIND = "FineTunedModel"
MODEL_PLURAL = "finetunedmodels"
MODEL_SINGULAR = "finetunedmodel"
MODEL_SHORT_NAMES = ["ftm"]
ALIAS_KIND = "ModelAlias"
ALIAS_PLURAL = "modelaliases"
ALIAS_SINGULAR = "modelalias"
ALIAS_SHORT_NAMES = ["mal"]
HISTORY_MAX = 50
"""Decisions an alias keeps (oldest dropped first)."""


class DatasetRecord(CamelModel):
    """The data a model was trained and evaluated on: models compare only on the same."""

    url: str = Field(description="spec.dataset.url of the job.")
    sha256: str | None = Field(default=None, description="sha256 of the dataset file.")
    validation_split: float = Field(description="Held-out fraction.")
    seed: int = Field(description="Seed of the split.")


class FineTunedModelSpec(CamelModel):
    """One stored model and where it came from."""

    job: str = Field(description="The FineTuneJob that trained it.")
    job_uid: str | None = Field(default=None, description="That job's uid.")
    method: str = Field(description="lora, qlora or full (the FineTuneJob's method.type).")
    model: ModelInfo = Field(description="Location, format, base model, size.")
    dataset: DatasetRecord = Field(description="Training data and held-out split.")
    hyperparameters: HyperparametersSpec = Field(description="Hyperparameters used.")
    metrics: Metrics | None = Field(default=None, description="Eval figures before and after.")
    samples: list[Sample] = Field(default_factory=list, description="Answers before and after.")


class FineTunedModel(StoredObject):
    """A record: written once by the operator, no status (the aliases naming it are read from
    the ModelAliases)."""

    api_version: str = Field(default=API_VERSION)
    kind: str = Field(default=MODEL_KIND)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FineTunedModelSpec


class AliasTarget(StatusModel):
    """The model an alias names."""

    model: str = Field(description="Model name, as /api/finetune/models lists it.")
    record: str | None = Field(default=None, description="Its FineTunedModel's name.")
    path: str | None = Field(default=None, description="Path inside the models PVC.")
    uri: str | None = Field(default=None, description="pvc:// or s3:// location.")
    format: str | None = Field(default=None, description="peft-lora, +merged or safetensors.")
    base_model: str | None = Field(default=None, description="Base model of an adapter.")
    bits_per_byte: float | None = Field(default=None, description="Its held-out bits per byte.")
    version: int | None = Field(default=None, description="Pointer version naming it.")


AliasAction = Literal["promote", "rollback"]
ALIAS_ACTIONS: tuple[AliasAction, ...] = ("promote", "rollback")


class AliasRequest(CamelModel):
    """A manual promotion or a rollback, asked for through the API; the operator publishes
    the pointer (a short Job running the one pointer writer) and records the decision."""

    id: str = Field(
        pattern=r"^[a-z0-9]{8,32}$", description="Unique per request; status.observedRequest."
    )
    action: AliasAction = Field(description="promote (a named model) or rollback.")
    model: str = Field(
        pattern=MODEL_NAME_PATTERN, max_length=128, description="The model the alias will name."
    )
    record: str = Field(
        pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="Its FineTunedModel's name."
    )
    time: str | None = Field(default=None, description="When it was asked for (RFC 3339).")


class ModelAliasSpec(CamelModel):
    """Promotions come from FineTuneJobs' spec.promotion; `request` asks for a manual one."""

    description: str | None = Field(default=None, max_length=512, description="For humans.")
    request: AliasRequest | None = Field(
        default=None, description="The latest manual promotion or rollback asked for."
    )


class ModelAliasStatus(StatusModel):
    """The alias's current model and its decisions."""

    current: AliasTarget | None = Field(default=None, description="The model in use.")
    history: list[PromotionOutcome] = Field(
        default_factory=list, description=f"Decisions, oldest first (the last {HISTORY_MAX})."
    )
    observed_request: str | None = Field(
        default=None, description="The id of the last spec.request decided."
    )


class ModelAlias(StoredObject):
    api_version: str = Field(default=API_VERSION)
    kind: str = Field(default=ALIAS_KIND)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelAliasSpec = Field(default_factory=ModelAliasSpec)
    status: ModelAliasStatus = Field(default_factory=ModelAliasStatus)
