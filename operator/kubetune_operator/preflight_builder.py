"""FineTuneJob + plan + settings -> the CPU pre-flight Job manifest (pure).

The pre-flight runs the trainer image with `--validate-only` in a Job of its own, named
`names.preflight_job_name` and labelled `app.kubernetes.io/component: preflight` (the
training Job's label says `trainer`), owned by the FineTuneJob. It requests no GPU, only
modest CPU and memory, never joins a Kueue queue, and keeps the trainer pod's restricted
security. It sees the same run config and dataset as the training run (so the report plans
for the run's world size) but has no progress token: its answer is its exit code and the
`TrainerResult` in its termination message. `--target-device` and `--gpu-memory-gib` make its
ETA and memory check speak of the GPUs the training Job will get, not of this CPU pod.
An hf:// base model is downloaded into the shared model cache by this pod (the training pod
then finds it cached), so such a pre-flight mounts the cache claim and gets the longer
`preflight_hub_deadline_seconds`; the download streams to disk, so memory stays modest.
"""

from __future__ import annotations

import dataclasses

from kubetune_crd import names
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.trainer_contract import TERMINATION_MESSAGE_PATH

from kubetune_operator.capabilities import ServerCapabilities
from kubetune_operator.job_builder import pod_failure_policy
from kubetune_operator.object_meta import Manifest, owned_metadata
from kubetune_operator.pod_builders import container_security, make_volumes, pod_security
from kubetune_operator.run_plan import RunPlan, uses_model_cache
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.trainer_env import LOOPBACK, base_env, hub_env, s3_env

VALIDATE_ONLY = "--validate-only"
TARGET_DEVICE = "--target-device"
GPU_MEMORY = "--gpu-memory-gib"


def preflight_labels(name: str) -> dict[str, str]:
    """Labels of the pre-flight Job and its pod (the operator's watches select them)."""
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_FINETUNEJOB: name,
        names.LABEL_COMPONENT: names.COMPONENT_PREFLIGHT,
    }


def preflight_args(plan: RunPlan, settings: OperatorSettings) -> list[str]:
    """The trainer's arguments: validate only, for the device the training Job gets."""
    gpus = plan.topology.gpus_per_node
    args = [*settings.trainer_args, VALIDATE_ONLY, TARGET_DEVICE, "cuda" if gpus else "cpu"]
    if gpus and settings.gpu_memory_gib:
        args += [GPU_MEMORY, f"{settings.gpu_memory_gib:g}"]
    return args


def preflight_resources(settings: OperatorSettings) -> Manifest:
    """Modest CPU and memory requests, a memory limit; never a GPU."""
    requests = {
        key: value
        for key, value in (("cpu", settings.preflight_cpu), ("memory", settings.preflight_memory))
        if value
    }
    out: Manifest = {}
    if requests:
        out["requests"] = requests
    if settings.preflight_memory_limit:
        out["limits"] = {"memory": settings.preflight_memory_limit}
    return out


def preflight_deadline(plan: RunPlan, settings: OperatorSettings) -> int:
    """activeDeadlineSeconds: longer when the pre-flight downloads an hf:// base model."""
    if uses_model_cache(plan):
        return max(settings.preflight_deadline_seconds, settings.preflight_hub_deadline_seconds)
    return settings.preflight_deadline_seconds


def preflight_env(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> list[Manifest]:
    """The run config (no progress URL), torchrun's shape for the report, S3 and Hub access."""
    shape = plan.topology
    return [
        *base_env(plan),
        {"name": names.ENV_NNODES, "value": str(shape.nodes)},
        {"name": names.ENV_NPROC_PER_NODE, "value": str(shape.processes_per_node)},
        {"name": names.ENV_NODE_RANK, "value": "0"},
        {"name": names.ENV_MASTER_ADDR, "value": LOOPBACK},
        {"name": names.ENV_MASTER_PORT, "value": str(names.DEFAULT_MASTER_PORT)},
        *s3_env(ftj, plan, settings),
        *hub_env(ftj, plan, settings),
    ]


def make_preflight_job(
    ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings, capabilities: ServerCapabilities
) -> Manifest:
    """The pre-flight batch/v1 Job (ftj metadata must hold name and uid)."""
    name = str(ftj.metadata["name"])
    config = plan.run_config.model_copy(update={"progress_url": None, "progress_token_path": None})
    quiet = dataclasses.replace(plan, run_config=config)
    volumes, mounts = make_volumes(ftj, quiet, settings)
    container: Manifest = {
        "name": names.TRAINER_CONTAINER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.trainer_image_pull_policy,
        "command": list(settings.trainer_command),
        "args": preflight_args(plan, settings),
        "env": preflight_env(ftj, quiet, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }
    resources = preflight_resources(settings)
    if resources:
        container["resources"] = resources
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(settings.trainer_uid),
        "containers": [container],
        "volumes": volumes,
    }
    if settings.trainer_service_account:
        pod_spec["serviceAccountName"] = settings.trainer_service_account
    labels = preflight_labels(name)
    job_spec: Manifest = {
        "backoffLimit": settings.preflight_retries,
        "activeDeadlineSeconds": preflight_deadline(plan, settings),
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if capabilities.pod_failure_policy:
        job_spec["podFailurePolicy"] = pod_failure_policy()
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owned_metadata(ftj, names.preflight_job_name(name), labels),
        "spec": job_spec,
    }
