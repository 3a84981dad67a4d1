"""FineTuneJob + settings + server capabilities -> the batch/v1 Job manifest (pure).

Nothing here talks to the cluster: the same inputs always give the same Job, which is what
makes the operator idempotent (the Job is named exactly like the FineTuneJob, so a second
create is a 409, never a second Job). One node: an ordinary Job of one pod. `nodes: M > 1`:
one Indexed Job of M pods (completions = parallelism = M) that Kueue admits whole (suspend),
its retries counted per gang restart. The pod template comes from `pod_builders`, the
multi-node Service and NetworkPolicy from `gang_builders`. See docs/DESIGN.md.
"""

from __future__ import annotations

from kubetune_crd import names
from kubetune_crd.catalog import Catalog
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.trainer_contract import ExitCode

from kubetune_operator.capabilities import ServerCapabilities
from kubetune_operator.object_meta import Manifest, job_labels, owned_metadata
from kubetune_operator.pod_builders import make_pod_spec
from kubetune_operator.run_plan import RunPlan, plan_for
from kubetune_operator.settings import OperatorSettings


def queue_name(ftj: FineTuneJob, settings: OperatorSettings) -> str | None:
    """The Kueue LocalQueue: the spec's, else the operator's default (None: not queued)."""
    return ftj.spec.scheduling.queue_name or settings.default_queue_name


def labels_for(ftj: FineTuneJob, settings: OperatorSettings) -> dict[str, str]:
    """The Job's and its pods' labels, with the Kueue queue when there is one."""
    labels = job_labels(str(ftj.metadata["name"]))
    queue = queue_name(ftj, settings)
    if queue:
        labels[names.LABEL_KUEUE_QUEUE] = queue
    return labels


def backoff_limit(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> int:
    """spec.maxRetries (bounded), in pod failures: a gang restart fails each of its pods."""
    retries = min(ftj.spec.max_retries, settings.max_backoff_limit)
    return retries * plan.topology.nodes


def pod_failure_policy() -> Manifest:
    """Bad input fails the Job at once; a disruption (preemption, drain) is not a failure."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": names.TRAINER_CONTAINER,
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


def make_job_spec(
    ftj: FineTuneJob,
    plan: RunPlan,
    settings: OperatorSettings,
    capabilities: ServerCapabilities,
    labels: dict[str, str],
) -> Manifest:
    """The Job's spec around the trainer pod template."""
    nodes = plan.topology.nodes
    job_spec: Manifest = {
        "backoffLimit": backoff_limit(ftj, plan, settings),
        "activeDeadlineSeconds": ftj.spec.deadline_seconds,
        "completions": nodes,
        "parallelism": nodes,
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": make_pod_spec(ftj, plan, settings),
        },
    }
    if plan.topology.multi_node:
        job_spec["completionMode"] = "Indexed"
    if capabilities.pod_failure_policy:
        job_spec["podFailurePolicy"] = pod_failure_policy()
    if names.LABEL_KUEUE_QUEUE in labels and capabilities.suspend:
        job_spec["suspend"] = True  # Kueue admits it (every pod at once) by unsuspending
    return job_spec


def make_job(
    ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings, capabilities: ServerCapabilities
) -> Manifest:
    """The batch/v1 Job for a resolved plan (metadata must hold name and uid)."""
    labels = labels_for(ftj, settings)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owned_metadata(ftj, str(ftj.metadata["name"]), labels),
        "spec": make_job_spec(ftj, plan, settings, capabilities, labels),
    }


def build_job(
    ftj: FineTuneJob,
    settings: OperatorSettings,
    capabilities: ServerCapabilities,
    catalog: Catalog,
    progress_base_url: str | None,
) -> Manifest:
    """The batch/v1 Job that runs the trainer for `ftj` (metadata must hold name and uid)."""
    plan = plan_for(ftj, settings, catalog, progress_base_url)
    return make_job(ftj, plan, settings, capabilities)
