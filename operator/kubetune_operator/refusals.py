"""Specs the operator refuses before creating anything: never silently run them another way.

A multi-node run (`resources.nodes > 1`) needs
- Indexed Jobs: without them the server would run M unrelated pods with no node rank (and
  a v1.21 server without the alpha gate drops `completionMode` silently), so on an older
  server the FineTuneJob fails at once, naming the server version;
- storage every node can mount: each pod mounts the models claim read-write (base models,
  the download cache, and the checkpoints of an S3-output run), a PVC output's claim
  read-write (the model and its checkpoints) and the data claim read-only. A claim that one
  node at a time can mount would leave the other pods waiting for ever (Multi-Attach), and
  ranks on different nodes would not see each other's checkpoints: read-write claims must be
  ReadWriteMany, the read-only data claim ReadOnlyMany or ReadWriteMany.

A GPU-only method (`method.type: qlora`) on a run of CPU processes (`resources.gpus` unset
and the operator's default 0; an explicit 0 is refused by the contract itself) is refused too,
rather than failing in the trainer after the pod started.

A refusal is permanent (phase Failed, reason BadInput, the JobCreated condition False with
the refusal's own reason); a claim that cannot be read yet is retried.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetune_crd.method import GPU_ONLY_METHODS, gpu_required_message
from kubetune_crd.resource import FineTuneJob

from kubetune_operator.capabilities import ServerCapabilities
from kubetune_operator.create_error import CreateError
from kubetune_operator.kube import ApiError, KubeClient, pvc_path
from kubetune_operator.kube_objects import Obj
from kubetune_operator.run_plan import RunPlan, Topology, is_volume_path, uses_model_cache
from kubetune_operator.settings import OperatorSettings

INDEXED_JOBS_UNSUPPORTED = "IndexedJobsUnsupported"
STORAGE_NOT_SHARED = "StorageNotShared"
GPU_REQUIRED = "GpuRequired"
READ_WRITE_MANY = "ReadWriteMany"
READ_ONLY_MANY = "ReadOnlyMany"


@dataclass(frozen=True)
class ClaimUse:
    """A claim every pod of the run mounts, and what for."""

    claim: str
    purpose: str
    writable: bool

    @property
    def shared_modes(self) -> frozenset[str]:
        """Access modes that let every node mount it this way."""
        if self.writable:
            return frozenset({READ_WRITE_MANY})
        return frozenset({READ_WRITE_MANY, READ_ONLY_MANY})


def indexed_jobs_refusal(
    topology: Topology, capabilities: ServerCapabilities
) -> CreateError | None:
    """A multi-node run on a server without Indexed Jobs."""
    if not topology.multi_node or capabilities.indexed_jobs:
        return None
    return CreateError.refused(
        INDEXED_JOBS_UNSUPPORTED,
        f"resources.nodes={topology.nodes} needs Indexed Jobs (Kubernetes 1.22 or later); "
        f"the API server is {capabilities.label}, so the job is refused rather than run "
        "on one node",
    )


def gpu_refusal(ftj: FineTuneJob, topology: Topology) -> CreateError | None:
    """A GPU-only method on a run whose pods get no GPU (the operator's default of 0)."""
    method = ftj.spec.method.type
    if method not in GPU_ONLY_METHODS or topology.gpus_per_node > 0:
        return None
    return CreateError.refused(
        GPU_REQUIRED,
        f"{gpu_required_message(method)} (resources.gpus is unset and the operator's "
        "default, KUBETUNE_TRAINER_DEFAULT_GPUS, is 0)",
    )


def claims_of(ftj: FineTuneJob, plan: RunPlan, settings: OperatorSettings) -> list[ClaimUse]:
    """The claims the run's pods mount (mirrors `pod_builders.make_volumes`)."""
    models_purpose = "base models and download cache"
    if plan.output.s3 is not None:
        models_purpose += ", checkpoints"
    elif plan.output_claim is None:
        models_purpose += ", the model and its checkpoints"
    uses = [ClaimUse(settings.models_claim, models_purpose, writable=True)]
    if plan.output_claim:
        uses.append(ClaimUse(plan.output_claim, "the model and its checkpoints", writable=True))
    if is_volume_path(ftj.spec.dataset.url):
        uses.append(ClaimUse(settings.data_claim, "the dataset", writable=False))
    if settings.model_cache_claim and uses_model_cache(plan):
        uses.append(ClaimUse(settings.model_cache_claim, "the shared model cache", writable=True))
    return uses


def access_modes(pvc: Obj) -> set[str]:
    """The modes the claim asked for and, once bound, the modes its volume has."""
    spec = (pvc.get("spec") or {}).get("accessModes") or []
    bound = (pvc.get("status") or {}).get("accessModes") or []
    return {str(mode) for mode in [*spec, *bound]}


def storage_refusal(topology: Topology, use: ClaimUse, pvc: Obj) -> CreateError | None:
    """A claim of a multi-node run that not every node can mount the way the pods do."""
    modes = access_modes(pvc)
    if not topology.multi_node or modes & use.shared_modes:
        return None
    needed = " or ".join(sorted(use.shared_modes))
    has = ", ".join(sorted(modes)) or "no access mode"
    return CreateError.refused(
        STORAGE_NOT_SHARED,
        f"resources.nodes={topology.nodes} needs storage every node can mount: claim "
        f"{use.claim} ({use.purpose}) is {has}, not {needed}; use a {READ_WRITE_MANY} claim "
        "or S3 output",
    )


async def multi_node_refusal(
    client: KubeClient,
    ftj: FineTuneJob,
    plan: RunPlan,
    settings: OperatorSettings,
    capabilities: ServerCapabilities,
) -> CreateError | None:
    """Why the operator will not (or cannot yet) create this multi-node run, if it will not."""
    if not plan.topology.multi_node:
        return None
    refusal = indexed_jobs_refusal(plan.topology, capabilities)
    if refusal is not None:
        return refusal
    namespace = str(ftj.metadata.get("namespace", "default"))
    for use in claims_of(ftj, plan, settings):
        try:
            pvc = await client.get(pvc_path(namespace, use.claim))
        except ApiError as exc:
            if exc.status in (403, 404):
                return CreateError(f"cannot read claim {use.claim}: {exc.status} {exc.message}")
            raise
        refusal = storage_refusal(plan.topology, use, pvc)
        if refusal is not None:
            return refusal
    return None
