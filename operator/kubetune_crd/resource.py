"""The FineTuneJob resource as a whole: identity constants and the typed object (and the
FineTuneSchedule's identity constants)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kubetune_crd.base import CamelModel
from kubetune_crd.spec import FineTuneJobSpec
from kubetune_crd.status import FineTuneJobStatus

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ["ftj"]
CATEGORIES = ["kubetune"]
CRD_NAME = f"{PLURAL}.{GROUP}"

# FineTuneSchedule (its typed object lives in kubetune_crd.schedule: it needs croniter).
SCHEDULE_KIND = "FineTuneSchedule"
SCHEDULE_PLURAL = "finetuneschedules"
SCHEDULE_SINGULAR = "finetuneschedule"
SCHEDULE_SHORT_NAMES = ["fts"]
SCHEDULE_CRD_NAME = f"{SCHEDULE_PLURAL}.{GROUP}"


class FineTuneJob(CamelModel):
    """A FineTuneJob object as stored by the apiserver."""

    api_version: str = Field(default=API_VERSION)
    kind: str = Field(default=KIND)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FineTuneJobSpec
    status: FineTuneJobStatus = Field(default_factory=FineTuneJobStatus)

    @classmethod
    def from_k8s(cls, obj: dict[str, Any]) -> FineTuneJob:
        """Parse an object read from the apiserver (status may be missing or partial)."""
        return cls.model_validate(
            {
                "apiVersion": obj.get("apiVersion", API_VERSION),
                "kind": obj.get("kind", KIND),
                "metadata": obj.get("metadata") or {},
                "spec": obj.get("spec") or {},
                "status": obj.get("status") or {},
            }
        )
