"""The FineTuneJob spec: what a user asks for.

These pydantic models are the ONE source of truth for the spec. The CRD's OpenAPI schema is
generated from them (`make crds`), the API validates requests with them, the operator builds
Jobs from them and the trainer reads its configuration from them. Field descriptions become
`kubectl explain` text.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from kubetune_crd import names
from kubetune_crd.base import DNS_LABEL, CamelModel, SecretRef
from kubetune_crd.hub import (
    HUB_DATASET_PATTERN,
    HUB_MODEL_PATTERN,
    HubRefError,
    is_hub_ref,
    parse_hub_ref,
)
from kubetune_crd.method import (
    GPU_ONLY_METHODS,
    QLORA_FSDP_MESSAGE,
    MethodSpec,
    gpu_required_message,
)
from kubetune_crd.promotion import EvaluationSpec, PromotionSpec
from kubetune_crd.tracking import TrackingSpec

# Catalog alias (`phi`), Hub model (`hf://org/name[@revision]`), Hugging Face id
# (`microsoft/phi-2`) or a path on a mounted volume. The plain form may not start with `hf:`
# (spelled out for RE2, which has no look-ahead), so a malformed hf:// reference matches nothing.
_PLAIN_MODEL = (
    r"(?:[A-Za-gi-z0-9]|h(?:$|[A-Za-eg-z0-9._/:@+-])|hf(?:$|[A-Za-z0-9._/@+-]))"
    r"[A-Za-z0-9._/:@+-]*"
)
MODEL_REF = rf"^({HUB_MODEL_PATTERN}|{_PLAIN_MODEL})$"
DATASET_URL = (
    r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|https://[^\s]+|"
    rf"{HUB_DATASET_PATTERN}|[^\s:]+)$"
)
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
QUANTITY = r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"

DatasetFormat = Literal["auto", "csv", "jsonl"]


class DatasetSpec(CamelModel):
    """Where the training data is and which columns hold it."""

    url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2048,
            pattern=DATASET_URL,
            description=(
                "Dataset location: a path relative to the data volume (data/train.csv), "
                "an https:// URL, an s3://bucket/key URI, or a Hugging Face dataset "
                "hf://datasets/org/name[@revision][/path/in/repo] (no path: the repo's "
                "train split file)."
            ),
        ),
    ]
    format: DatasetFormat = Field(
        default="auto", description="File format; auto picks it from the file extension."
    )
    text_column: str = Field(
        default="text", min_length=1, max_length=128, description="Column holding raw text."
    )
    prompt_column: str = Field(
        default="prompt",
        min_length=1,
        max_length=128,
        description="Column holding the prompt of prompt/completion pairs.",
    )
    completion_column: str = Field(
        default="completion",
        min_length=1,
        max_length=128,
        description="Column holding the completion (the loss is computed on it only).",
    )
    chosen_column: str = Field(
        default="chosen",
        min_length=1,
        max_length=128,
        description="Column holding the preferred answer of a preference pair (objective dpo).",
    )
    rejected_column: str = Field(
        default="rejected",
        min_length=1,
        max_length=128,
        description="Column holding the dispreferred answer of a preference pair (objective dpo).",
    )
    messages_column: str = Field(
        default="messages",
        min_length=1,
        max_length=128,
        description="Column holding chat messages (rendered with the model's chat template).",
    )
    validation_split: float = Field(
        default=0.1,
        ge=0.0,
        le=0.5,
        description="Fraction of rows held out to measure eval loss before and after training.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and optionally "
            "AWS_ENDPOINT_URL, AWS_REGION) for an s3:// dataset."
        ),
    )

    @field_validator("url")
    @classmethod
    def _hub_dataset(cls, url: str) -> str:
        if is_hub_ref(url):
            try:
                parse_hub_ref(url, "dataset")
            except HubRefError as exc:
                raise ValueError(str(exc)) from None
        return url


class HyperparametersSpec(CamelModel):
    """Training hyperparameters (the original API's epochs, batch_size, learning_rate and more)."""

    epochs: int = Field(default=3, ge=1, le=20, description="Passes over the training data.")
    batch_size: int = Field(
        default=4, ge=1, le=16, description="Sequences per process per micro-step."
    )
    learning_rate: float = Field(default=2e-5, gt=0.0, le=1.0, description="Peak learning rate.")
    max_seq_length: int = Field(
        default=1024, ge=16, le=131072, description="Tokens per training sequence."
    )
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=1024, description="Micro-batches per optimizer step."
    )
    warmup_ratio: float = Field(
        default=0.03, ge=0.0, le=0.5, description="Fraction of steps with linear warm-up."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Random seed.")
    packing: bool = Field(
        default=True,
        description="Pack several examples into each sequence instead of padding.",
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Trade compute for memory on large models."
    )
    torch_compile: bool = Field(
        default=False,
        description=(
            "torch.compile each decoder layer (faster steps on a GPU after a compile of a "
            "minute or so; off by default)."
        ),
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    logging_steps: int = Field(
        default=10, ge=1, le=10000, description="Report progress every this many steps."
    )
    eval_steps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description=(
            "Also measure the held-out loss every this many steps (unset: only before and "
            "after training)."
        ),
    )


MAX_NODES = 16
"""Upper bound of `resources.nodes` (pods of one multi-node run)."""


class ResourcesSpec(CamelModel):
    """Compute the trainer asks for: per node (pod), and how many nodes."""

    gpus: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description=(
            "GPUs per node; one training process runs on each (0 runs one CPU process). "
            "Unset: the operator's default (KUBETUNE_TRAINER_DEFAULT_GPUS, 1 unless set)."
        ),
    )
    nodes: int = Field(
        default=1,
        ge=1,
        le=MAX_NODES,
        description=(
            "Pods (nodes) that train together; more than one needs shared output "
            "(a ReadWriteMany claim or S3) and Indexed Jobs (Kubernetes 1.21+)."
        ),
    )
    cpu: str | None = Field(
        default=None,
        pattern=QUANTITY,
        description="CPU request and limit per node, e.g. 8 or 4500m; unset: the operator default.",
    )
    memory: str | None = Field(
        default=None,
        pattern=QUANTITY,
        description="Memory request and limit per node, e.g. 32Gi; unset: the operator's default.",
    )


