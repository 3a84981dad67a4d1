"""Render the FineTuneJob CRD from the typed models: `python -m kubetune_crd.generate`.

Writes `manifests/crds/` and the Helm chart's `charts/kubetune/crds/` copy. With `--check`
it writes nothing and exits 1 when a committed file differs from what the models give.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from kubetune_crd.resource import CATEGORIES, CRD_NAME, GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR
from kubetune_crd.resource import VERSION as API_VERSION_NAME
from kubetune_crd.schema import structural_schema
from kubetune_crd.spec import FineTuneJobSpec
from kubetune_crd.status import FineTuneJobStatus

REPO = Path(__file__).resolve().parents[2]
CRD_FILENAME = f"{GROUP}_{PLURAL}.yaml"
TARGETS = (
    REPO / "manifests" / "crds" / CRD_FILENAME,
    REPO / "charts" / "kubetune" / "crds" / CRD_FILENAME,
)

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


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict (pure)."""
    spec_schema = structural_schema(FineTuneJobSpec)
    # "exactly one of pvc or s3" (the model validator), in a form structural schemas allow.
    spec_schema["properties"]["output"]["oneOf"] = [{"required": ["pvc"]}, {"required": ["s3"]}]
    status_schema = structural_schema(FineTuneJobStatus, keep_defaults=False)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "annotations": {"kubetune.io/generated-by": "python -m kubetune_crd.generate"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION_NAME,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "FineTuneJob fine-tunes a language model on a dataset.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": METADATA_SCHEMA,
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = (
        "# Generated from the typed models in operator/kubetune_crd by `make crds`. Do not edit.\n"
    )
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    text = render()
    stale = [p for p in TARGETS if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(REPO)} (run `make crds`)", file=sys.stderr)
        return 1 if stale else 0
    for path in TARGETS:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
