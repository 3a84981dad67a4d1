"""The `config` echo of `POST /api/finetune/start`: every request field as stored, defaults filled.

Generated from the request table (`request_fields.FIELDS`): each field appears under its
request name (`dataset_url` as the original API's `dataset`), its value read from the spec
the API stored, so the original five come first and nothing the request can set is left
out. Option groups are shown with snake_case keys, like every other key of the answer. The
output fields are gathered in `output` (where the model will be), and `effective_batch_size`
says how many sequences one optimizer step sees when the GPU count is known.
"""

from __future__ import annotations

import functools
import types
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from kubetune_crd.base import CamelModel
from kubetune_crd.names import (
    effective_batch_size,
    pvc_model_location,
    s3_model_location,
    world_size,
)
from kubetune_crd.spec import FineTuneJobSpec
from pydantic import BaseModel, Field, create_model

from kubetune_api.request_fields import (
    FIELDS,
    RequestField,
    in_optional_group,
    spec_field,
    spec_value,
)


class OutputConfig(BaseModel):
    """Where the model will be stored."""

    model_name: str | None
    path: str | None = Field(description="models/<name> on the models PVC (PVC output).")
    uri: str | None = Field(description="s3://... (S3 output).")
    region: str | None = Field(default=None, description="Bucket region (S3 output).")
    credentials_secret: str | None = Field(
        default=None, description="Secret with the S3 credentials (S3 output)."
    )


# -- snake_case views of the spec's option groups ---------------------------------------------
@functools.cache
def snake_view(model: type[CamelModel]) -> type[BaseModel]:
    """A model with the same fields as a spec group, serialised with snake_case keys."""
    fields: dict[str, Any] = {
        name: (_snake_type(info.annotation), Field(description=info.description))
        for name, info in model.model_fields.items()
    }
    name = model.__name__.removesuffix("Spec") + "Config"
    view: type[BaseModel] = create_model(name, __doc__=model.__doc__, **fields)
    return view


def _snake_type(annotation: Any) -> Any:
    """The annotation with every spec model in it replaced by its snake_case view."""
    if isinstance(annotation, type) and issubclass(annotation, CamelModel):
        return snake_view(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        return list[_snake_type(args[0])]  # type: ignore[misc]
    if origin in (Union, types.UnionType):
        return Union[tuple(_snake_type(arg) for arg in args)]  # noqa: UP007
    return annotation


# -- the echo model ---------------------------------------------------------------------------
def _echo_field(field: RequestField) -> tuple[Any, Any]:
    info = spec_field(field.path)
    if field.kind == "secret":
        return str | None, ...
    annotation = _snake_type(info.annotation)
    if in_optional_group(field.path):  # promotion, evaluation: unset unless asked for
        annotation = annotation | None
    if field.name == "lora":
        return annotation | None, Field(..., description="LoRA settings (null for method full).")
    if field.name == "dpo_beta":
        return annotation | None, Field(..., description="DPO beta (null unless objective dpo).")
    return annotation, Field(..., description=info.description)


_EXTRA_FIELDS: dict[str, Any] = {
    "output": (OutputConfig, ...),
    "effective_batch_size": (
        int | None,
        Field(
            ...,
            description="Sequences per optimizer step: batch_size x gradient_accumulation_steps "
            "x world size (gpus, or 1 without GPUs, per node x nodes); null while the GPU "
            "count is the operator's default.",
        ),
    ),
}

if TYPE_CHECKING:
    _StartConfigFields = BaseModel
else:
    _StartConfigFields = create_model(
        "StartConfigFields",
        **{f.echo_name: _echo_field(f) for f in FIELDS if not f.in_output},
        **_EXTRA_FIELDS,
    )


class StartConfig(_StartConfigFields):
    """The original API's `config` (model, dataset, epochs, batch_size, learning_rate), every
    default filled in, followed by the other options as stored."""


# -- values -----------------------------------------------------------------------------------
def start_config(dataset_url: str, spec: FineTuneJobSpec) -> StartConfig:
    """The echo of a stored spec; `dataset` is the URL as the request gave it."""
    values: dict[str, Any] = {}
    for field in FIELDS:
        if not field.in_output:
            values[field.echo_name] = _echo_value(field, spec)
    values["dataset"] = dataset_url
    values["output"] = output_config(spec)
    values["effective_batch_size"] = spec_effective_batch_size(spec)
    return StartConfig.model_validate(values)


def _echo_value(field: RequestField, spec: FineTuneJobSpec) -> Any:
    value = spec_value(spec, field.path)
    if field.kind == "secret":
        return value.name if value is not None else None
    if field.name == "lora" and not spec.method.adapter:
        return None
    if field.name == "dpo_beta" and spec.method.objective != "dpo":
        return None
    return value.model_dump() if isinstance(value, BaseModel) else value


def output_config(spec: FineTuneJobSpec) -> OutputConfig:
    out = spec.output
    name = out.model_name if out else None
    if out is None or name is None:
        return OutputConfig(model_name=name, path=None, uri=None)
    if out.pvc is not None:
        path = pvc_model_location(out.pvc.claim_name, out.pvc.path, name).path
        return OutputConfig(model_name=name, path=path, uri=None)
    if out.s3 is not None:
        secret = out.s3.credentials_secret_ref
        return OutputConfig(
            model_name=name,
            path=None,
            uri=s3_model_location(out.s3.uri, name).uri,
            region=out.s3.region,
            credentials_secret=secret.name if secret else None,
        )
    return OutputConfig(model_name=name, path=None, uri=None)


def spec_effective_batch_size(spec: FineTuneJobSpec) -> int | None:
    """Sequences per optimizer step, or None while the GPU count is the operator's default."""
    gpus = spec.resources.gpus
    if gpus is None:
        return None
    hp = spec.hyperparameters
    processes = world_size(spec.resources.nodes, gpus)
    return effective_batch_size(hp.batch_size, hp.gradient_accumulation_steps, processes)
