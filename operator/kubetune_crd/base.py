"""The base model every FineTuneJob type derives from.

Kubernetes resources use camelCase field names; Python code uses snake_case. One base class
maps between the two so the typed models, the generated CRD and the API agree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from typing_extensions import Self


class CamelModel(BaseModel):
    """A model serialised with camelCase keys; unknown keys are an error (no silent loss)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )

    def to_k8s(self) -> dict[str, object]:
        """The camelCase dict a Kubernetes object holds, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(CamelModel):
    """Status types tolerate fields they do not know (written by a newer operator)."""

    model_config = ConfigDict(extra="ignore")


class StoredObject(CamelModel):
    """A whole resource as the apiserver stores it: subclasses declare `api_version` and `kind`
    (with their defaults), `metadata`, a typed `spec` and (unless a record) a typed `status`."""

    @classmethod
    def from_k8s(cls, obj: dict[str, Any]) -> Self:
        """Parse an object read from the apiserver (status may be missing or partial)."""
        fields = cls.model_fields
        data = {
            "apiVersion": obj.get("apiVersion", fields["api_version"].default),
            "kind": obj.get("kind", fields["kind"].default),
            "metadata": obj.get("metadata") or {},
            "spec": obj.get("spec") or {},
        }
        if "status" in fields:  # a record kind (FineTunedModel) has spec only
            data["status"] = obj.get("status") or {}
        return cls.model_validate(data)


DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1123 label (Kubernetes object names such as claims and secrets)."""


class SecretRef(CamelModel):
    """A Secret in the FineTuneJob's namespace."""

    name: str = Field(pattern=DNS_LABEL, max_length=253, description="Secret name.")