Strategy = Literal["auto", "ddp", "fsdp"]


class DistributedSpec(CamelModel):
    """How several training processes share the work (PyTorch's own engine, via torchrun)."""

    strategy: Strategy = Field(
        default="auto",
        description=(
            "ddp (a full replica per process), fsdp (FSDP2: parameters, gradients and "
            "optimizer state sharded across processes) or auto (ddp for lora, fsdp for full)."
        ),
    )


class Toleration(CamelModel):
    """A core/v1 Toleration for the trainer pod."""

    key: str | None = Field(default=None, max_length=316, description="Taint key.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Operator.")
    value: str | None = Field(default=None, max_length=63, description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect."
    )
    toleration_seconds: int | None = Field(default=None, description="For NoExecute taints.")


class SchedulingSpec(CamelModel):
    """Where and when the trainer pod may run."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the trainer pod requires."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations for GPU node taints."
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, description="PriorityClass of the trainer pod."
    )
    queue_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="Kueue LocalQueue; the Job is created suspended for Kueue to admit.",
    )


class PvcOutput(CamelModel):
    """Store the model on a PersistentVolumeClaim."""

    claim_name: str = Field(pattern=DNS_LABEL, max_length=253, description="Claim name.")
    path: str = Field(
        default="models",
        max_length=512,
        pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
        description="Directory inside the claim that holds models (no '..').",
    )


class S3Output(CamelModel):
    """Store the model under an S3 prefix."""

    uri: str = Field(pattern=S3_URI, max_length=1024, description="s3://bucket/prefix for models.")
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
    )
    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=512,
        description="S3-compatible endpoint (MinIO, Ceph); empty for AWS.",
    )
    region: str | None = Field(default=None, max_length=64, description="Bucket region.")


class OutputSpec(CamelModel):
    """Where the fine-tuned model goes: exactly one of pvc or s3."""

    model_name: str | None = Field(
        default=None,
        pattern=names.MODEL_NAME_PATTERN,
        description="Directory name of the model; default <model>-finetuned-<job name>.",
    )
    pvc: PvcOutput | None = Field(default=None, description="PersistentVolumeClaim output.")
    s3: S3Output | None = Field(default=None, description="S3 output.")

    @model_validator(mode="after")
    def _exactly_one_target(self) -> OutputSpec:
        if (self.pvc is None) == (self.s3 is None):
            raise ValueError("output needs exactly one of pvc or s3")
        return self


class CheckpointSpec(CamelModel):
    """How often training state is saved so a restarted pod resumes instead of starting over."""

    every_steps: int = Field(
        default=200, ge=0, le=1_000_000, description="Save every N steps (0: only on SIGTERM)."
    )
    keep: int = Field(default=2, ge=1, le=100, description="Complete checkpoints to keep.")


class HubSpec(CamelModel):
    """Access to the Hugging Face Hub for hf:// models and datasets."""

    token_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            f"Secret whose {names.HF_TOKEN_SECRET_KEY} key holds a Hugging Face token (gated "
            "or private repos); it reaches the trainer as an environment variable only."
        ),
    )


