"""Turn the pydantic models' JSON Schema into a structural OpenAPI v3 schema for a CRD.

The apiserver accepts only "structural" schemas: no `$ref`, no `anyOf` for optional fields,
no `additionalProperties: false`, `exclusiveMinimum` as a boolean. This module rewrites what
pydantic emits into that dialect, keeping descriptions (for `kubectl explain`), defaults
(applied by the apiserver), enums, ranges and patterns (enforced by the apiserver).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

_DROP_KEYS = {"title", "$defs"}


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    return {k: _resolve(v, defs) for k, v in node.items() if k not in _DROP_KEYS}


def _collapse_optional(node: Schema) -> Schema:
    """`anyOf: [X, {type: null}]` (pydantic's Optional) becomes X; the outer keys win."""
    options = node.get("anyOf")
    if not options:
        return node
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) != 1:
        raise ValueError(f"cannot express a union in a structural schema: {options}")
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    return {**non_null[0], **outer}


def _to_openapi(node: Any, *, keep_defaults: bool) -> Any:
    if isinstance(node, list):
        return [_to_openapi(item, keep_defaults=keep_defaults) for item in node]
    if not isinstance(node, dict):
        return node
    node = _collapse_optional(node)
    out: Schema = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {
                name: _to_openapi(sub, keep_defaults=keep_defaults) for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties"):
            if value is False:
                continue  # closed objects are the default for structural schemas (pruning)
            out[key] = _to_openapi(value, keep_defaults=keep_defaults)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default":
            if keep_defaults and value is not None:
                out[key] = value
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _add_object_defaults(schema: Schema, model: type[BaseModel]) -> None:
    """Give nested objects with a default factory `default: {}` so inner defaults apply."""
    for name, field in model.model_fields.items():
        alias = field.alias or name
        prop = schema.get("properties", {}).get(alias)
        if prop is None:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if field.default_factory is not None:
                prop.setdefault("default", {})
            _add_object_defaults(prop, annotation)
        elif field.default_factory is not None and prop.get("type") == "array":
            prop.setdefault("default", [])


def structural_schema(model: type[BaseModel], *, keep_defaults: bool = True) -> Schema:
    """The CRD-ready OpenAPI v3 schema of `model` (by alias, validation mode)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: Schema = _to_openapi(_resolve(raw, defs), keep_defaults=keep_defaults)
    if keep_defaults:
        _add_object_defaults(schema, model)
    return schema
