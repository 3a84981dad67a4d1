"""The trainer container's environment (pure builders).

- `KUBETUNE_RUN_CONFIG`: the resolved TrainerRunConfig (spec included: hyperparameters and
  `spec.distributed.strategy` reach the trainer this way), plus HOME, caches, HF_HOME.
- torchrun's `PET_*` variables (the names Kubeflow Trainer sets, so the same image runs under
  a TrainJob): nodes, processes per node, this pod's node rank and the rank-0 address. The
  trainer re-executes itself under `torch.distributed.run` when the world size is above 1.
- S3 credentials from Secrets, never from the run config: the output's Secret gives AWS_*; a
  different dataset Secret gives DATASET_AWS_* (a dataset Secret alone gives AWS_*).
- MLflow credentials (spec.tracking.mlflow.credentialsSecretRef): each of MLflow's own
  MLFLOW_TRACKING_* keys the Secret holds, optional, never in the run config.
- The Hub (an hf:// model or dataset): HF_TOKEN from spec.hub.tokenSecretRef's Secret (its
  HF_TOKEN key, valueFrom: the token is in no object the operator writes), the operator's
  HF_ENDPOINT and whether that may be an internal address.
"""

from __future__ import annotations

from typing import Any

from kubetune_crd import names
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.tracking import MLFLOW_SECRET_KEYS
from kubetune_crd.trainer_contract import RUN_CONFIG_ENV

from kubetune_operator.gang_builders import master_address
from kubetune_operator.pod_readers import COMPLETION_INDEX_ANNOTATION
from kubetune_operator.run_plan import RunPlan, uses_hub, uses_s3
from kubetune_operator.settings import OperatorSettings

EnvVar = dict[str, Any]
LOOPBACK = "127.0.0.1"


