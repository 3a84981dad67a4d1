"""From a validated request to a FineTuneJob: model and dataset checks, the spec, the object.

Pure functions (DNS resolution is passed in), used by both the original API's routes and
the OpenAI-compatible ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubetune_crd.catalog import Catalog
from kubetune_crd.hub import HubRefError, is_hub_ref, parse_hub_ref
from kubetune_crd.names import (
    ANNOTATION_IDEMPOTENCY_KEY,
    ANNOTATION_JOB_ID,
    ANNOTATION_REQUEST,
    ANNOTATION_REQUEST_HASH,
    CREATED_BY_API,
    LABEL_CREATED_BY,
    LABEL_IDEMPOTENCY,
    default_model_name,
    job_id_to_name,
)
from kubetune_crd.resource import API_VERSION, KIND
from kubetune_crd.spec import FineTuneJobSpec
from pydantic import ValidationError

from kubetune_api.idempotency import HEADER, valid_key
from kubetune_api.request_fields import FIELDS, StartRequest, field_for_error
from kubetune_api.settings import Settings
from kubetune_api.validation import (
    DatasetURLError,
    ParsedDataset,
    address_problem,
    check_addresses,
    check_local_file,
    is_ip_literal,
    parse_dataset_url,
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


def check_idempotency_key(key: str | None) -> str | None:
    """The Idempotency-Key header as given, or FieldError when it is malformed."""
    if key is not None and not valid_key(key):
        raise FieldError(
            HEADER,
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
            key,
            location="header",
        )
    return key


def check_model(model: str, catalog: Catalog, settings: Settings, field: str = "model") -> None:
    """A catalog alias; an hf://org/name[@revision] Hub model (unless the API turns them
    off); anything else only with allow_uncataloged_models."""
    if model in catalog.models:
        return
    if is_hub_ref(model) and settings.allow_hub_models:
        try:
            parse_hub_ref(model, "model")
        except HubRefError as exc:
            raise FieldError(field, str(exc), model) from None
        return
    if settings.allow_uncataloged_models:
        return
    raise FieldError(
        field,
        f"unknown model {model!r}: supported models are {', '.join(catalog.aliases)}"
        + (" or hf://org/name[@revision]" if settings.allow_hub_models else ""),
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
            addresses = _addresses(host, settings, resolve)
            checked = is_ip_literal(host) or settings.resolve_dataset_hosts
            if checked and (addresses or not settings.allow_unresolvable_hosts):
                check_addresses(host, addresses)
        if parsed.kind == "path" and settings.check_dataset_exists:
            check_local_file(parsed.url, settings.data_root)
    except DatasetURLError as exc:
        raise FieldError(field, str(exc), url) from None
    return parsed


def _addresses(host: str, settings: Settings, resolve: Resolver) -> list[str]:
    """An IP literal itself; a name's addresses when host checks resolve names, else none."""
    if is_ip_literal(host):
        return [host]
    return resolve(host) if settings.resolve_dataset_hosts else []


def check_tracking(spec: FineTuneJobSpec, settings: Settings, resolve: Resolver) -> None:
    """The MLflow server's host (an IP, or what the name resolves to) is no metadata or
    link-local address; FieldError names `tracking`."""
    mlflow = spec.tracking.mlflow if spec.tracking else None
    if mlflow is None:
        return
    host = (urlsplit(mlflow.tracking_uri).hostname or "").strip("[]")
    for address in _addresses(host, settings, resolve):
        problem = address_problem(address, internal_ok=True)
        if problem:
            message = f"tracking server {host!r} is not allowed: {problem}"
            raise FieldError("tracking", message, mlflow.tracking_uri)


def build_spec(req: StartRequest, dataset: ParsedDataset, settings: Settings) -> FineTuneJobSpec:
    """The FineTuneJob spec of a request, every field put at its path in the request table.

    Built once per request, before anything is written; `for_job` then fills in the model
    name of the job id it gets. Raises FieldError (naming the request field) on what the
    spec refuses.
    """
    values: dict[str, Any] = {}
    for field in FIELDS:
        value = getattr(req, field.name)
        if value is not None:
            _put(values, field.path, {"name": value} if field.kind == "secret" else value)
    _put(values, ("dataset", "url"), dataset.url)
    _put(values, ("dataset", "format"), dataset.format)
    values["output"] = _output(values.get("output", {}), settings)
    try:
        return FineTuneJobSpec.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        message = f"{'.'.join(str(p) for p in loc)}: {err.get('msg')}"
        raise FieldError(field_for_error(loc), message) from None


def _put(values: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        values = values.setdefault(part, {})
    values[path[-1]] = value


def _output(values: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """S3 when a prefix is asked for (S3 options without one are ignored, as they always
    were), else the models claim."""
    s3 = values.pop("s3", None)
    if s3 and "uri" in s3:
        values["s3"] = s3
    else:
        values["pvc"] = {"claim_name": settings.models_claim, "path": settings.models_path}
    return values


def for_job(spec: FineTuneJobSpec, job_id: str, suffix: str | None = None) -> FineTuneJobSpec:
    """The spec with the default model name of this job id when the request named none."""
    out = spec.output
    if out is None or out.model_name:
        return spec
    job_name = job_id_to_name(job_id)
    if job_name is None:
        raise ValueError(f"job id {job_id!r} maps to no resource name")
    name = default_model_name(spec.model, job_name, suffix)
    return spec.model_copy(update={"output": out.model_copy(update={"model_name": name})})


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
    labels = {LABEL_CREATED_BY: CREATED_BY_API}
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
