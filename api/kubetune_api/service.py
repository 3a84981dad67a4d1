"""From a validated request to a FineTuneJob: dataset and model checks, spec, config echo.

Pure functions (DNS resolution is passed in), used by both the seed routes and the
OpenAI-compatible ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubetune_crd.catalog import Catalog
from kubetune_crd.resource import API_VERSION, KIND
from kubetune_crd.spec import (
    CheckpointSpec,
    DatasetSpec,
    FineTuneJobSpec,
    HyperparametersSpec,
    LoraSpec,
    MethodSpec,
    OutputSpec,
    PvcOutput,
    ResourcesSpec,
    S3Output,
    SchedulingSpec,
    SecretRef,
)
from pydantic import ValidationError

from kubetune_api.job_ids import job_id_timestamp, job_id_to_name
from kubetune_api.schemas import (
    LoraConfig,
    OutputConfig,
    ResourcesConfig,
    StartConfig,
    StartRequest,
)
from kubetune_api.settings import Settings
from kubetune_api.validation import (
    DatasetURLError,
    ParsedDataset,
    check_addresses,
    check_local_file,
    is_ip_literal,
    parse_dataset_url,
)
from kubetune_api.views import (
    ANNOTATION_IDEMPOTENCY_KEY,
    ANNOTATION_JOB_ID,
    ANNOTATION_REQUEST,
    ANNOTATION_REQUEST_HASH,
    LABEL_CREATED_BY,
    LABEL_IDEMPOTENCY,
)

Resolver = Callable[[str], list[str]]


class FieldError(ValueError):
    """A request field is unacceptable: answered 422 with `field` named."""

    def __init__(self, field: str, message: str, value: Any = None, location: str = "body") -> None:
        super().__init__(message)
        self.field = field
        self.location = location
        self.message = message
        self.value = value


def check_model(model: str, catalog: Catalog, settings: Settings, field: str = "model") -> None:
    if model in catalog.models:
        return
    if settings.allow_uncataloged_models:
        return
    raise FieldError(
        field,
        f"unknown model {model!r}: supported models are {', '.join(catalog.aliases)}",
        model,
    )


def check_dataset(
    url: str,
    dataset_format: str,
    settings: Settings,
    resolve: Resolver,
    field: str = "dataset_url",
) -> ParsedDataset:
    """Syntax, then (https) the host's addresses, then (local development) the file."""
    try:
        parsed = parse_dataset_url(url, data_root=settings.data_root, dataset_format=dataset_format)
        if parsed.kind == "https" and parsed.host is not None:
            host = parsed.host.strip("[]")
            if is_ip_literal(host):
                check_addresses(host, [host])
            elif settings.resolve_dataset_hosts:
                addresses = resolve(host)
                if addresses or not settings.allow_unresolvable_hosts:
                    check_addresses(host, addresses)
        if parsed.kind == "path" and settings.check_dataset_exists:
            check_local_file(parsed.url, settings.data_root)
    except DatasetURLError as exc:
        raise FieldError(field, str(exc), url) from None
    return parsed


def _model_dir_prefix(model: str) -> str:
    base = model.rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "-", base).strip("-._") or "model"
    return base[:60]


def default_model_name(model: str, job_id: str, suffix: str | None = None) -> str | None:
    """`<alias>-finetuned-<YYYYMMDD_HHMMSS>-<xxxxxx>`: the seed's form, unique per job."""
    stamp = job_id_timestamp(job_id)
    if stamp is None:
        return None
    middle = f"-{re.sub(r'[^A-Za-z0-9._-]', '-', suffix)[:40]}" if suffix else ""
    return f"{_model_dir_prefix(model)}-finetuned{middle}-{stamp}-{job_id[-6:]}"[:128]