def trainer_env(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> list[EnvVar]:
    """Every variable of the trainer container, in a stable order."""
    return [
        *base_env(plan),
        *distributed_env(ftj, plan, settings),
        *s3_env(ftj, plan, settings),
        *tracking_env(ftj),
        *hub_env(ftj, plan, settings),
    ]


def base_env(plan: RunPlan) -> list[EnvVar]:
    return [
        {"name": RUN_CONFIG_ENV, "value": plan.run_config.model_dump_json(by_alias=True)},
        {"name": "HOME", "value": names.TMP_MOUNT},  # an emptyDir: the root fs is read-only
        {"name": "XDG_CACHE_HOME", "value": names.CACHE_MOUNT},
        {"name": "HF_HOME", "value": names.HF_HOME},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def distributed_env(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> list[EnvVar]:
    """torchrun's configuration: one node on loopback, or the rank-0 pod of an Indexed Job;
    workers get the pod's grace period (less a margin) to checkpoint on SIGTERM."""
    shape = plan.topology
    rank: EnvVar
    if shape.multi_node:
        index = f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
        rank = {"name": names.ENV_NODE_RANK, "valueFrom": {"fieldRef": {"fieldPath": index}}}
        master = master_address(str(ftj.metadata["name"]))
    else:
        rank = {"name": names.ENV_NODE_RANK, "value": "0"}
        master = LOOPBACK
    return [
        {"name": names.ENV_NNODES, "value": str(shape.nodes)},
        {"name": names.ENV_NPROC_PER_NODE, "value": str(shape.processes_per_node)},
        rank,
        {"name": names.ENV_MASTER_ADDR, "value": master},
        {"name": names.ENV_MASTER_PORT, "value": str(names.DEFAULT_MASTER_PORT)},
        {"name": names.ENV_SHUTDOWN_TIMEOUT, "value": str(shutdown_timeout(settings))},
    ]


def shutdown_timeout(settings: OperatorSettings) -> int:
    """Seconds the launcher waits for its workers after SIGTERM: inside the grace period."""
    return max(settings.termination_grace_seconds - names.SHUTDOWN_MARGIN_SECONDS, 1)


def _secret_env(name: str, secret: str, key: str, optional: bool) -> EnvVar:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _aws_env(prefix: str, secret: str) -> list[EnvVar]:
    return [
        _secret_env(f"{prefix}AWS_ACCESS_KEY_ID", secret, "AWS_ACCESS_KEY_ID", False),
        _secret_env(f"{prefix}AWS_SECRET_ACCESS_KEY", secret, "AWS_SECRET_ACCESS_KEY", False),
        _secret_env(f"{prefix}AWS_ENDPOINT_URL", secret, "AWS_ENDPOINT_URL", True),
        _secret_env(f"{prefix}AWS_REGION", secret, "AWS_REGION", True),
    ]


def _secrets(ftj: FineTuneJob, plan: RunPlan) -> tuple[str | None, str | None]:
    """(output Secret, dataset Secret) names."""
    s3 = plan.output.s3
    out_secret = s3.credentials_secret_ref.name if s3 and s3.credentials_secret_ref else None
    data_ref = ftj.spec.dataset.credentials_secret_ref
    return out_secret, data_ref.name if data_ref else None


def s3_defaults_env(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> list[EnvVar]:
    """Operator-wide S3 endpoint/region for a spec that names none.

    They come *before* the Secrets' optional AWS_ENDPOINT_URL / AWS_REGION keys: for a
    repeated name the last definition wins, and an optional key the Secret lacks defines
    nothing, so a Secret's own value beats the default.
    """
    if not uses_s3(ftj, plan):
        return []
    s3 = plan.output.s3
    out_secret, data_secret = _secrets(ftj, plan)
    endpoint = settings.s3_endpoint_url if not (s3 and s3.endpoint_url) else None
    region = settings.s3_region if not (s3 and s3.region) else None
    prefixes = [""]
    if out_secret and data_secret and data_secret != out_secret:
        prefixes.append("DATASET_")
    env: list[EnvVar] = []
    for prefix in prefixes:
        if endpoint:
            env.append({"name": f"{prefix}AWS_ENDPOINT_URL", "value": endpoint})
        if region:
            env.append({"name": f"{prefix}AWS_REGION", "value": region})
    return env


def s3_env(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> list[EnvVar]:
    """Defaults, then the Secrets' keys, then the spec's own endpoint/region (no Secret)."""
    env = s3_defaults_env(ftj, plan, settings)
    out_secret, data_secret = _secrets(ftj, plan)
    if out_secret:
        env += _aws_env("", out_secret)
        if data_secret and data_secret != out_secret:
            env += _aws_env("DATASET_", data_secret)
    elif data_secret:
        env += _aws_env("", data_secret)
    s3 = plan.output.s3
    if s3 and s3.endpoint_url and not out_secret:
        env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint_url})
    if s3 and s3.region and not out_secret:
        env.append({"name": "AWS_REGION", "value": s3.region})
    return env


def tracking_env(ftj: FineTuneJob) -> list[EnvVar]:
    """The MLflow Secret's keys as MLflow's own variables (each optional: a password pair or
    a token)."""
    tracking = ftj.spec.tracking
    ref = tracking.mlflow.credentials_secret_ref if tracking and tracking.mlflow else None
    if ref is None:
        return []
    return [_secret_env(key, ref.name, key, True) for key in MLFLOW_SECRET_KEYS]


def hub_env(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> list[EnvVar]:
    """The Hub's endpoint and token for a trainer that uses hf:// sources."""
    if not uses_hub(ftj, plan):
        return []
    env: list[EnvVar] = [{"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]
    if settings.hf_endpoint:
        env.append({"name": names.ENV_HF_ENDPOINT, "value": settings.hf_endpoint})
        allow = "true" if settings.hf_endpoint_allow_internal else "false"
        env.append({"name": names.ENV_HUB_ALLOW_INTERNAL, "value": allow})
    ref = ftj.spec.hub.token_secret_ref if ftj.spec.hub else None
    if ref is not None:
        env.append(_secret_env(names.ENV_HF_TOKEN, ref.name, names.HF_TOKEN_SECRET_KEY, False))
    return env
