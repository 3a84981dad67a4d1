"""Labels, owner reference and metadata of every object the operator creates for a FineTuneJob.

The Job, its pods, and a multi-node run's headless Service and NetworkPolicy all carry the
same labels (the operator's watches select by them) and the FineTuneJob as their controller
owner (deleting the FineTuneJob garbage-collects them; no finalizer).
"""

from __future__ import annotations

from typing import Any

from kubetune_crd import names
from kubetune_crd.resource import API_VERSION, KIND, FineTuneJob

Manifest = dict[str, Any]


def job_labels(name: str) -> dict[str, str]:
    """Labels on the Job, its pods and its gang objects."""
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_FINETUNEJOB: name,
        names.LABEL_COMPONENT: names.COMPONENT_TRAINER,
    }


def pod_selector(name: str) -> dict[str, str]:
    """matchLabels of the trainer pods of one FineTuneJob."""
    return {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_FINETUNEJOB: name}


def controller_reference(api_version: str, kind: str, metadata: dict[str, Any]) -> Manifest:
    """A controller owner reference: deleting the owner garbage-collects the object."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owner_reference(ftj: FineTuneJob) -> Manifest:
    """The FineTuneJob as the controller owner of an object made for it."""
    return controller_reference(API_VERSION, KIND, ftj.metadata)


def owned_metadata(ftj: FineTuneJob, name: str, labels: dict[str, str] | None = None) -> Manifest:
    """metadata of an object owned by `ftj` (metadata must hold name and uid)."""
    return {
        "name": name,
        "namespace": str(ftj.metadata.get("namespace", "default")),
        "labels": labels if labels is not None else job_labels(str(ftj.metadata["name"])),
        "annotations": {names.ANNOTATION_UID: str(ftj.metadata["uid"])},
        "ownerReferences": [owner_reference(ftj)],
    }
