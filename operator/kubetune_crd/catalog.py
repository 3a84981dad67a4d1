"""The model catalog: configurable aliases (phi, mistral, tiny...) for real model ids.

Aliases are configuration, not code: the API and the operator load the same YAML file
(`KUBETUNE_CATALOG_FILE`, mounted from a ConfigMap in the cluster), falling back to the
packaged default. A model that is not an alias may still be a Hugging Face id or a path.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CATALOG_FILE = Path(__file__).with_name("default_catalog.yaml")


class CatalogEntry(BaseModel):
    """One alias."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Hugging Face model id or local path.")
    description: str = ""
    parameters: str | None = None


class Catalog(BaseModel):
    """All aliases, in the file's order."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, CatalogEntry] = Field(default_factory=dict)

    @property
    def aliases(self) -> list[str]:
        return list(self.models)

    def resolve(self, name: str) -> tuple[str, str | None]:
        """(model id or path, alias or None) for a spec's `model` value."""
        entry = self.models.get(name)
        if entry is not None:
            return entry.model, name
        return name, None


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load the catalog YAML (the packaged default when `path` is empty)."""
    source = Path(path) if path else DEFAULT_CATALOG_FILE
    data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    return Catalog.model_validate(data)
