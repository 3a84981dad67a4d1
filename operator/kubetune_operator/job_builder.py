"""FineTuneJob + settings + server capabilities -> the batch/v1 Job manifest (pure).

Nothing here talks to the cluster: the same inputs always give the same Job, which is what
makes the operator idempotent (the Job is named exactly like the FineTuneJob, so a second
create is a 409, never a second Job). See docs/DESIGN.md for names and volumes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubetune_crd.catalog import Catalog
from kubetune_crd.resource import API_VERSION, KIND, FineTuneJob
from kubetune_crd.spec import OutputSpec, PvcOutput
from kubetune_crd.status import ModelInfo
from kubetune_crd.trainer_contract import (
    PROGRESS_AUDIENCE,
    RUN_CONFIG_ENV,
    TERMINATION_MESSAGE_PATH,
    ExitCode,
    TrainerRunConfig,
)

from kubetune_operator.capabilities import ServerCapabilities
from kubetune_operator.settings import OperatorSettings

Manifest = dict[str, Any]

CONTAINER_NAME = "trainer"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubetune"
LABEL_FINETUNEJOB = "kubetune.io/finetunejob"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_UID = "kubetune.io/finetunejob-uid"
ANNOTATION_STOPPED = "kubetune.io/stopped"

MODELS_MOUNT = "/var/lib/kubetune/models"
DATA_MOUNT = "/var/lib/kubetune/datasets"
OUTPUT_MOUNT = "/var/lib/kubetune/output"
CACHE_MOUNT = "/var/cache/kubetune"
TOKEN_DIR = "/var/run/secrets/kubetune/progress"  # noqa: S105 - a path
TOKEN_FILE = "token"  # noqa: S105 - a file name
TOKEN_EXPIRATION_SECONDS = 3600

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def job_labels(name: str) -> dict[str, str]:
    """Labels on the Job and its pods (the operator watches Jobs and pods by these)."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_FINETUNEJOB: name,
        LABEL_COMPONENT: "trainer",
    }


