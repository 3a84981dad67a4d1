"""The validate-only run's report: data figures, ETA and GPU memory estimate (no weights).

`--validate-only` is what the operator's CPU pre-flight Job runs before requesting any GPU.
The data was validated (every bad row named with its line) and planned by `plan.py`; an hf://
base model was fetched into the shared model cache first (`model_cache`: the GPU pod then
finds it there) and its pin (commit, cache hit or miss) goes into the report; here the model's
shape is read from its config alone (`modeling.model_shape`, no weights loaded), the ETA is given
for the device the training Job will use (`--target-device`, not this CPU pod's), the memory
one training process needs is estimated (`memory_estimate`), and a run that clearly cannot
fit in `--gpu-memory-gib` fails as bad input with what would fit.
"""

from __future__ import annotations

from typing import Any

from kubetune_crd.preflight import PreflightReport
from kubetune_crd.trainer_contract import TrainerResult, TrainerRunConfig

from kubetune_trainer.errors import BadInputError
from kubetune_trainer.memory_estimate import (
    GIB,
    RunShape,
    does_not_fit_message,
    estimate_memory,
)
from kubetune_trainer.model_cache import BaseModelPin
from kubetune_trainer.modeling import model_shape
from kubetune_trainer.parallel import resolve_strategy
from kubetune_trainer.plan import DataPlan, estimate


def run_shape(cfg: TrainerRunConfig, world_size: int, gpu: bool) -> RunShape:
    """The run as the memory estimate sees it."""
    spec = cfg.spec
    hp = spec.hyperparameters
    strategy = resolve_strategy(spec.distributed.strategy, spec.method.type, world_size)
    return RunShape(
        method=spec.method.type,
        lora_rank=spec.method.lora.r,
        batch_size=hp.batch_size,
        seq_len=hp.max_seq_length,
        gradient_checkpointing=hp.gradient_checkpointing,
        world_size=world_size,
        sharded=strategy == "fsdp",
        bf16=gpu,
    )


def validation_report(
    cfg: TrainerRunConfig,
    plan: DataPlan,
    device_type: str,
    assumed_flops: float | None,
    gpu_memory_gib: float | None,
    pin: BaseModelPin | None = None,
) -> tuple[TrainerResult, dict[str, Any]]:
    """The result and details of a validate-only run; BadInputError when it cannot fit.
    `pin`: the hf:// base model as resolved (commit, model cache hit or miss)."""
    shape = model_shape(cfg.base_model)
    details = plan.summary()
    details.update(estimate(cfg, plan, device_type, assumed_flops, params=shape.parameters))
    gpu = device_type == "cuda"
    run = run_shape(cfg, plan.schedule.world_size, gpu)
    memory = estimate_memory(shape, run)
    if gpu:
        details["estimatedGpuMemoryGiB"] = round(memory.total / GIB, 2)
    else:
        details["estimatedMemoryGiB"] = round(memory.total / GIB, 2)
    if gpu and gpu_memory_gib:
        details["gpuMemoryGiB"] = gpu_memory_gib
        problem = does_not_fit_message(shape, run, gpu_memory_gib)
        if problem is not None:
            raise BadInputError(problem)
    message = (
        f"valid: {details['rows']} rows ({details['kind']}), {details['trainTokens']} train "
        f"tokens, {details['totalSteps']} steps, "
        f"ETA ~{details['etaSeconds']:.0f}s on {device_type}"
    )
    if gpu:
        message += f", ~{details['estimatedGpuMemoryGiB']:.1f} GiB GPU memory per process"
    if pin is not None:
        details.update(baseModelRevision=pin.commit, baseModelCache=pin.cache)
        message += f", base model commit {pin.commit[:12]} (model cache {pin.cache})"
    report = PreflightReport(
        rows=details["rows"],
        train_rows=details["trainRows"],
        eval_rows=details["evalRows"],
        train_tokens=details["trainTokens"],
        total_steps=details["totalSteps"],
        world_size=details["worldSize"],
        eta_seconds=details["etaSeconds"],
        device=device_type,
        parameters=shape.parameters,
        estimated_gpu_memory_gib=details.get("estimatedGpuMemoryGiB"),
        gpu_memory_gib=details.get("gpuMemoryGiB"),
        base_model_revision=pin.commit if pin else None,
        base_model_cache=pin.cache if pin else None,
    )
    return TrainerResult(outcome="succeeded", message=message, validation=report), details
