"""The FineTuneJob status: what the operator (and the trainer's progress reports) observed.

Written only through the status subresource. The operator derives it with a pure function
from the Job, its pods and events; the API reports it as is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubetune_crd.base import StatusModel
from kubetune_crd.preflight import PreflightReport
from kubetune_crd.promotion import PromotionOutcome
from kubetune_crd.tracking import TrackingReport

Phase = Literal["Pending", "Validating", "Running", "Succeeded", "Failed", "Cancelled"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Cancelled"})

PendingReason = Literal[
    "Creating", "Unschedulable", "Queued", "ImagePull", "ContainerCreating", "WaitingForRetry"
]
# Condition types the operator maintains (metav1.Condition style, one entry per type).
CONDITION_VALIDATED = "Validated"
"""The CPU pre-flight: False (Validating) while it runs, True (Passed) or False (its failure)."""
CONDITION_JOB_CREATED = "JobCreated"
"""True once the batch/v1 Job exists (False with the reason while it cannot be created)."""
CONDITION_SCHEDULED = "Scheduled"
"""True once a trainer pod was placed; False with Unschedulable/Queued/ImagePull... before."""
CONDITION_RUNNING = "Running"
"""True while a trainer pod runs; False once it ended (reason: the outcome)."""
CONDITION_SUCCEEDED = "Succeeded"
"""True when the model is stored."""
CONDITION_FAILED = "Failed"
"""True when the job failed (reason: the classified FailureReason)."""
CONDITION_CANCELLED = "Cancelled"
"""True when spec.cancel stopped the job."""
CONDITION_TRACKING = "TrackingHealthy"
"""With spec.tracking: True when every tracker logged the run, False (TrackingFailed) when one
stopped; training goes on either way."""

FailureReason = Literal[
    "BadInput",
    "OutOfMemory",
    "ImagePull",
    "DeadlineExceeded",
    "Cancelled",
    "BackoffLimitExceeded",
    "Unknown",
]


class Condition(StatusModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(description="Condition type, e.g. Running, Succeeded, Failed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was set for."
    )


class PendingInfo(StatusModel):
    """Why the job is not running yet."""

    reason: PendingReason = Field(description="Unschedulable, Queued, ImagePull...")
    message: str = Field(default="", description="E.g. the scheduler's FailedScheduling message.")
    since: str | None = Field(default=None, description="When this reason was first seen.")


class Progress(StatusModel):
    """Live training progress, reported by the trainer."""

    fraction: float = Field(default=0.0, ge=0.0, le=1.0, description="0.0 to 1.0.")
    step: int = Field(default=0, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, ge=0.0, description="Fractional epoch.")
    loss: float | None = Field(default=None, description="Latest training loss.")
    learning_rate: float | None = Field(default=None, description="Current learning rate.")
    tokens_per_second: float | None = Field(default=None, description="Real (non-pad) tokens/s.")
    eta_seconds: float | None = Field(default=None, ge=0.0, description="Estimated time left.")
    stage: str | None = Field(
        default=None, description="loading, validating, training, evaluating, saving."
    )
    updated_at: str | None = Field(default=None, description="When the trainer reported this.")


class Metrics(StatusModel):
    """Held-out evaluation before and after fine-tuning (the seed's compare before/after)."""

    train_loss: float | None = Field(default=None, description="Final training loss.")
    eval_loss_before: float | None = Field(default=None, description="Eval loss of the base model.")
    eval_loss_after: float | None = Field(default=None, description="Eval loss after training.")
    perplexity_before: float | None = Field(default=None, description="exp(eval_loss_before).")
    perplexity_after: float | None = Field(default=None, description="exp(eval_loss_after).")
    train_rows: int | None = Field(default=None, description="Training rows used.")
    eval_rows: int | None = Field(default=None, description="Held-out rows.")
    train_tokens: int | None = Field(default=None, description="Real tokens trained on.")
    bits_per_byte_before: float | None = Field(
        default=None,
        description=(
            "Held-out bits per byte of the base model: summed token NLL / ln 2 / UTF-8 bytes of "
            "the held-out target text (comparable across tokenizers)."
        ),
    )
    bits_per_byte_after: float | None = Field(
        default=None, description="Held-out bits per byte of the fine-tuned model."
    )
    champion_bits_per_byte: float | None = Field(
        default=None,
        description="Bits per byte of the alias's current model on this job's held-out text.",
    )
    eval_bytes: int | None = Field(
        default=None, description="UTF-8 bytes of the held-out target text bits per byte uses."
    )
    eval_reward_margin_before: float | None = Field(
        default=None,
        description=(
            "DPO: mean implicit reward margin (chosen minus rejected, beta x log-ratio to the "
            "reference) on the held-out pairs before training (0: the model is the reference)."
        ),
    )
    eval_reward_margin_after: float | None = Field(
        default=None, description="DPO: mean held-out reward margin after training."
    )
    eval_reward_accuracy_before: float | None = Field(
        default=None,
        description="DPO: fraction of held-out pairs whose chosen answer out-rewards the rejected.",
    )
    eval_reward_accuracy_after: float | None = Field(
        default=None, description="DPO: held-out reward accuracy after training."
    )


class Sample(StatusModel):
    """One evaluation prompt answered by the base model and by the fine-tuned model."""

    prompt: str = Field(description="The prompt (spec.evaluation.prompts).")
    before: str | None = Field(default=None, description="The base model's answer.")
    after: str | None = Field(default=None, description="The fine-tuned model's answer.")


MODEL_FILES_MAX = 64
"""Files a ModelInfo lists at most (a LoRA adapter has about ten, a merged copy twenty more);
past it the list is left out and `manifestSha256` still covers every file."""
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class ModelFile(StatusModel):
    """One file of the stored model, as the model manifest (kubetune-model.json) lists it."""

    path: str = Field(max_length=512, description="POSIX path relative to the model.")
    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of its bytes (hex).")
    size: int = Field(ge=0, description="Bytes.")


class ModelInfo(StatusModel):
    """The stored model."""

    name: str = Field(description="Model directory name, e.g. phi-finetuned-20240115_103045.")
    path: str | None = Field(default=None, description="Path inside the models PVC.")
    uri: str = Field(description="pvc://claim/path or s3://bucket/prefix of the model.")
    size_bytes: int | None = Field(default=None, ge=0, description="Total size of the files.")
    format: str | None = Field(
        default=None, description="safetensors (full) or peft-lora (adapter), +merged."
    )
    base_model: str = Field(description="Resolved base model id or path.")
    base_model_alias: str | None = Field(default=None, description="Catalog alias asked for.")
    created: str | None = Field(default=None, description="When the model was written.")
    dataset_sha256: str | None = Field(
        default=None, description="sha256 of the training data it was trained on (lineage)."
    )
    files: list[ModelFile] | None = Field(
        default=None,
        max_length=MODEL_FILES_MAX,
        description=(
            "The model's files with their sha256, from its manifest; absent when there are "
            f"more than {MODEL_FILES_MAX} or the termination message had no room for them."
        ),
    )
    manifest_sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="sha256 of the model's kubetune-model.json, which lists every file's sha256.",
    )
    base_model_revision: str | None = Field(
        default=None, description="Commit of an hf:// base model the run used (pinned)."
    )
    base_model_cache: Literal["hit", "miss"] | None = Field(
        default=None,
        description=(
            "hf:// base model: hit (taken from the shared model cache) or miss (downloaded "
            "into it by this run)."
        ),
    )
    dataset_revision: str | None = Field(
        default=None, description="Commit of an hf:// dataset the run used (pinned)."
    )


