"""One trainer run: data -> validation -> (resume) -> eval before -> train -> eval after -> store.

Bad data fails before any model weights are loaded. `validate_only` stops after the data
report (rows, tokens, steps, ETA).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_crd.status import Metrics, ModelInfo
from kubetune_crd.trainer_contract import TrainerResult, TrainerRunConfig

from kubetune_trainer import __version__, checkpoints
from kubetune_trainer.checkpoints import TrainState
from kubetune_trainer.dataset import Encoded, encode_rows, split_rows
from kubetune_trainer.errors import BadInputError, RetryableError
from kubetune_trainer.formats import Table, load_table
from kubetune_trainer.modeling import load_model, load_tokenizer, parameter_count
from kubetune_trainer.output import JobIdentity, S3Store, StoredModel, VolumeStore
from kubetune_trainer.packing import PackedRow, pack
from kubetune_trainer.progress import ProgressReporter, now_iso
from kubetune_trainer.runtime import DeviceInfo, pick_device
from kubetune_trainer.sources import FetchedDataset, fetch_dataset
from kubetune_trainer.train import (
    LoopConfig,
    Schedule,
    StopFlag,
    evaluate,
    make_optimizer,
    restore,
    train_loop,
)

# Rough sustained training FLOP/s for the validate-only ETA (override with the env var).
ASSUMED_FLOPS = {"cuda": 1.0e14, "cpu": 3.0e10}


@dataclass
class DataPlan:
    fetched: FetchedDataset
    table: Table
    train: Encoded
    held_out: Encoded
    train_rows: list[PackedRow]
    eval_rows: list[PackedRow]
    schedule: Schedule
    total_steps: int

    @property
    def train_tokens_per_epoch(self) -> int:
        return sum(len(r) for r in self.train_rows)

    def summary(self) -> dict[str, Any]:
        hp_rows = len(self.train.examples) + self.train.dropped
        return {
            "dataset": self.fetched.uri,
            "sha256": self.fetched.sha256,
            "bytes": self.fetched.size,
            "format": self.table.format,
            "kind": self.table.kind,
            "columns": self.table.columns,
            "rows": len(self.table.rows),
            "trainRows": hp_rows,
            "evalRows": len(self.held_out.examples) + self.held_out.dropped,
            "trainTokens": self.train.tokens,
            "evalTokens": self.held_out.tokens,
            "truncatedRows": self.train.truncated + self.held_out.truncated,
            "droppedRows": self.train.dropped + self.held_out.dropped,
            "packedSequences": len(self.train_rows),
            "stepsPerEpoch": self.schedule.steps_per_epoch,
            "totalSteps": self.total_steps,
        }


def prepare_data(cfg: TrainerRunConfig, tokenizer: Any, work_dir: Path) -> DataPlan:
    spec = cfg.spec
    hp = spec.hyperparameters
    fetched = fetch_dataset(spec.dataset.url, cfg.data_root, work_dir)
    table = load_table(fetched.path, spec.dataset.url, spec.dataset)
    train_rows, held_rows = split_rows(table.rows, spec.dataset.validation_split, hp.seed)
    train = encode_rows(tokenizer, table.kind, train_rows, hp.max_seq_length)
    held = encode_rows(tokenizer, table.kind, held_rows, hp.max_seq_length)
    if not train.examples:
        raise BadInputError(
            f"no training row has any token to learn from within maxSeqLength {hp.max_seq_length}"
            " (prompts longer than the limit?)"
        )
    # Seeded random grouping, not length-sorted bins: see packing.py (batch diversity).
    packed = pack(train.examples, hp.max_seq_length, hp.packing, seed=hp.seed)
    eval_packed = pack(held.examples, hp.max_seq_length, True)
    schedule = Schedule(len(packed), hp.batch_size, hp.gradient_accumulation_steps, hp.seed)
    return DataPlan(
        fetched, table, train, held, packed, eval_packed, schedule, schedule.total_steps(hp)
    )


def estimate(
    cfg: TrainerRunConfig, plan: DataPlan, device_type: str, flops: float | None
) -> dict[str, Any]:
    """Tokens to process and a rough ETA from the parameter count (no weights loaded)."""
    params = parameter_count(cfg.base_model)
    hp = cfg.spec.hyperparameters
    epochs = plan.total_steps / max(plan.schedule.steps_per_epoch, 1)
    tokens = int(plan.train_tokens_per_epoch * epochs)
    factor = 4 if cfg.spec.method.type == "lora" else 6  # forward+backward FLOPs per param-token
    rate = flops or ASSUMED_FLOPS.get(device_type, ASSUMED_FLOPS["cpu"])
    eval_tokens = 2 * sum(len(r) for r in plan.eval_rows)
    seconds = (factor * params * tokens + 2 * params * eval_tokens) / rate
    return {
        "parameters": params,
        "tokensToTrain": tokens,
        "epochs": round(epochs, 3),
        "batchSize": hp.batch_size,
        "device": device_type,
        "assumedFlops": rate,
        "etaSeconds": round(seconds, 1),
    }


def fingerprint(cfg: TrainerRunConfig, dataset_sha: str) -> str:
    spec = cfg.spec
    basis = {
        "baseModel": cfg.base_model,
        "dataset": spec.dataset.to_k8s(),
        "datasetSha256": dataset_sha,
        "method": spec.method.to_k8s(),
        "hyperparameters": spec.hyperparameters.to_k8s(),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _store(cfg: TrainerRunConfig) -> VolumeStore | S3Store:
    if cfg.output_uri:
        s3 = cfg.spec.output.s3 if cfg.spec.output else None
        return S3Store(
            cfg.output_uri,
            endpoint_url=s3.endpoint_url if s3 else None,
            region=s3.region if s3 else None,
        )
    if not cfg.output_dir:
        raise BadInputError("run config has neither outputDir nor outputUri")
    return VolumeStore(cfg.output_dir)


def _model_info(cfg: TrainerRunConfig, stored: StoredModel) -> ModelInfo:
    path = uri = stored.uri
    if not cfg.output_uri:
        pvc = cfg.spec.output.pvc if cfg.spec.output else None
        sub = pvc.path if pvc else "models"
        claim = pvc.claim_name if pvc else "kubetune-models"
        path = f"{sub}/{cfg.model_name}"
        uri = f"pvc://{claim}/{path}"
    return ModelInfo(
        name=cfg.model_name,
        path=path if not cfg.output_uri else None,
        uri=uri,
        size_bytes=stored.size_bytes,
        format=stored.manifest.get("format"),
        base_model=cfg.base_model,
        base_model_alias=cfg.base_model_alias,
        created=stored.manifest.get("created"),
    )


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_job(
    cfg: TrainerRunConfig,
    reporter: ProgressReporter,
    stop: StopFlag,
    *,
    validate_only: bool = False,
    work_dir: Path | None = None,
    assumed_flops: float | None = None,
) -> tuple[TrainerResult, dict[str, Any]]:
    """Run the job; returns the result and a details dict (the validation report)."""
    own_work = work_dir is None
    work = work_dir or Path(tempfile.mkdtemp(prefix="kubetune-trainer-"))
    try:
        return _run(cfg, reporter, stop, validate_only, work, assumed_flops)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def _run(
    cfg: TrainerRunConfig,
    reporter: ProgressReporter,
    stop: StopFlag,
    validate_only: bool,
    work: Path,
    assumed_flops: float | None,
) -> tuple[TrainerResult, dict[str, Any]]:
    spec = cfg.spec
    hp = spec.hyperparameters
    job = JobIdentity(cfg.namespace, cfg.job_name, cfg.uid)
    reporter.stage("loading")
    tokenizer = load_tokenizer(cfg.base_model)
    stop.check("loading")
    reporter.stage("validating")
    plan = prepare_data(cfg, tokenizer, work)
    details = plan.summary()
    if validate_only:
        import torch

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
        details.update(estimate(cfg, plan, device_type, assumed_flops))
        message = (
            f"valid: {details['rows']} rows ({details['kind']}), {details['trainTokens']} train "
            f"tokens, {details['totalSteps']} steps, "
            f"ETA ~{details['etaSeconds']:.0f}s on {device_type}"
        )
        return TrainerResult(outcome="succeeded", message=message), details

    store = _store(cfg)
    existing = store.existing(cfg.model_name, job)
    if existing is None and isinstance(store, S3Store):
        store.claim(cfg.model_name, job)  # fail before training if another job owns the name
    if existing is not None:  # a retry after the model was stored: nothing to redo
        metrics = Metrics.model_validate(existing.manifest.get("metrics") or {})
        return (
            TrainerResult(
                outcome="succeeded",
                message=f"model already stored by this job at {existing.uri}",
                model=_model_info(cfg, existing),
                metrics=metrics,
            ),
            details,
        )

    device = pick_device()
    _seed_everything(hp.seed)
    ckpt_dir = Path(cfg.checkpoint_dir)
    checkpoints.remove_incomplete(ckpt_dir)
    run_fingerprint = fingerprint(cfg, plan.fetched.sha256)
    model = load_model(cfg.base_model, spec.method, device, hp.gradient_checkpointing)
    stop.check("loading")
    optimizer, scheduler = make_optimizer(model, hp, plan.total_steps, device)
    state = TrainState(fingerprint=run_fingerprint, total_steps=plan.total_steps)
    latest = checkpoints.latest_checkpoint(ckpt_dir, run_fingerprint)
    pad_id = int(tokenizer.pad_token_id)
    if latest is not None:
        state, tensors = checkpoints.load_checkpoint(latest, optimizer, scheduler)
        restore(model, tensors)
        reporter.stage("resuming", step=state.step, total_steps=state.total_steps)
    else:
        reporter.stage("evaluating")
        state.eval_loss_before = evaluate(
            model, plan.eval_rows, hp.batch_size, pad_id, device, stop
        )

    reporter.stage("training", step=state.step, total_steps=state.total_steps)
    loop_cfg = LoopConfig(
        hp=hp,
        checkpoint_dir=ckpt_dir,
        checkpoint_every=spec.checkpoint.every_steps,
        checkpoint_keep=spec.checkpoint.keep,
        pad_id=pad_id,
    )
    started = time.monotonic()
    state = train_loop(
        model,
        plan.train_rows,
        plan.schedule,
        state,
        optimizer,
        scheduler,
        loop_cfg,
        device,
        lambda p: reporter.report(p),
        stop,
    )
    stop.check("training")
    reporter.stage("evaluating", step=state.step, total_steps=state.total_steps, fraction=1.0)
    eval_after = evaluate(model, plan.eval_rows, hp.batch_size, pad_id, device)
    last_losses = [loss for _, loss in state.losses[-max(hp.logging_steps, 1) :]]
    metrics = Metrics(
        train_loss=round(sum(last_losses) / len(last_losses), 6) if last_losses else None,
        eval_loss_before=state.eval_loss_before,
        eval_loss_after=eval_after,
        perplexity_before=_ppl(state.eval_loss_before),
        perplexity_after=_ppl(eval_after),
        train_rows=len(plan.train.examples),
        eval_rows=len(plan.held_out.examples),
        train_tokens=state.real_tokens,
    )
    reporter.stage("saving", step=state.step, total_steps=state.total_steps, fraction=1.0)
    stored = _save_model(cfg, store, model, tokenizer, plan, metrics, device, work)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    seconds = time.monotonic() - started
    result = TrainerResult(
        outcome="succeeded",
        message=(
            f"trained {state.step} steps in {seconds:.0f}s; eval loss "
            f"{_fmt(metrics.eval_loss_before)} -> {_fmt(metrics.eval_loss_after)}"
        ),
        model=_model_info(cfg, stored),
        metrics=metrics,
    )
    return result, details


def _ppl(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _save_model(
    cfg: TrainerRunConfig,
    store: VolumeStore | S3Store,
    model: Any,
    tokenizer: Any,
    plan: DataPlan,
    metrics: Metrics,
    device: DeviceInfo,
    work: Path,
) -> StoredModel:
    spec = cfg.spec
    lora = spec.method.type == "lora"
    if isinstance(store, VolumeStore):
        try:
            staging = store.staging_dir(cfg.model_name)
        except OSError as exc:
            raise RetryableError(f"cannot write to {store.models_dir}: {exc}") from None
    else:
        staging = work / "model"
        staging.mkdir(parents=True, exist_ok=True)
    fmt = "peft-lora" if lora else "safetensors"
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if lora and spec.method.merge_adapter:
            merged = model.merge_and_unload()
            merged.save_pretrained(staging / "merged", safe_serialization=True)
            tokenizer.save_pretrained(staging / "merged")
            fmt = "peft-lora+merged"
    except OSError as exc:
        raise RetryableError(f"cannot write the model: {exc}") from None
    manifest = {
        "kubetuneModelVersion": 1,
        "name": cfg.model_name,
        "job": JobIdentity(cfg.namespace, cfg.job_name, cfg.uid).as_dict(),
        "baseModel": cfg.base_model,
        "baseModelAlias": cfg.base_model_alias,
        "method": spec.method.to_k8s(),
        "format": fmt,
        "dataset": {
            "uri": plan.fetched.uri,
            "sha256": plan.fetched.sha256,
            "bytes": plan.fetched.size,
            "format": plan.table.format,
            "kind": plan.table.kind,
            "rows": len(plan.table.rows),
        },
        "hyperparameters": spec.hyperparameters.to_k8s(),
        "metrics": metrics.to_k8s(),
        "created": now_iso(),
        "trainer": {"version": __version__, "device": device.name, "bf16": device.bf16},
    }
    try:
        return store.commit(staging, cfg.model_name, manifest)
    except OSError as exc:
        raise RetryableError(f"cannot store the model: {exc}") from None