def default_model_name(model: str, alias: str | None, job_name: str) -> str:
    """`<model alias or last path part>-finetuned-<ftj name>` (DESIGN.md), filesystem-safe."""
    base = alias or model.rstrip("/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME_CHARS.sub("-", base).strip("-._") or "model"
    return f"{base}-finetuned-{job_name}"[:128]


def is_volume_path(url: str) -> bool:
    """True for a dataset URL that is a path on the data volume (not https:// or s3://)."""
    return not (url.startswith("https://") or url.startswith("s3://"))


@dataclass(frozen=True)
class RunPlan:
    """What the operator resolved for one FineTuneJob (model, output, mounts)."""

    run_config: TrainerRunConfig
    output: OutputSpec
    output_claim: str | None
    """The claim mounted at OUTPUT_MOUNT (a PVC output on another claim than models)."""
    expected_model: ModelInfo
    """The model the trainer should produce (the status falls back to it)."""


def plan_for(
    ftj: FineTuneJob,
    settings: OperatorSettings,
    catalog: Catalog,
    progress_base_url: str | None,
) -> RunPlan:
    """Resolve the model alias, model name, output and checkpoint locations."""
    name = str(ftj.metadata.get("name", ""))
    namespace = str(ftj.metadata.get("namespace", "default"))
    spec = ftj.spec
    base_model, alias = catalog.resolve(spec.model)
    output = spec.output or OutputSpec(pvc=PvcOutput(claim_name=settings.models_claim))
    model_name = output.model_name or default_model_name(spec.model, alias, name)
    checkpoint_rel = f".checkpoints/{namespace}/{name}"
    fmt = "peft-lora" if spec.method.type == "lora" else "safetensors"
    if spec.method.type == "lora" and spec.method.merge_adapter:
        fmt += "+merged"
    output_claim: str | None = None
    output_dir: str | None = None
    output_uri: str | None = None
    if output.pvc is not None:
        claim = output.pvc.claim_name
        mount = MODELS_MOUNT if claim == settings.models_claim else OUTPUT_MOUNT
        if claim != settings.models_claim:
            output_claim = claim
        output_dir = f"{mount}/{output.pvc.path}"
        checkpoint_dir = f"{mount}/{checkpoint_rel}"
        model_path: str | None = f"{output.pvc.path}/{model_name}"
        model_uri = f"pvc://{claim}/{model_path}"
    else:
        assert output.s3 is not None  # OutputSpec guarantees exactly one target
        output_uri = output.s3.uri.rstrip("/")
        checkpoint_dir = f"{MODELS_MOUNT}/{checkpoint_rel}"
        model_path = None
        model_uri = f"{output_uri}/{model_name}"
    progress_url = f"{progress_base_url}/progress/{namespace}/{name}" if progress_base_url else None
    run_config = TrainerRunConfig(
        job_name=name,
        namespace=namespace,
        uid=ftj.metadata.get("uid"),
        # The resolved output, so the trainer reports the claim the operator chose.
        spec=spec.model_copy(update={"output": output}),
        base_model=base_model,
        base_model_alias=alias,
        model_name=model_name,
        data_root=DATA_MOUNT,
        output_dir=output_dir,
        output_uri=output_uri,
        checkpoint_dir=checkpoint_dir,
        progress_url=progress_url,
        progress_token_path=f"{TOKEN_DIR}/{TOKEN_FILE}" if progress_url else None,
    )
    expected = ModelInfo(
        name=model_name,
        path=model_path,
        uri=model_uri,
        format=fmt,
        base_model=base_model,
        base_model_alias=alias,
    )
    return RunPlan(run_config, output, output_claim, expected)


def owner_reference(ftj: FineTuneJob) -> dict[str, Any]:
    """The controller owner reference: deleting the FineTuneJob garbage-collects the Job."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ftj.metadata["name"],
        "uid": ftj.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _secret_env(name: str, secret: str, key: str, optional: bool) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _aws_env(prefix: str, secret: str) -> list[dict[str, Any]]:
    return [
        _secret_env(f"{prefix}AWS_ACCESS_KEY_ID", secret, "AWS_ACCESS_KEY_ID", False),
        _secret_env(f"{prefix}AWS_SECRET_ACCESS_KEY", secret, "AWS_SECRET_ACCESS_KEY", False),
        _secret_env(f"{prefix}AWS_ENDPOINT_URL", secret, "AWS_ENDPOINT_URL", True),
        _secret_env(f"{prefix}AWS_REGION", secret, "AWS_REGION", True),
    ]


def uses_s3(ftj: FineTuneJob, plan: RunPlan) -> bool:
    """Whether the trainer talks to S3 (an s3:// dataset or an S3 output)."""
    return plan.output.s3 is not None or ftj.spec.dataset.url.startswith("s3://")


def _env(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": RUN_CONFIG_ENV, "value": plan.run_config.model_dump_json(by_alias=True)},
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 - an emptyDir, the root fs is read-only
        {"name": "XDG_CACHE_HOME", "value": CACHE_MOUNT},
        # Downloaded base models are shared by every job through the models volume.
        {"name": "HF_HOME", "value": f"{MODELS_MOUNT}/.cache/huggingface"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    # S3 credentials come from Secrets, never from the run config (DESIGN.md). The output's
    # Secret gives AWS_*; a different dataset Secret gives DATASET_AWS_* (or AWS_* alone).
    s3 = plan.output.s3
    out_secret = s3.credentials_secret_ref.name if s3 and s3.credentials_secret_ref else None
    data_ref = ftj.spec.dataset.credentials_secret_ref
    data_secret = data_ref.name if data_ref else None
    # Operator-wide S3 defaults (KUBETUNE_S3_ENDPOINT_URL / _REGION, e.g. an in-cluster MinIO)
    # when the spec names no endpoint/region. They come *before* the Secrets' optional
    # AWS_ENDPOINT_URL / AWS_REGION keys: for a repeated name the last definition wins, and an
    # optional key the Secret lacks defines nothing, so a Secret's own value beats the default.
    defaults: list[dict[str, Any]] = []
    if uses_s3(ftj, plan):
        endpoint = settings.s3_endpoint_url if not (s3 and s3.endpoint_url) else None
        region = settings.s3_region if not (s3 and s3.region) else None
        prefixes = [""]
        if out_secret and data_secret and data_secret != out_secret:
            prefixes.append("DATASET_")
        for prefix in prefixes:
            if endpoint:
                defaults.append({"name": f"{prefix}AWS_ENDPOINT_URL", "value": endpoint})
            if region:
                defaults.append({"name": f"{prefix}AWS_REGION", "value": region})
    env += defaults
    if out_secret:
        env += _aws_env("", out_secret)
        if data_secret and data_secret != out_secret:
            env += _aws_env("DATASET_", data_secret)
    elif data_secret:
        env += _aws_env("", data_secret)
    if s3 and s3.endpoint_url and not out_secret:
        env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint_url})
    if s3 and s3.region and not out_secret:
        env.append({"name": "AWS_REGION", "value": s3.region})
    return env


def gpu_count(ftj: FineTuneJob, settings: OperatorSettings) -> int:
    """spec.resources.gpus when the stored spec has it, else the operator's default.

    The CRD gives `gpus` no default (the typed model's 1 applies only to Python readers),
    so `model_fields_set` tells a spec that asked for 1 GPU from one that said nothing.
    """
    res = ftj.spec.resources
    return res.gpus if "gpus" in res.model_fields_set else settings.trainer_default_gpus


def _resources(ftj: FineTuneJob, settings: OperatorSettings) -> dict[str, Any]:
    res = ftj.spec.resources
    amounts: dict[str, str] = {}
    cpu = res.cpu or settings.trainer_default_cpu
    memory = res.memory or settings.trainer_default_memory
    gpus = gpu_count(ftj, settings)
    if cpu:
        amounts["cpu"] = cpu
    if memory:
        amounts["memory"] = memory
    if gpus:
        amounts[settings.gpu_resource_name] = str(gpus)
    if not amounts:
        return {}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def queue_name(ftj: FineTuneJob, settings: OperatorSettings) -> str | None:
    """The Kueue LocalQueue: the spec's, else the operator's default (None: not queued)."""
    return ftj.spec.scheduling.queue_name or settings.default_queue_name


def node_selector(ftj: FineTuneJob, settings: OperatorSettings) -> dict[str, str]:
    """The operator's node labels plus the spec's (the spec wins for a key both set)."""
    return {**settings.trainer_node_selector, **ftj.spec.scheduling.node_selector}


def tolerations(ftj: FineTuneJob, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The operator's tolerations, then the spec's (identical ones once)."""
    merged: list[dict[str, Any]] = []
    for toleration in [*settings.trainer_tolerations, *ftj.spec.scheduling.tolerations]:
        item = toleration.to_k8s()
        if item not in merged:
            merged.append(item)
    return merged


def _volumes(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> tuple[list[Any], ...]:
    volumes: list[dict[str, Any]] = [
        {"name": "models", "persistentVolumeClaim": {"claimName": settings.models_claim}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "models", "mountPath": MODELS_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
        {"name": "cache", "mountPath": CACHE_MOUNT},
        {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - an emptyDir
    ]
    if is_volume_path(ftj.spec.dataset.url):
        volumes.append(
            {
                "name": "data",
                "persistentVolumeClaim": {"claimName": settings.data_claim, "readOnly": True},
            }
        )
        mounts.append({"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
    if plan.output_claim:
        volumes.append(
            {"name": "output", "persistentVolumeClaim": {"claimName": plan.output_claim}}
        )
        mounts.append({"name": "output", "mountPath": OUTPUT_MOUNT})
    if plan.run_config.progress_url:
        # The only credential in the pod: audience kubetune-progress, which the apiserver
        # itself rejects, bound to this pod (the operator checks the pod belongs to the job).
        token = {
            "audience": PROGRESS_AUDIENCE,
            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
            "path": TOKEN_FILE,
        }
        volumes.append(
            {
                "name": "progress-token",
                "projected": {"sources": [{"serviceAccountToken": token}], "defaultMode": 0o440},
            }
        )
        mounts.append({"name": "progress-token", "mountPath": TOKEN_DIR, "readOnly": True})
    return volumes, mounts


def build_job(
    ftj: FineTuneJob,
    settings: OperatorSettings,
    capabilities: ServerCapabilities,
    catalog: Catalog,
    progress_base_url: str | None,
) -> Manifest:
    """The batch/v1 Job that runs the trainer for `ftj` (metadata must hold name and uid)."""
    plan = plan_for(ftj, settings, catalog, progress_base_url)
    name = str(ftj.metadata["name"])
    namespace = str(ftj.metadata.get("namespace", "default"))
    spec = ftj.spec
    labels = job_labels(name)
    queue = queue_name(ftj, settings)
    if queue:
        labels[LABEL_KUEUE_QUEUE] = queue
    volumes, mounts = _volumes(ftj, plan, settings)
    uid = settings.trainer_uid
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.trainer_image_pull_policy,
        "command": list(settings.trainer_command),
        "env": _env(ftj, plan, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if settings.trainer_args:
        container["args"] = list(settings.trainer_args)
    resources = _resources(ftj, settings)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if settings.trainer_service_account:
        pod_spec["serviceAccountName"] = settings.trainer_service_account
    selector = node_selector(ftj, settings)
    if selector:
        pod_spec["nodeSelector"] = selector
    pod_tolerations = tolerations(ftj, settings)
    if pod_tolerations:
        pod_spec["tolerations"] = pod_tolerations
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    job_spec: dict[str, Any] = {
        "backoffLimit": min(spec.max_retries, settings.max_backoff_limit),
        "activeDeadlineSeconds": spec.deadline_seconds,
        "completions": 1,
        "parallelism": 1,
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": pod_spec,
        },
    }
    if capabilities.pod_failure_policy:
        job_spec["podFailurePolicy"] = {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER_NAME,
                        "operator": "In",
                        "values": [int(ExitCode.BAD_INPUT)],
                    },
                },
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]
        }
    if queue and capabilities.suspend:
        job_spec["suspend"] = True  # Kueue admits it by unsuspending
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_UID: str(ftj.metadata["uid"])},
            "ownerReferences": [owner_reference(ftj)],
        },
        "spec": job_spec,
    }
