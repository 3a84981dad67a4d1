"""Writing the trained model once, with its manifest, and describing where it went.

Rank 0 alone writes (a run of several processes hands it a plain model holding the trained
weights, `parallel.model_for_saving`), so the artifact is the same as a single process's: a
peft adapter (plus `merged/` when asked) or full safetensors. The model's name, path, URI and
format string are `kubetune_crd.names`', shared with the API's echo and the operator.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubetune_crd import names
from kubetune_crd.status import MODEL_FILES_MAX, Metrics, ModelFile, ModelInfo, Sample
from kubetune_crd.trainer_contract import TrainerRunConfig

from kubetune_trainer import __version__, quantization
from kubetune_trainer.errors import BadInputError, RetryableError
from kubetune_trainer.model_cache import BaseModelPin
from kubetune_trainer.output import JobIdentity, S3Store, StoredModel, VolumeStore
from kubetune_trainer.plan import DataPlan
from kubetune_trainer.runtime import DeviceInfo


def open_store(cfg: TrainerRunConfig) -> VolumeStore | S3Store:
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


def job_identity(cfg: TrainerRunConfig) -> JobIdentity:
    return JobIdentity(cfg.namespace, cfg.job_name, cfg.uid)


def manifest_files(manifest: dict[str, Any]) -> list[ModelFile] | None:
    """The manifest's files with their sha256 (None past MODEL_FILES_MAX: the record stays
    small, and its manifestSha256 covers them all)."""
    files = manifest.get("files")
    if not isinstance(files, list) or len(files) > MODEL_FILES_MAX:
        return None
    return [ModelFile(path=f["path"], sha256=f["sha256"], size=f["size"]) for f in files]


def model_info(
    cfg: TrainerRunConfig, stored: StoredModel, pin: BaseModelPin | None = None
) -> ModelInfo:
    if cfg.output_uri:
        location = names.s3_model_location(cfg.output_uri, cfg.model_name)
    else:
        pvc = cfg.spec.output.pvc if cfg.spec.output else None
        location = names.pvc_model_location(
            pvc.claim_name if pvc else names.DEFAULT_MODELS_CLAIM,
            pvc.path if pvc else names.DEFAULT_MODELS_PATH,
            cfg.model_name,
        )
    return ModelInfo(
        name=cfg.model_name,
        path=location.path,
        uri=location.uri,
        size_bytes=stored.size_bytes,
        format=stored.manifest.get("format"),
        base_model=pin.ref if pin else cfg.base_model,
        base_model_alias=cfg.base_model_alias,
        created=stored.manifest.get("created"),
        dataset_sha256=(stored.manifest.get("dataset") or {}).get("sha256"),
        files=manifest_files(stored.manifest),
        manifest_sha256=stored.manifest_sha256,
        base_model_revision=pin.commit if pin else None,
        base_model_cache=pin.cache if pin else None,
        dataset_revision=(stored.manifest.get("dataset") or {}).get("revision"),
    )


def _staging(cfg: TrainerRunConfig, store: VolumeStore | S3Store, work: Path) -> Path:
    if isinstance(store, VolumeStore):
        try:
            return store.staging_dir(cfg.model_name)
        except OSError as exc:
            raise RetryableError(f"cannot write to {store.models_dir}: {exc}") from None
    staging = work / "model"
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _write_files(cfg: TrainerRunConfig, model: Any, tokenizer: Any, staging: Path) -> None:
    method = cfg.spec.method
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if method.adapter and method.merge_adapter:
            if method.type == "qlora":  # not into the 4-bit weights: a bf16 reload of the base
                merged = quantization.merged_from_base(cfg.base_model, staging)
            else:
                merged = model.merge_and_unload()
            merged.save_pretrained(staging / "merged", safe_serialization=True)
            tokenizer.save_pretrained(staging / "merged")
    except OSError as exc:
        raise RetryableError(f"cannot write the model: {exc}") from None


def manifest(
    cfg: TrainerRunConfig,
    plan: DataPlan,
    metrics: Metrics,
    trainer: dict[str, Any],
    samples: Sequence[Sample] = (),
    pin: BaseModelPin | None = None,
) -> dict[str, Any]:
    """`kubetune-model.json` without its file list (the store adds it). An hf:// base model
    or dataset is pinned: the commit the run actually used."""
    spec = cfg.spec
    dataset: dict[str, Any] = {
        "uri": plan.fetched.uri,
        "sha256": plan.fetched.sha256,
        "bytes": plan.fetched.size,
        "format": plan.table.format,
        "kind": plan.table.kind,
        "rows": len(plan.table.rows),
    }
    if plan.fetched.revision is not None:
        dataset["revision"] = plan.fetched.revision
    document: dict[str, Any] = {
        "kubetuneModelVersion": 1,
        "name": cfg.model_name,
        "job": job_identity(cfg).as_dict(),
        "baseModel": cfg.base_model,
        "baseModelAlias": cfg.base_model_alias,
        "method": spec.method.to_k8s(),
        "format": names.model_format(spec.method.type, spec.method.merge_adapter),
        "dataset": dataset,
        "hyperparameters": spec.hyperparameters.to_k8s(),
        # The held-out split the metrics are on: models compare on the same sha256 and split.
        "evaluation": {
            "validationSplit": spec.dataset.validation_split,
            "seed": spec.hyperparameters.seed,
            "evalRows": len(plan.held_out.examples),
        },
        "metrics": metrics.to_k8s(),
        "samples": [s.to_k8s() for s in samples],
        "created": names.now_rfc3339(),
        "trainer": {"version": __version__, **trainer},
    }
    if pin is not None:
        document["baseModel"] = pin.ref
        document["baseModelRevision"] = pin.commit
    return document


def save_model(
    cfg: TrainerRunConfig,
    store: VolumeStore | S3Store,
    model: Any,
    tokenizer: Any,
    plan: DataPlan,
    metrics: Metrics,
    device: DeviceInfo,
    work: Path,
    samples: Sequence[Sample] = (),
    tensorboard: Path | None = None,
    pin: BaseModelPin | None = None,
) -> StoredModel:
    """Write the model and its manifest into the store (volume: rename into place; S3: the
    manifest last); `tensorboard`: event files to store in the model's `tensorboard/`."""
    staging = _staging(cfg, store, work)
    _write_files(cfg, model, tokenizer, staging)
    if tensorboard is not None and tensorboard.is_dir():
        shutil.copytree(tensorboard, staging / tensorboard.name, dirs_exist_ok=True)
    trainer = {
        "device": device.name,
        "bf16": device.bf16,
        "worldSize": plan.schedule.world_size,
        "effectiveBatchSize": plan.schedule.effective_batch,
    }
    try:
        document = manifest(cfg, plan, metrics, trainer, samples, pin)
        return store.commit(staging, cfg.model_name, document)
    except OSError as exc:
        raise RetryableError(f"cannot store the model: {exc}") from None
