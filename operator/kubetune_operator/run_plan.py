"""What the operator resolves for one FineTuneJob before building anything (pure).

The base model behind a catalog alias, the model's name, location and format, where
checkpoints live, which claim holds the output, and the run's shape (nodes x processes per
node). Every name and formula comes from `kubetune_crd.names`, so the API's echo, the
operator's expectation and the trainer's manifest agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetune_crd import names
from kubetune_crd.catalog import Catalog
from kubetune_crd.hub import is_hub_ref
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.spec import OutputSpec, PvcOutput
from kubetune_crd.status import ModelInfo
from kubetune_crd.trainer_contract import TrainerRunConfig

from kubetune_operator.settings import OperatorSettings


@dataclass(frozen=True)
class Topology:
    """The run's shape: `nodes` pods of `processes_per_node` training processes each."""

    nodes: int
    gpus_per_node: int

    @property
    def processes_per_node(self) -> int:
        return names.processes_per_node(self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return names.world_size(self.nodes, self.gpus_per_node)

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1


@dataclass(frozen=True)
class RunPlan:
    """What the operator resolved for one FineTuneJob (model, output, mounts, shape)."""

    run_config: TrainerRunConfig
    output: OutputSpec
    output_claim: str | None
    """The claim mounted at OUTPUT_MOUNT (a PVC output on another claim than models)."""
    expected_model: ModelInfo
    """The model the trainer should produce (the status falls back to it)."""
    topology: Topology


@dataclass(frozen=True)
class OutputPlace:
    """Where the model and the checkpoints go, as the trainer pod sees it."""

    output_claim: str | None
    output_dir: str | None
    output_uri: str | None
    checkpoint_dir: str
    location: names.ModelLocation
    pointer_root: str
    """Where the alias pointers go: the output claim's mount, or the S3 output prefix."""


def gpu_count(ftj: FineTuneJob, settings: OperatorSettings) -> int:
    """GPUs per node: spec.resources.gpus when set, else the operator's default."""
    gpus = ftj.spec.resources.gpus
    return gpus if gpus is not None else settings.trainer_default_gpus


def topology_of(ftj: FineTuneJob, settings: OperatorSettings) -> Topology:
    return Topology(nodes=ftj.spec.resources.nodes, gpus_per_node=gpu_count(ftj, settings))


def resolved_output(ftj: FineTuneJob, settings: OperatorSettings) -> OutputSpec:
    """The spec's output, else the operator's models claim."""
    return ftj.spec.output or OutputSpec(pvc=PvcOutput(claim_name=settings.models_claim))


def output_place(
    output: OutputSpec, settings: OperatorSettings, namespace: str, name: str, model_name: str
) -> OutputPlace:
    """Mounts and locations for a PVC output (models claim or another) or an S3 output."""
    checkpoints = names.checkpoint_subdir(namespace, name)
    if output.pvc is not None:
        claim = output.pvc.claim_name
        own = claim == settings.models_claim
        mount = names.MODELS_MOUNT if own else names.OUTPUT_MOUNT
        return OutputPlace(
            output_claim=None if own else claim,
            output_dir=f"{mount}/{output.pvc.path}",
            output_uri=None,
            checkpoint_dir=f"{mount}/{checkpoints}",
            location=names.pvc_model_location(claim, output.pvc.path, model_name),
            pointer_root=mount,
        )
    assert output.s3 is not None  # OutputSpec guarantees exactly one target
    return OutputPlace(
        output_claim=None,
        output_dir=None,
        output_uri=output.s3.uri.rstrip("/"),
        checkpoint_dir=f"{names.MODELS_MOUNT}/{checkpoints}",
        location=names.s3_model_location(output.s3.uri, model_name),
        pointer_root=output.s3.uri.rstrip("/"),
    )


def plan_for(
    ftj: FineTuneJob,
    settings: OperatorSettings,
    catalog: Catalog,
    progress_base_url: str | None,
) -> RunPlan:
    """Resolve the model alias, model name, output, checkpoint locations and the shape."""
    name = str(ftj.metadata.get("name", ""))
    namespace = str(ftj.metadata.get("namespace", "default"))
    spec = ftj.spec
    base_model, alias = catalog.resolve(spec.model)
    output = resolved_output(ftj, settings)
    model_name = output.model_name or names.default_model_name(spec.model, name)
    place = output_place(output, settings, namespace, name, model_name)
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
        data_root=names.DATA_MOUNT,
        output_dir=place.output_dir,
        output_uri=place.output_uri,
        checkpoint_dir=place.checkpoint_dir,
        model_cache_dir=(
            names.MODEL_CACHE_MOUNT if settings.model_cache_claim else names.DEFAULT_MODEL_CACHE_DIR
        ),
        pointer_root=place.pointer_root,
        progress_url=progress_url,
        progress_token_path=f"{names.TOKEN_DIR}/{names.TOKEN_FILE}" if progress_url else None,
    )
    expected = ModelInfo(
        name=model_name,
        path=place.location.path,
        uri=place.location.uri,
        format=names.model_format(spec.method.type, spec.method.merge_adapter),
        base_model=base_model,
        base_model_alias=alias,
    )
    return RunPlan(run_config, output, place.output_claim, expected, topology_of(ftj, settings))


def uses_s3(ftj: FineTuneJob, plan: RunPlan) -> bool:
    """Whether the trainer talks to S3 (an s3:// dataset or an S3 output)."""
    return plan.output.s3 is not None or ftj.spec.dataset.url.startswith("s3://")


def is_volume_path(url: str) -> bool:
    """True for a dataset URL that is a path on the data volume (not https://, s3:// or hf://)."""
    return not (url.startswith(("https://", "s3://")) or is_hub_ref(url))


def uses_hub(ftj: FineTuneJob, plan: RunPlan) -> bool:
    """Whether the trainer talks to the Hugging Face Hub (an hf:// base model or dataset)."""
    return is_hub_ref(plan.run_config.base_model) or is_hub_ref(ftj.spec.dataset.url)


def uses_model_cache(plan: RunPlan) -> bool:
    """Whether the base model goes through the shared model cache (an hf:// model)."""
    return is_hub_ref(plan.run_config.base_model)
