"""The original API's flat request fields, each mapped to its place in the FineTuneJob spec.

`FIELDS` is the one table: for every field of `POST /api/finetune/start` it names the spec
path its value is stored at. The request model (`StartRequest`, here), the spec the API
stores (`service.build_spec`) and the `config` echo (`echo.StartConfig`) are generated from
it, and each flat field takes its type, default, range and description from the contract's
own field. Hyperparameters and dataset columns are listed by reading the contract's models,
so adding a hyperparameter to `kubetune_crd.spec.HyperparametersSpec` adds it to the
request, the spec and the echo with no edit here.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from kubetune_crd.base import SecretRef
from kubetune_crd.spec import DatasetSpec, FineTuneJobSpec, HyperparametersSpec
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

Kind = Literal["value", "group", "secret"]

ORIGINAL_HYPERPARAMETERS = ("epochs", "batch_size", "learning_rate")
"""With `model` and `dataset_url`, the original API's five fields: first in request and echo."""


@dataclass(frozen=True)
class RequestField:
    """One request field and the spec path (snake_case) its value is stored at.

    `value` fields mirror the spec field (type, default, range, description); a `group` is
    an optional nested spec model (unset: the spec's default); a `secret` is a Secret name
    stored as `{name: ...}`. In the `config` echo the field is named `echo_as` (default: its
    own name), or shown in the echo's `output` group when `in_output`.
    """

    name: str
    path: tuple[str, ...]
    kind: Kind = "value"
    required: bool = False
    pattern: bool = True
    description: str | None = None
    echo_as: str | None = None
    in_output: bool = False

    @property
    def echo_name(self) -> str:
        return self.echo_as or self.name


def _fields_of(
    group: str, model: type[BaseModel], *, only: Iterable[str] = (), skip: Iterable[str] = ()
) -> list[RequestField]:
    """One flat field per field of a spec group, named like it (the contract's order)."""
    wanted = set(only)
    names = [n for n in model.model_fields if (not wanted or n in wanted) and n not in skip]
    return [RequestField(name, (group, name)) for name in names]


FIELDS: tuple[RequestField, ...] = (
    RequestField("model", ("model",), required=True),
    RequestField(
        "dataset_url", ("dataset", "url"), required=True, pattern=False, echo_as="dataset"
    ),
    *_fields_of("hyperparameters", HyperparametersSpec, only=ORIGINAL_HYPERPARAMETERS),
    RequestField("dataset_format", ("dataset", "format")),
    *_fields_of("dataset", DatasetSpec, skip=("url", "format", "credentials_secret_ref")),
    RequestField(
        "dataset_credentials_secret",
        ("dataset", "credentials_secret_ref"),
        kind="secret",
        description="Secret (in your namespace) with S3 credentials for an s3:// dataset.",
    ),
    RequestField(
        "hub_token_secret",
        ("hub", "token_secret_ref"),
        kind="secret",
        description=(
            "Secret (in your namespace) whose HF_TOKEN key holds a Hugging Face token, for "
            "gated or private hf:// models and datasets."
        ),
    ),
    RequestField("method", ("method", "type")),
    RequestField("objective", ("method", "objective")),
    RequestField("dpo_beta", ("method", "dpo", "beta")),
    RequestField("lora", ("method", "lora"), kind="group"),
    RequestField("merge_adapter", ("method", "merge_adapter")),
    *_fields_of("hyperparameters", HyperparametersSpec, skip=ORIGINAL_HYPERPARAMETERS),
    RequestField("resources", ("resources",), kind="group"),
    RequestField("distributed", ("distributed",), kind="group"),
    RequestField("scheduling", ("scheduling",), kind="group"),
    RequestField("checkpoint", ("checkpoint",), kind="group"),
    RequestField("tracking", ("tracking",), kind="group"),
    RequestField("deadline_seconds", ("deadline_seconds",)),
    RequestField("max_retries", ("max_retries",)),
    RequestField("model_name", ("output", "model_name"), in_output=True),
    RequestField(
        "output_s3_uri",
        ("output", "s3", "uri"),
        in_output=True,
        description="Store the model under this s3://bucket/prefix instead of the models PVC.",
    ),
    RequestField(
        "output_s3_credentials_secret",
        ("output", "s3", "credentials_secret_ref"),
        kind="secret",
        in_output=True,
        description="Secret with the S3 credentials for the output.",
    ),
    RequestField("output_s3_region", ("output", "s3", "region"), in_output=True),
    RequestField("evaluation_prompts", ("evaluation", "prompts")),
    RequestField("promote_to", ("promotion", "alias")),
    RequestField("promotion_policy", ("promotion", "policy")),
)


