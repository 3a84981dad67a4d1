"""The FineTuneJob resource as a whole: identity constants and the typed object (and the
FineTuneSchedule's identity constants)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kubetune_crd.base import StoredObject
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


class FineTuneJob(StoredObject):
    """A FineTuneJob object as stored by the apiserver."""

    api_version: str = Field(default=API_VERSION)
    kind: str = Field(default=KIND)
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FineTuneJobSpec
    status: FineTuneJobStatus = Field(default_factory=FineTuneJobStatus)
