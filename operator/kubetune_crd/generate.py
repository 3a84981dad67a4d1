"""Render the CRDs from the typed models: `python -m kubetune_crd.generate`.

Writes the FineTuneJob, FineTuneSchedule, FineTunedModel and ModelAlias CRDs into
`manifests/crds/` and the Helm chart's `charts/kubetune/crds/` copy. With `--check` it writes
nothing and exits 1 when a committed file differs from what the models give.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kubetune_crd import names
from kubetune_crd.promotion import ALIAS_MAX
from kubetune_crd.registry import (
    ALIAS_KIND,
    ALIAS_PLURAL,
    ALIAS_SHORT_NAMES,
    ALIAS_SINGULAR,
    MODEL_KIND,
    MODEL_PLURAL,
    MODEL_SHORT_NAMES,
    MODEL_SINGULAR,
    FineTunedModelSpec,
    ModelAliasSpec,
    ModelAliasStatus,
)
from kubetune_crd.resource import (
    CATEGORIES,
    CRD_NAME,
    GROUP,
    KIND,
    PLURAL,
    SCHEDULE_CRD_NAME,
    SCHEDULE_KIND,
    SCHEDULE_PLURAL,
    SCHEDULE_SHORT_NAMES,
    SCHEDULE_SINGULAR,
    SHORT_NAMES,
    SINGULAR,
)
from kubetune_crd.resource import VERSION as API_VERSION_NAME
from kubetune_crd.schedule import FineTuneScheduleSpec, FineTuneScheduleStatus
from kubetune_crd.schema import structural_schema
from kubetune_crd.spec import FineTuneJobSpec
from kubetune_crd.status import FineTuneJobStatus

REPO = Path(__file__).resolve().parents[2]
CRD_FILENAME = f"{GROUP}_{PLURAL}.yaml"
SCHEDULE_CRD_FILENAME = f"{GROUP}_{SCHEDULE_PLURAL}.yaml"
MODEL_CRD_FILENAME = f"{GROUP}_{MODEL_PLURAL}.yaml"
ALIAS_CRD_FILENAME = f"{GROUP}_{ALIAS_PLURAL}.yaml"
TARGET_DIRS = (REPO / "manifests" / "crds", REPO / "charts" / "kubetune" / "crds")

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Progress",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.progress.fraction",
    },
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss", "priority": 1},
    {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]

# The batch/v1 Job is named like the FineTuneJob, and its pods `<name>-xxxxx` carry the name in
# a 63-character label value: 52 characters leave room for what Kubernetes appends.
MAX_NAME_LENGTH = 52
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {
            "type": "string",
            "maxLength": MAX_NAME_LENGTH,
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        }
    },
}


# "exactly one of pvc or s3" (the model validator), in a form structural schemas allow.
_ONE_OUTPUT = [{"required": ["pvc"]}, {"required": ["s3"]}]

SCHEDULE_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Last Run", "type": "date", "jsonPath": ".status.lastRunTime"},
    {"name": "Last Result", "type": "string", "jsonPath": ".status.lastResult"},
    # a string: kubectl prints a date in the future as <invalid>
    {"name": "Next Run", "type": "string", "jsonPath": ".status.nextScheduleTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Time Zone", "type": "string", "jsonPath": ".spec.timeZone", "priority": 1},
]


def _metadata_schema(max_length: int) -> dict[str, Any]:
    return {
        **METADATA_SCHEMA,
        "properties": {"name": {**METADATA_SCHEMA["properties"]["name"], "maxLength": max_length}},
    }


def _crd(
    crd_name: str,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    description: str,
    columns: list[dict[str, Any]],
    properties: dict[str, Any],
    status: bool = True,
) -> dict[str, Any]:
    """A namespaced CustomResourceDefinition, with a status subresource unless `status` is
    False (pure)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": crd_name,
            "annotations": {"kubetune.io/generated-by": "python -m kubetune_crd.generate"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": CATEGORIES,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION_NAME,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}} if status else {},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                **properties,
                            },
                        }
                    },
                }
            ],
        },
    }


