"""The trainer pod template: container, resources, volumes, security, placement (pure).

Small builders in the style of dask-kubernetes' `make_pod_spec`: each returns one piece of
the pod spec from the FineTuneJob, the resolved plan and the operator settings. The pod runs
as a non-root user with a read-only root filesystem, no service-account API token and no
capabilities (the "restricted" profile); writable places are emptyDirs and the claims.
"""

from __future__ import annotations

from typing import Any

from kubetune_crd import names
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.trainer_contract import PROGRESS_AUDIENCE, TERMINATION_MESSAGE_PATH

from kubetune_operator.gang_builders import gang_service_name
from kubetune_operator.run_plan import RunPlan, is_volume_path, uses_model_cache
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.trainer_env import trainer_env

Manifest = dict[str, Any]
TOKEN_EXPIRATION_SECONDS = 3600
SHM_SIZE_LIMIT = "2Gi"
SECCOMP = {"type": "RuntimeDefault"}


def make_resources(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> Manifest:
    """Requests = limits per pod: CPU, memory (spec else default) and the GPUs per node."""
    res = ftj.spec.resources
    amounts: dict[str, str] = {}
    cpu = res.cpu or settings.trainer_default_cpu
    memory = res.memory or settings.trainer_default_memory
    gpus = plan.topology.gpus_per_node
    if cpu:
        amounts["cpu"] = cpu
    if memory:
        amounts["memory"] = memory
    if gpus:
        amounts[settings.gpu_resource_name] = str(gpus)
    if not amounts:
        return {}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def container_security() -> Manifest:
    """The restricted profile of a kubetune container (trainer and pointer publisher)."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(SECCOMP),
    }


def pod_security(uid: int) -> Manifest:
    """The pod-level security context: non-root `uid`, its group owning the volumes."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": dict(SECCOMP),
    }


def claim_volume(volume: str, claim: str, read_only: bool = False) -> Manifest:
    source: Manifest = {"claimName": claim}
    if read_only:
        source["readOnly"] = True
    return {"name": volume, "persistentVolumeClaim": source}


def mount(volume: str, path: str, read_only: bool = False) -> Manifest:
    mount: Manifest = {"name": volume, "mountPath": path}
    if read_only:
        mount["readOnly"] = True
    return mount


def _progress_token_volume() -> Manifest:
    """The only credential in the pod: audience kubetune-progress, which the apiserver
    itself rejects, bound to this pod (the operator checks the pod belongs to the job)."""
    token = {
        "audience": PROGRESS_AUDIENCE,
        "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
        "path": names.TOKEN_FILE,
    }
    return {
        "name": names.VOLUME_PROGRESS_TOKEN,
        "projected": {"sources": [{"serviceAccountToken": token}], "defaultMode": 0o440},
    }


def make_volumes(
    ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings
) -> tuple[list[Manifest], list[Manifest]]:
    """(pod volumes, container mounts): models claim, emptyDirs, data, model cache, output,
    token."""
    volumes = [
        claim_volume(names.VOLUME_MODELS, settings.models_claim),
        {"name": names.VOLUME_TMP, "emptyDir": {}},
        {"name": names.VOLUME_CACHE, "emptyDir": {}},
        {"name": names.VOLUME_SHM, "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE_LIMIT}},
    ]
    mounts = [
        mount(names.VOLUME_MODELS, names.MODELS_MOUNT),
        mount(names.VOLUME_TMP, names.TMP_MOUNT),
        mount(names.VOLUME_CACHE, names.CACHE_MOUNT),
        mount(names.VOLUME_SHM, names.SHM_MOUNT),
    ]
    if is_volume_path(ftj.spec.dataset.url):
        volumes.append(claim_volume(names.VOLUME_DATA, settings.data_claim, read_only=True))
        mounts.append(mount(names.VOLUME_DATA, names.DATA_MOUNT, read_only=True))
    if settings.model_cache_claim and uses_model_cache(plan):
        volumes.append(claim_volume(names.VOLUME_MODEL_CACHE, settings.model_cache_claim))
        mounts.append(mount(names.VOLUME_MODEL_CACHE, names.MODEL_CACHE_MOUNT))
    if plan.output_claim:
        volumes.append(claim_volume(names.VOLUME_OUTPUT, plan.output_claim))
        mounts.append(mount(names.VOLUME_OUTPUT, names.OUTPUT_MOUNT))
    if plan.run_config.progress_url:
        volumes.append(_progress_token_volume())
        mounts.append(mount(names.VOLUME_PROGRESS_TOKEN, names.TOKEN_DIR, read_only=True))
    return volumes, mounts


def make_container(
    ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings, mounts: list[Manifest]
) -> Manifest:
    """The trainer container: image, command, env, mounts, termination message, security."""
    container: Manifest = {
        "name": names.TRAINER_CONTAINER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.trainer_image_pull_policy,
        "command": list(settings.trainer_command),
        "env": trainer_env(ftj, plan, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }
    if settings.trainer_args:
        container["args"] = list(settings.trainer_args)
    resources = make_resources(ftj, plan, settings)
    if resources:
        container["resources"] = resources
    return container


def node_selector(ftj: FineTuneJob, settings: OperatorSettings) -> dict[str, str]:
    """The operator's node labels plus the spec's (the spec wins for a key both set)."""
    return {**settings.trainer_node_selector, **ftj.spec.scheduling.node_selector}


def tolerations(ftj: FineTuneJob, settings: OperatorSettings) -> list[Manifest]:
    """The operator's tolerations, then the spec's (identical ones once)."""
    merged: list[Manifest] = []
    for toleration in [*settings.trainer_tolerations, *ftj.spec.scheduling.tolerations]:
        item = toleration.to_k8s()
        if item not in merged:
            merged.append(item)
    return merged


def _placement(ftj: FineTuneJob, settings: OperatorSettings) -> Manifest:
    """Optional pod fields: service account, node selector, tolerations, priority."""
    out: Manifest = {}
    if settings.trainer_service_account:
        out["serviceAccountName"] = settings.trainer_service_account
    selector = node_selector(ftj, settings)
    if selector:
        out["nodeSelector"] = selector
    pod_tolerations = tolerations(ftj, settings)
    if pod_tolerations:
        out["tolerations"] = pod_tolerations
    if ftj.spec.scheduling.priority_class_name:
        out["priorityClassName"] = ftj.spec.scheduling.priority_class_name
    return out


def make_pod_spec(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> Manifest:
    """The trainer pod spec; a multi-node pod joins its run's headless Service (subdomain)."""
    volumes, mounts = make_volumes(ftj, plan, settings)
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": pod_security(settings.trainer_uid),
        "containers": [make_container(ftj, plan, settings, mounts)],
        "volumes": volumes,
    }
    if plan.topology.multi_node:
        pod_spec["subdomain"] = gang_service_name(str(ftj.metadata["name"]))
    pod_spec.update(_placement(ftj, settings))
    return pod_spec