def build_spec(
    req: StartRequest,
    dataset: ParsedDataset,
    settings: Settings,
    job_id: str,
    *,
    model_name_suffix: str | None = None,
) -> FineTuneJobSpec:
    """The FineTuneJob spec for a request; raises FieldError on what the spec refuses."""
    model_name = req.model_name or default_model_name(req.model, job_id, model_name_suffix)
    output: OutputSpec
    if req.output_s3_uri:
        secret = req.output_s3_credentials_secret
        output = OutputSpec(
            model_name=model_name,
            s3=S3Output(
                uri=req.output_s3_uri,
                credentials_secret_ref=SecretRef(name=secret) if secret else None,
                region=req.output_s3_region,
            ),
        )
    else:
        output = OutputSpec(
            model_name=model_name,
            pvc=PvcOutput(claim_name=settings.models_claim, path=settings.models_path),
        )
    resources = req.resources
    if resources is None:
        resources = (
            ResourcesSpec(gpus=settings.default_gpus)
            if settings.default_gpus is not None
            else ResourcesSpec()
        )
    try:
        return FineTuneJobSpec(
            model=req.model,
            dataset=DatasetSpec(
                url=dataset.url,
                format=dataset.format,
                text_column=req.text_column,
                prompt_column=req.prompt_column,
                completion_column=req.completion_column,
                messages_column=req.messages_column,
                validation_split=req.validation_split,
                credentials_secret_ref=(
                    SecretRef(name=req.dataset_credentials_secret)
                    if req.dataset_credentials_secret
                    else None
                ),
            ),
            method=MethodSpec(
                type=req.method, lora=req.lora or LoraSpec(), merge_adapter=req.merge_adapter
            ),
            hyperparameters=HyperparametersSpec(
                epochs=req.epochs,
                batch_size=req.batch_size,
                learning_rate=req.learning_rate,
                max_seq_length=req.max_seq_length,
                gradient_accumulation_steps=req.gradient_accumulation_steps,
                warmup_ratio=req.warmup_ratio,
                weight_decay=req.weight_decay,
                seed=req.seed,
                packing=req.packing,
                gradient_checkpointing=req.gradient_checkpointing,
                max_steps=req.max_steps,
                logging_steps=req.logging_steps,
            ),
            resources=resources,
            scheduling=req.scheduling or SchedulingSpec(),
            output=output,
            checkpoint=req.checkpoint or CheckpointSpec(),
            deadline_seconds=req.deadline_seconds,
            max_retries=req.max_retries,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        field = _SPEC_TO_FIELD.get(loc[0] if loc else "", loc[0] if loc else "body")
        raise FieldError(field, f"{'.'.join(loc)}: {err.get('msg')}") from None


_SPEC_TO_FIELD = {"dataset": "dataset_url", "output": "model_name", "model": "model"}


def start_config(req: StartRequest, spec: FineTuneJobSpec) -> StartConfig:
    """The seed's `config`: what was asked, with every default filled in (from the spec)."""
    hp = spec.hyperparameters
    out = spec.output
    model_path: str | None = None
    uri: str | None = None
    if out is not None and out.pvc is not None and out.model_name:
        model_path = f"{out.pvc.path}/{out.model_name}"
    if out is not None and out.s3 is not None and out.model_name:
        uri = f"{out.s3.uri.rstrip('/')}/{out.model_name}"
    lora = spec.method.lora
    return StartConfig(
        model=req.model,
        dataset=req.dataset_url,
        epochs=hp.epochs,
        batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        dataset_format=spec.dataset.format,
        validation_split=spec.dataset.validation_split,
        method=spec.method.type,
        lora=(
            LoraConfig(
                r=lora.r,
                alpha=lora.alpha,
                dropout=lora.dropout,
                target_modules=list(lora.target_modules),
            )
            if spec.method.type == "lora"
            else None
        ),
        merge_adapter=spec.method.merge_adapter,
        max_seq_length=hp.max_seq_length,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        warmup_ratio=hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        seed=hp.seed,
        packing=hp.packing,
        max_steps=hp.max_steps,
        resources=ResourcesConfig(
            gpus=spec.resources.gpus, cpu=spec.resources.cpu, memory=spec.resources.memory
        ),
        deadline_seconds=spec.deadline_seconds,
        max_retries=spec.max_retries,
        output=OutputConfig(model_name=out.model_name if out else None, path=model_path, uri=uri),
    )


@dataclass(frozen=True)
class ObjectMeta:
    """What the API records on a FineTuneJob besides its spec."""

    request: dict[str, Any]
    idempotency_key: str | None = None
    idempotency_hash: str | None = None
    request_hash: str | None = None
    extra_annotations: dict[str, str] | None = None


def build_object(job_id: str, spec: FineTuneJobSpec, meta: ObjectMeta) -> dict[str, Any]:
    name = job_id_to_name(job_id)
    if name is None:
        raise ValueError(f"job id {job_id!r} maps to no resource name")
    labels = {LABEL_CREATED_BY: "kubetune-api"}
    annotations = {
        ANNOTATION_JOB_ID: job_id,
        ANNOTATION_REQUEST: json.dumps(meta.request, sort_keys=True, separators=(",", ":")),
    }
    if meta.idempotency_hash:
        labels[LABEL_IDEMPOTENCY] = meta.idempotency_hash
    if meta.idempotency_key is not None:
        annotations[ANNOTATION_IDEMPOTENCY_KEY] = meta.idempotency_key
    if meta.request_hash:
        annotations[ANNOTATION_REQUEST_HASH] = meta.request_hash
    if meta.extra_annotations:
        annotations.update(meta.extra_annotations)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec.to_k8s(),
    }