# -- the contract's fields ------------------------------------------------------------------
def unwrap_optional(annotation: Any) -> Any:
    """`X | None` -> X (any other annotation as is)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def spec_field(path: tuple[str, ...]) -> FieldInfo:
    """The contract's field at a spec path (snake_case)."""
    model: type[BaseModel] = FineTuneJobSpec
    for part in path[:-1]:
        model = unwrap_optional(model.model_fields[part].annotation)
    return model.model_fields[path[-1]]


def in_optional_group(path: tuple[str, ...]) -> bool:
    """Whether a spec path passes through a group that is unset by default (`promotion`,
    `evaluation`, `output`): its field is then unset (None) unless the request gives it, so
    a default of the group's own (the promotion policy) does not create the group."""
    model: type[BaseModel] = FineTuneJobSpec
    for part in path[:-1]:
        info = model.model_fields[part]
        if not info.is_required() and info.get_default(call_default_factory=True) is None:
            return True
        model = unwrap_optional(info.annotation)
    return False


_CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern", "multiple_of")


def constraints(info: FieldInfo, *, pattern: bool = True) -> dict[str, Any]:
    """A contract field's range, lengths and pattern, as `Field` keyword arguments."""
    found: dict[str, Any] = {}
    for meta in info.metadata:
        for attr in _CONSTRAINTS:
            value = getattr(meta, attr, None)
            if value is not None and (pattern or attr != "pattern"):
                found[attr] = value
    return found


def hyperparameter_constraints(name: str) -> Any:
    """`Field(ge=..., le=...)` of a hyperparameter, for use inside `Annotated[...]`."""
    return Field(**constraints(HyperparametersSpec.model_fields[name]))


# -- the request model ----------------------------------------------------------------------
def _request_field(field: RequestField) -> tuple[Any, Any]:
    """(annotation, Field) of one request field, read from the contract."""
    info = spec_field(field.path)
    annotation: Any = info.annotation
    description = field.description or info.description
    if field.kind == "group":
        return unwrap_optional(annotation) | None, Field(None, description=description)
    if field.kind == "secret":
        name = constraints(SecretRef.model_fields["name"])
        return str | None, Field(None, description=description, **name)
    kwargs = constraints(info, pattern=field.pattern)
    if field.required:
        return annotation, Field(..., description=description, **kwargs)
    if info.is_required() or in_optional_group(field.path):  # output.s3.uri, promotion.alias
        return annotation | None, Field(None, description=description, **kwargs)
    default = info.get_default(call_default_factory=True)
    return annotation, Field(default, description=description, **kwargs)


class RequestModel(BaseModel):
    """Unknown fields are an error, never silently dropped; values are not coerced."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"model": "tiny", "dataset_url": "data/frigo_training.csv"}]
        },
    )

    if TYPE_CHECKING:  # the generated fields, for the type checker

        def __getattr__(self, name: str) -> Any: ...


if TYPE_CHECKING:
    _StartRequestFields = RequestModel
else:
    _StartRequestFields = create_model(
        "StartRequestFields",
        __base__=RequestModel,
        **{field.name: _request_field(field) for field in FIELDS},
    )


class StartRequest(_StartRequestFields):
    """`POST /api/finetune/start`: the original API's five fields, then the resource's options.

    Nested option groups reuse the spec's own models (`lora`, `resources`, `distributed`,
    `scheduling`, `checkpoint`); they accept snake_case or camelCase keys.
    """


# -- spec paths -------------------------------------------------------------------------------
def spec_value(spec: BaseModel, path: tuple[str, ...]) -> Any:
    """The value at a spec path (None when a group on the way is unset)."""
    value: Any = spec
    for part in path:
        if value is None:
            return None
        value = getattr(value, part)
    return value


def field_for_error(loc: tuple[str | int, ...]) -> str:
    """The request field a spec validation error is about: the field stored at the deepest
    path that holds `loc`, else the first field stored under it."""
    path = _camel(str(part) for part in loc)
    if not path:
        return "body"
    holding = [f for f in FIELDS if path[: len(f.path)] == _camel(f.path)]
    if holding:
        return max(holding, key=lambda f: len(f.path)).name
    under = [f for f in FIELDS if _camel(f.path)[: len(path)] == path]
    return under[0].name if under else str(loc[0])


def _camel(parts: Iterable[str]) -> tuple[str, ...]:
    """Spec path parts as the spec's aliases (errors name fields by alias)."""
    return tuple(to_camel(part) for part in parts)
