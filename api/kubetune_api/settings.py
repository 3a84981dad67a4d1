"""API settings: environment variables `KUBETUNE_API_*` (a few shared ones `KUBETUNE_*`).

Every field reads `KUBETUNE_API_<FIELD>`; the ones shared with the operator (catalog file,
models claim, data root) also read `KUBETUNE_<FIELD>` when the API-specific name is unset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from kubetune_crd.names import DATA_MOUNT, DEFAULT_MODELS_CLAIM, DEFAULT_MODELS_PATH
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _shared(name: str) -> AliasChoices:
    return AliasChoices(f"KUBETUNE_API_{name}", f"KUBETUNE_{name}")


class Settings(BaseSettings):
    """Everything the API reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="KUBETUNE_API_", extra="ignore", populate_by_name=True
    )

    # Serving
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=5002, ge=0, le=65535, description="Port to bind (0: any free).")
    log_level: str = Field(default="INFO", description="Python log level.")
    access_log: bool = Field(default=True, description="One JSON log line per request.")
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Request bodies larger than this get 413."
    )

    # Kubernetes
    kubeconfig: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KUBETUNE_API_KUBECONFIG", "KUBECONFIG"),
        description="Kubeconfig file; unset: in-cluster config, then ~/.kube/config.",
    )
    namespace: str = Field(
        default="default",
        description="Tenant namespace used when authentication is disabled.",
    )
    watch_all_namespaces: bool | None = Field(
        default=None,
        description=(
            "Watch FineTuneJobs cluster-wide (needs a ClusterRole). Unset: cluster-wide when "
            "authentication is on, only `namespace` when it is off."
        ),
    )
    read_mode: Literal["cache", "direct"] = Field(
        default="cache",
        description="cache: reads from the watch-backed cache; direct: one apiserver GET per "
        "read (only for benchmarks and debugging).",
    )
    cache_sync_timeout_seconds: float = Field(default=30.0, gt=0)
    watch_timeout_seconds: int = Field(
        default=60,
        ge=10,
        description="Server-side timeout of one watch request; a watch silent for 15 s "
        "longer counts as lost.",
    )
    cache_max_staleness_seconds: float = Field(
        default=60.0,
        ge=0,
        description="While the watch is down, cached reads are answered for this long after "
        "the apiserver last answered, then 503 (and /readyz reports not ready).",
    )
    retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After of the 503 answers (apiserver unreachable)."
    )
    client_pool_size: int = Field(
        default=32, ge=1, description="HTTP connections to the apiserver."
    )

    # Authentication
    auth_disabled: bool = Field(
        default=False,
        description="Turn authentication off (local development only): every request acts on "
        "`namespace`.",
    )
    api_keys_secret: str = Field(
        default="kubetune-api-keys",
        description="Secret whose entries map sha256(api key) (hex) to a tenant namespace.",
    )
    api_keys_namespace: str | None = Field(
        default=None,
        description="Namespace of the API keys Secret (default: `namespace`, or the pod's own).",
    )
    api_keys_refresh_seconds: float = Field(default=15.0, gt=0)

    # Catalog, data, output
    catalog_file: Path | None = Field(
        default=None,
        validation_alias=_shared("CATALOG_FILE"),
        description="Model catalog YAML (a ConfigMap in the cluster); unset: packaged default.",
    )
    allow_uncataloged_models: bool = Field(
        default=False,
        description="Accept Hugging Face ids / paths that are not catalog aliases.",
    )
    allow_hub_models: bool = Field(
        default=True,
        description="Accept hf://org/name[@revision] models (the Hub) besides catalog aliases.",
    )
    data_root: str = Field(
        default=DATA_MOUNT,
        validation_alias=_shared("DATA_ROOT"),
        description="Data root (where the trainer mounts the data claim): absolute dataset "
        "paths must lie inside it (stored relative).",
    )
    check_dataset_exists: bool = Field(
        default=False,
        description="Reject relative dataset paths that are not files under `data_root` "
        "(only when the API sees the data volume, e.g. local development).",
    )
    resolve_dataset_hosts: bool = Field(
        default=True, description="Resolve https dataset hosts and reject private addresses."
    )
    allow_unresolvable_hosts: bool = Field(
        default=False,
        description="Accept https dataset hosts that do not resolve (offline development).",
    )
    dns_timeout_seconds: float = Field(default=3.0, gt=0)
    models_claim: str = Field(
        default=DEFAULT_MODELS_CLAIM,
        validation_alias=_shared("MODELS_CLAIM"),
        description="PVC the API asks the operator to store models on.",
    )
    models_path: str = Field(
        default=DEFAULT_MODELS_PATH, description="Directory inside the models claim."
    )

    @property
    def watch_cluster_wide(self) -> bool:
        if self.watch_all_namespaces is not None:
            return self.watch_all_namespaces
        return not self.auth_disabled

    @property
    def keys_namespace(self) -> str:
        if self.api_keys_namespace:
            return self.api_keys_namespace
        own = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        if own.is_file():
            return own.read_text(encoding="utf-8").strip() or self.namespace
        return self.namespace