def build_crd() -> dict[str, Any]:
    """The FineTuneJob CustomResourceDefinition as a dict (pure)."""
    spec_schema = structural_schema(FineTuneJobSpec)
    spec_schema["properties"]["output"]["oneOf"] = _ONE_OUTPUT
    return _crd(
        CRD_NAME,
        KIND,
        PLURAL,
        SINGULAR,
        SHORT_NAMES,
        "FineTuneJob fine-tunes a language model on a dataset.",
        PRINTER_COLUMNS,
        {
            "metadata": METADATA_SCHEMA,
            "spec": spec_schema,
            "status": structural_schema(FineTuneJobStatus, keep_defaults=False),
        },
    )


def build_schedule_crd() -> dict[str, Any]:
    """The FineTuneSchedule CustomResourceDefinition as a dict (pure)."""
    spec_schema = structural_schema(FineTuneScheduleSpec)
    spec_schema["properties"]["jobTemplate"]["properties"]["output"]["oneOf"] = _ONE_OUTPUT
    return _crd(
        SCHEDULE_CRD_NAME,
        SCHEDULE_KIND,
        SCHEDULE_PLURAL,
        SCHEDULE_SINGULAR,
        SCHEDULE_SHORT_NAMES,
        "FineTuneSchedule creates a FineTuneJob from its template at each slot of a cron schedule.",
        SCHEDULE_PRINTER_COLUMNS,
        {
            "metadata": _metadata_schema(names.SCHEDULE_NAME_MAX),
            "spec": spec_schema,
            "status": structural_schema(FineTuneScheduleStatus, keep_defaults=False),
        },
    )


MODEL_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Base", "type": "string", "jsonPath": ".spec.model.baseModelAlias"},
    {"name": "Bits/Byte", "type": "number", "jsonPath": ".spec.metrics.bitsPerByteAfter"},
    {"name": "Job", "type": "string", "jsonPath": ".spec.job", "priority": 1},
    {"name": "Path", "type": "string", "jsonPath": ".spec.model.uri", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
ALIAS_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".status.current.model"},
    {"name": "Version", "type": "integer", "jsonPath": ".status.current.version"},
    {"name": "Bits/Byte", "type": "number", "jsonPath": ".status.current.bitsPerByte"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_model_crd() -> dict[str, Any]:
    """The FineTunedModel CustomResourceDefinition as a dict (pure)."""
    return _crd(
        f"{MODEL_PLURAL}.{GROUP}",
        MODEL_KIND,
        MODEL_PLURAL,
        MODEL_SINGULAR,
        MODEL_SHORT_NAMES,
        "FineTunedModel records one stored model: location, lineage and metrics.",
        MODEL_PRINTER_COLUMNS,
        {
            "metadata": METADATA_SCHEMA,
            "spec": structural_schema(FineTunedModelSpec),
        },
        status=False,
    )


def build_alias_crd() -> dict[str, Any]:
    """The ModelAlias CustomResourceDefinition as a dict (pure)."""
    return _crd(
        f"{ALIAS_PLURAL}.{GROUP}",
        ALIAS_KIND,
        ALIAS_PLURAL,
        ALIAS_SINGULAR,
        ALIAS_SHORT_NAMES,
        "ModelAlias names the model in use and keeps the history of its promotions.",
        ALIAS_PRINTER_COLUMNS,
        {
            "metadata": _metadata_schema(ALIAS_MAX),
            "spec": structural_schema(ModelAliasSpec),
            "status": structural_schema(ModelAliasStatus, keep_defaults=False),
        },
    )


CRDS: dict[str, Callable[[], dict[str, Any]]] = {
    CRD_FILENAME: build_crd,
    SCHEDULE_CRD_FILENAME: build_schedule_crd,
    MODEL_CRD_FILENAME: build_model_crd,
    ALIAS_CRD_FILENAME: build_alias_crd,
}


def render(filename: str = CRD_FILENAME) -> str:
    """The YAML text of one CRD file."""
    header = (
        "# Generated from the typed models in operator/kubetune_crd by `make crds`. Do not edit.\n"
    )
    return header + yaml.safe_dump(CRDS[filename](), sort_keys=False, width=100)


def targets() -> list[tuple[Path, str]]:
    """Every file this writes, with the text it must hold."""
    return [(folder / name, render(name)) for folder in TARGET_DIRS for name in CRDS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    wanted = targets()
    stale = [p for p, text in wanted if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(REPO)} (run `make crds`)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in wanted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
