"""A FineTunedModel registry record as the operator writes it, for tests that put records in
the cluster (or feed them to the API's pure views) without running an operator.

One builder, so the record's shape lives once in the tests: callers name only what they vary
(the model, its job, its base model, its figures, its dataset) and get the rest as defaults.
"""

from __future__ import annotations

from typing import Any

from kubetune_crd.registry import MODEL_KIND
from kubetune_crd.resource import API_VERSION

BASE_MODEL = "/var/lib/kubetune/models/base/kubetune-tiny"
DATASET_SHA256 = "ab" * 32


def finetuned_model_record(
    name: str,
    *,
    job: str,
    metrics: dict[str, float | None],
    namespace: str | None = None,
    creation_timestamp: str | None = None,
    method: str = "lora",
    base_model: str = BASE_MODEL,
    base_model_alias: str = "tiny",
    size_bytes: int = 3 * 1024 * 1024,
    created: str = "2026-12-04T10:00:00Z",
    model_extra: dict[str, Any] | None = None,
    dataset_url: str = "data/f.csv",
    dataset_sha256: str = DATASET_SHA256,
    validation_split: float = 0.1,
    seed: int = 42,
    hyperparameters: dict[str, Any] | None = None,
    samples: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The FineTunedModel for model `name` trained by `job` (the record is named like its job).

    `namespace`/`creation_timestamp` go in the metadata when given (as read back from the
    cluster); `model_extra` adds fields to `spec.model` (files, manifest, dataset digest);
    `hyperparameters` defaults to one epoch; `samples` is left out unless given.
    """
    metadata: dict[str, Any] = {"name": job}
    if namespace is not None:
        metadata["namespace"] = namespace
    if creation_timestamp is not None:
        metadata["creationTimestamp"] = creation_timestamp
    spec: dict[str, Any] = {
        "job": job,
        "method": method,
        "model": {
            "name": name,
            "path": f"models/{name}",
            "uri": f"pvc://kubetune-models/models/{name}",
            "format": "peft-lora",
            "baseModel": base_model,
            "baseModelAlias": base_model_alias,
            "sizeBytes": size_bytes,
            "created": created,
            **(model_extra or {}),
        },
        "dataset": {
            "url": dataset_url,
            "sha256": dataset_sha256,
            "validationSplit": validation_split,
            "seed": seed,
        },
        "hyperparameters": {"epochs": 1} if hyperparameters is None else hyperparameters,
        "metrics": metrics,
    }
    if samples is not None:
        spec["samples"] = samples
    return {
        "apiVersion": API_VERSION,
        "kind": MODEL_KIND,
        "metadata": metadata,
        "spec": spec,
    }