class FineTuneJobSpec(CamelModel):
    """A request to fine-tune a language model on a dataset."""

    model: str = Field(
        min_length=1,
        max_length=256,
        pattern=MODEL_REF,
        description=(
            "Catalog alias (phi, mistral, tiny...), a Hub model hf://org/name[@revision] "
            "(downloaded once into the shared model cache, its commit pinned in the model's "
            "manifest), a Hugging Face model id, or a path."
        ),
    )
    dataset: DatasetSpec = Field(description="The training data.")
    method: MethodSpec = Field(default_factory=MethodSpec, description="lora or full.")
    hyperparameters: HyperparametersSpec = Field(
        default_factory=HyperparametersSpec, description="Training hyperparameters."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="GPUs, nodes, CPU and memory for the trainer."
    )
    distributed: DistributedSpec = Field(
        default_factory=DistributedSpec,
        description="How the processes of a multi-GPU or multi-node run share the work.",
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="Node selection, tolerations, priority, queue."
    )
    output: OutputSpec | None = Field(
        default=None, description="Where the model is stored; default: the operator's models PVC."
    )
    checkpoint: CheckpointSpec = Field(
        default_factory=CheckpointSpec, description="Checkpoint interval and retention."
    )
    evaluation: EvaluationSpec | None = Field(
        default=None, description="Prompts answered by the base and the fine-tuned model."
    )
    promotion: PromotionSpec | None = Field(
        default=None, description="Promote the model to an alias (the model in use)."
    )
    tracking: TrackingSpec | None = Field(
        default=None, description="Experiment tracking: MLflow, TensorBoard event files."
    )
    hub: HubSpec | None = Field(
        default=None, description="Hugging Face Hub access (a token Secret) for hf:// sources."
    )
    deadline_seconds: int = Field(
        default=86400,
        ge=60,
        le=30 * 86400,
        description="Wall-clock limit for the whole job (activeDeadlineSeconds).",
    )
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries after a retryable failure (backoffLimit)."
    )
    cancel: bool = Field(
        default=False,
        description="Set to true to stop the job; the resource is kept with phase Cancelled.",
    )

    @field_validator("model")
    @classmethod
    def _hub_model(cls, model: str) -> str:
        if is_hub_ref(model):
            try:
                parse_hub_ref(model, "model")
            except HubRefError as exc:
                raise ValueError(str(exc)) from None
        return model

    @model_validator(mode="after")
    def _gpu_methods_have_gpus(self) -> FineTuneJobSpec:
        """qlora with `resources.gpus: 0` can never run, nor sharded by FSDP: refused here,
        naming the field (unset gpus are the operator's default: it refuses them when that
        default is 0)."""
        if self.method.type in GPU_ONLY_METHODS and self.resources.gpus == 0:
            _refuse(self, ("method", "type"), gpu_required_message(self.method.type))
        if self.method.type == "qlora" and self.distributed.strategy == "fsdp":
            _refuse(self, ("distributed", "strategy"), QLORA_FSDP_MESSAGE)
        return self


def _refuse(model: CamelModel, loc: tuple[str, ...], message: str) -> None:
    """A validation error located at `loc` (a model validator's own would have no location)."""
    detail = InitErrorDetails(
        type=PydanticCustomError("unsupported_combination", "{message}", {"message": message}),
        loc=loc,
        input=model.model_dump(by_alias=True).get(loc[0], {}).get(loc[1]),
    )
    raise ValidationError.from_exception_data(type(model).__name__, [detail])
