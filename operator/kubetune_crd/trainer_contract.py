"""The contract between the operator and the trainer container.

The operator passes a `TrainerRunConfig` (the FineTuneJob spec plus what it resolved) as
JSON in the `KUBETUNE_RUN_CONFIG` environment variable. The trainer answers through three
channels: its exit code (below), a `TrainerResult` JSON document written to the container's
termination message (`/dev/termination-log`), and `Progress` reports POSTed to the
operator's progress endpoint while it trains.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

from pydantic import Field

from kubetune_crd.base import CamelModel
from kubetune_crd.preflight import PreflightReport
from kubetune_crd.promotion import MAX_PROMPTS, PromotionOutcome
from kubetune_crd.spec import FineTuneJobSpec
from kubetune_crd.status import Metrics, ModelInfo, Sample
from kubetune_crd.tracking import TrackingReport

RUN_CONFIG_ENV = "KUBETUNE_RUN_CONFIG"
TERMINATION_ENV = "KUBETUNE_TERMINATION_MESSAGE_PATH"
"""Where a local run writes its termination message instead (default TERMINATION_MESSAGE_PATH)."""
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
PROGRESS_AUDIENCE = "kubetune-progress"


class ExitCode(IntEnum):
    """Trainer exit codes; the Job's podFailurePolicy and the operator act on them."""

    SUCCESS = 0
    """The model is stored and its manifest written."""
    UNKNOWN_ERROR = 1
    """An unexpected crash: retried up to spec.maxRetries."""
    BAD_INPUT = 42
    """Bad dataset or configuration: retrying cannot help, the Job fails at once."""
    RETRYABLE = 75
    """A transient failure (network, storage): retried, resuming from the last checkpoint."""
    PREEMPTED = 143
    """SIGTERM received; a checkpoint was saved. The next attempt resumes from it."""


class ChampionModel(CamelModel):
    """The alias's current model, which the challenger evaluates on its own held-out split."""

    alias: str | None = Field(default=None, description="The alias it is the current model of.")
    name: str = Field(description="Its model name (FineTunedModel).")
    path: str | None = Field(
        default=None,
        description=(
            "Its directory as the trainer pod sees it: absolute, or relative to the models "
            "volume mount (the claim-relative models/<name>)."
        ),
    )
    uri: str | None = Field(default=None, description="s3://bucket/prefix/<name> (S3 models).")
    format: str = Field(description="peft-lora, peft-lora+merged or safetensors.")
    base_model: str | None = Field(
        default=None, description="Base model of an adapter (default: the run's base model)."
    )


class TrainerRunConfig(CamelModel):
    """Everything the trainer needs, resolved by the operator."""

    job_name: str = Field(description="FineTuneJob name.")
    namespace: str = Field(description="FineTuneJob namespace.")
    uid: str | None = Field(default=None, description="FineTuneJob uid.")
    spec: FineTuneJobSpec
    base_model: str = Field(description="Resolved model id or local path of the base model.")
    base_model_alias: str | None = Field(default=None, description="Catalog alias, if any.")
    model_name: str = Field(description="Directory / prefix name of the output model.")
    data_root: str = Field(default="/data", description="Where relative dataset paths resolve.")
    output_dir: str | None = Field(
        default=None, description="Local models directory (PVC mount); the model goes under it."
    )
    output_uri: str | None = Field(
        default=None, description="s3://bucket/prefix; the model goes under it."
    )
    checkpoint_dir: str = Field(description="Where checkpoints of this job live (resumable).")
    model_cache_dir: str | None = Field(
        default=None,
        description=(
            "Shared model cache root for hf:// base models (each revision downloaded once); "
            "unset: a directory of this run only."
        ),
    )
    progress_url: str | None = Field(default=None, description="Operator progress endpoint.")
    progress_token_path: str | None = Field(
        default=None, description="Projected service-account token for the progress endpoint."
    )
    pointer_root: str | None = Field(
        default=None,
        description=(
            "Where alias pointers go (aliases/<alias>.json): the output claim's mount, or the "
            "S3 output prefix."
        ),
    )
    champion: ChampionModel | None = Field(
        default=None, description="The promotion alias's current model, to compare with."
    )


class TrainerResult(CamelModel):
    """The trainer's final word, written to the termination message (max 4 KiB)."""

    outcome: Literal["succeeded", "bad_input", "retryable", "preempted", "error"]
    message: str = Field(default="", max_length=2048)
    model: ModelInfo | None = None
    metrics: Metrics | None = None
    samples: list[Sample] = Field(default_factory=list, max_length=MAX_PROMPTS)
    promotion: PromotionOutcome | None = None
    tracking: TrackingReport | None = None
    validation: PreflightReport | None = None
    """`--validate-only`: the data report (rows, tokens, steps, ETA, memory estimate)."""