class FailureInfo(StatusModel):
    """Why the job failed, classified."""

    reason: FailureReason = Field(description="BadInput, OutOfMemory, ImagePull, Deadline...")
    message: str = Field(default="", max_length=4096, description="Short, secret-free message.")
    exit_code: int | None = Field(default=None, description="Trainer container exit code.")


class FineTuneJobStatus(StatusModel):
    """Observed state of a FineTuneJob."""

    phase: Phase | None = Field(default=None, description="Pending, Running, Succeeded...")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation last acted on."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Latest conditions.")
    job_name: str | None = Field(default=None, description="The batch/v1 Job running it.")
    start_time: str | None = Field(default=None, description="When the trainer first ran.")
    completion_time: str | None = Field(default=None, description="When it reached an end.")
    attempts: int = Field(
        default=0, ge=0, description="Attempts so far (a multi-node gang restart counts once)."
    )
    world_size: int | None = Field(
        default=None, ge=1, description="Training processes in the run (nodes x per node)."
    )
    effective_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Sequences per optimizer step: batchSize x gradient accumulation x worldSize.",
    )
    last_pod: str | None = Field(
        default=None,
        description="Trainer pod of the latest attempt (counts attempts whose pod vanished).",
    )
    pending: PendingInfo | None = Field(default=None, description="Why it is not running yet.")
    preflight: PreflightReport | None = Field(
        default=None, description="The CPU pre-flight: dataset check, ETA, GPU memory estimate."
    )
    progress: Progress | None = Field(default=None, description="Live progress.")
    metrics: Metrics | None = Field(default=None, description="Eval loss before and after.")
    model: ModelInfo | None = Field(default=None, description="The model, once stored.")
    samples: list[Sample] = Field(
        default_factory=list,
        description="Answers to spec.evaluation.prompts before and after (may be shortened).",
    )
    promotion: PromotionOutcome | None = Field(
        default=None, description="The spec.promotion decision, once made."
    )
    tracking: TrackingReport | None = Field(
        default=None, description="The MLflow run and TensorBoard files (spec.tracking)."
    )
    failure: FailureInfo | None = Field(default=None, description="Why it failed.")
    message: str | None = Field(default=None, description="One line for humans.")
