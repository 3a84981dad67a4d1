"""The operator's settings: one typed object read from `KUBETUNE_*` environment variables.

Every knob of the operator lives here (and nowhere else reads the environment), so the Helm
chart, `make dev-up` and the tests configure it the same way. Lists are JSON
(`KUBETUNE_TRAINER_COMMAND='["python", "fake_trainer.py"]'`, `KUBETUNE_NAMESPACES='["a","b"]'`).
"""

from __future__ import annotations

from typing import Any, Literal

from kubetune_crd.base import DNS_LABEL
from kubetune_crd.spec import QUANTITY, Toleration
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Toggle = Literal["auto", "true", "false"]


class OperatorSettings(BaseSettings):
    """What the operator needs to know about its environment; see each field's description."""

    model_config = SettingsConfigDict(env_prefix="KUBETUNE_", extra="ignore")

    # --- the trainer pod -------------------------------------------------------------------
    trainer_image: str = Field(
        default="ghcr.io/kubetune/trainer:0.1.0", description="Trainer container image."
    )
    trainer_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    trainer_command: list[str] = Field(
        default_factory=lambda: ["kubetune-trainer"],
        description="Container command (tests point it at a stand-in trainer script).",
    )
    trainer_args: list[str] = Field(default_factory=list, description="Container args.")
    trainer_service_account: str | None = Field(
        default=None,
        description="ServiceAccount of trainer pods (its API token is never mounted).",
    )
    trainer_uid: int = Field(default=1000, ge=1, description="runAsUser/runAsGroup/fsGroup.")
    termination_grace_seconds: int = Field(
        default=120, ge=0, description="Time the trainer gets to checkpoint on SIGTERM."
    )
    image_pull_grace_seconds: int = Field(
        default=600,
        ge=0,
        description="An image that cannot be pulled for this long fails the job (ImagePull).",
    )
    max_backoff_limit: int = Field(
        default=10, ge=0, description="Upper bound for the Job's backoffLimit (spec.maxRetries)."
    )

    # --- trainer pod defaults (a FineTuneJob's own spec wins over each of these) ------------
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu",
        min_length=1,
        description="Extended resource a GPU is requested as (nvidia.com/gpu, amd.com/gpu...).",
    )
    trainer_default_gpus: int = Field(
        default=1,
        ge=0,
        le=64,
        description=(
            "GPUs of a FineTuneJob whose stored spec has no resources.gpus (the CRD gives that "
            "field no default so the operator can tell; objects stored by an older CRD that "
            "defaulted it to 1 keep their 1)."
        ),
    )
    trainer_default_cpu: str | None = Field(
        default=None,
        pattern=QUANTITY,
        description="CPU request = limit when spec.resources.cpu is unset.",
    )
    trainer_default_memory: str | None = Field(
        default=None,
        pattern=QUANTITY,
        description="Memory request = limit when spec.resources.memory is unset.",
    )
    trainer_node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels every trainer pod requires (JSON); the spec's win per key.",
    )
    trainer_tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Tolerations (JSON list) every trainer pod gets, before the spec's own.",
    )
    default_queue_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="Kueue LocalQueue of a FineTuneJob that names none; unset: no queue.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description=(
            "AWS_ENDPOINT_URL given to trainers that use S3 when the spec names no endpoint "
            "(a credentials Secret's own AWS_ENDPOINT_URL key still wins)."
        ),
    )
    s3_region: str | None = Field(
        default=None,
        description="AWS_REGION likewise (the spec's region, then the Secret's key, win).",
    )

    # --- the Hugging Face Hub (hf:// models and datasets) ----------------------------------
    hf_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s?#@]+$",
        description=(
            "HF_ENDPOINT given to trainers (a Hub mirror); unset: huggingface.co. The trainer "
            "refuses it unless it resolves to public addresses (see hf_endpoint_allow_internal)."
        ),
    )
    hf_endpoint_allow_internal: bool = Field(
        default=False,
        description=(
            "Let the Hub endpoint be http:// on a loopback or private address (an in-cluster "
            "mirror; the local test cluster); link-local and metadata addresses stay refused."
        ),
    )
    model_cache_claim: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description=(
            "PVC (per namespace) of the shared model cache, mounted into trainers of hf:// "
            "models; unset: the cache lives on the models claim."
        ),
    )
    # --- the CPU pre-flight (preflight_builder.py) -----------------------------------------
    preflight: bool = Field(
        default=True,
        description=(
            "Run the trainer's --validate-only in a CPU Job (no GPU) before the training Job: "
            "a bad dataset or a model reference that does not resolve fails there."
        ),
    )
    preflight_cpu: str | None = Field(
        default="250m", pattern=QUANTITY, description="CPU request of the pre-flight pod."
    )
    preflight_memory: str | None = Field(
        default="512Mi", pattern=QUANTITY, description="Memory request of the pre-flight pod."
    )
    preflight_memory_limit: str | None = Field(
        default="4Gi", pattern=QUANTITY, description="Memory limit of the pre-flight pod."
    )
    preflight_deadline_seconds: int = Field(
        default=900, ge=1, description="activeDeadlineSeconds of the pre-flight Job."
    )
    preflight_hub_deadline_seconds: int = Field(
        default=7200,
        ge=1,
        description=(
            "activeDeadlineSeconds of the pre-flight Job of an hf:// base model: it downloads "
            "the model into the shared model cache (15 GB for a 7B model) or waits for another "
            "job's download of it (the trainer's cache lock waits up to 7200 s)."
        ),
    )
    preflight_retries: int = Field(
        default=1, ge=0, le=5, description="backoffLimit of the pre-flight Job (not bad input)."
    )
    gpu_memory_gib: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "Memory of one GPU in GiB; when set, a run whose estimated memory per process "
            "clearly exceeds it fails pre-flight with a suggestion of what would fit."
        ),
    )

    # --- volumes -----------------------------------------------------------------------------
    models_claim: str = Field(default="kubetune-models", description="Models PVC (per namespace).")
    data_claim: str = Field(
        default="kubetune-data", description="Datasets PVC (mounted read-only)."
    )
    catalog_file: str | None = Field(
        default=None, description="Model catalog YAML; the packaged default when unset."
    )

    # --- progress endpoint (see progress_server.py) --------------------------------------
    progress_enabled: bool = Field(default=True, description="Serve the progress endpoint.")
    progress_bind: str = Field(default="127.0.0.1", description="Progress server bind address.")
    progress_port: int = Field(default=8081, ge=0, le=65535, description="0 picks a free port.")
    progress_url: str | None = Field(
        default=None,
        description=(
            "Base URL trainers reach the endpoint at (e.g. http://kubetune-operator."
            "kubetune-system.svc:8081); default http://<bind>:<port>."
        ),
    )
    progress_min_interval: float = Field(
        default=2.0, ge=0.0, description="At most one progress status patch per job per interval."
    )
    metrics_flush_interval: float = Field(
        default=3.0,
        ge=0.0,
        description="At most one write of a job's metric history ConfigMap per interval.",
    )
    token_review_cache_seconds: float = Field(
        default=60.0, ge=0.0, description="How long an accepted token is trusted without review."
    )

    # --- the Job -----------------------------------------------------------------------------
    ttl_seconds_after_finished: int | None = Field(
        default=3600,
        ge=0,
        description="Set on the Job once the final status is copied; unset keeps finished Jobs.",
    )
    use_pod_failure_policy: Toggle = Field(
        default="auto", description="podFailurePolicy: auto = server >= 1.26."
    )
    use_suspend: Toggle = Field(default="auto", description="Job suspend for Kueue: auto >= 1.22.")
    use_indexed_jobs: Toggle = Field(
        default="auto",
        description=(
            "Indexed Jobs for multi-node runs: auto = server >= 1.22 (in 1.21 only behind "
            "the IndexedJob alpha gate); without them a multi-node FineTuneJob is refused."
        ),
    )
    gang_network_policy: bool = Field(
        default=False,
        description=(
            "Give each multi-node run a NetworkPolicy letting its pods reach each other (set "
            "where a NetworkPolicy isolates trainer pods, as the chart's does)."
        ),
    )

    # --- the controller ------------------------------------------------------------------
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty watches the whole cluster."
    )
    workers: int = Field(default=16, ge=1, le=256, description="Concurrent reconciles.")
    api_connections: int = Field(default=32, ge=1, description="HTTP connections to the API.")
    batch_seconds: float = Field(
        default=0.5,
        ge=0.0,
        description="Job/pod/Event changes wait this long so bursts become one reconcile.",
    )
    resync_seconds: float = Field(
        default=30.0, gt=0.0, description="Re-derive unfinished jobs at least this often."
    )
    schedule_check_seconds: float = Field(
        default=30.0,
        gt=0.0,
        description=(
            "Re-check each FineTuneSchedule at least this often, besides waking at its next "
            "slot (bounds how late a slot starts after a clock step or a lost timer)."
        ),
    )
    peering_name: str | None = Field(
        default=None,
        description="kopf peering name (needs kopf's peering CRDs); unset runs standalone.",
    )
    liveness_bind: str = Field(
        default="127.0.0.1", description="Address of the liveness and metrics server."
    )
    liveness_port: int | None = Field(
        default=8080,
        ge=0,
        le=65535,
        description="GET /healthz and GET /metrics (Prometheus); unset disables both.",
    )
    log_format: Literal["json", "plain"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    reporting_instance: str = Field(
        default="kubetune-operator", description="reportingInstance of Events."
    )

    @field_validator(
        "trainer_default_cpu",
        "trainer_default_memory",
        "preflight_cpu",
        "preflight_memory",
        "preflight_memory_limit",
        "gpu_memory_gib",
        "default_queue_name",
        "s3_endpoint_url",
        "s3_region",
        "hf_endpoint",
        "model_cache_claim",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """The chart renders unset values as "": treat them as unset."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("trainer_command")
    @classmethod
    def _command_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("trainer_command needs at least one element")
        return value

    def progress_base_url(self, bound_port: int | None = None) -> str | None:
        """The URL prefix trainers post to, or None when progress is off."""
        if not self.progress_enabled:
            return None
        if self.progress_url:
            return self.progress_url.rstrip("/")
        port = bound_port if bound_port is not None else self.progress_port
        host = "127.0.0.1" if self.progress_bind in ("0.0.0.0", "::", "") else self.progress_bind  # noqa: S104
        return f"http://{host}:{port}"
