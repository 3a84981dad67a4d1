"""Pure mapping from FineTuneJob objects to what the API answers.

A `JobRecord` is built once per object version (when the watch delivers it), so reads only
look it up. Status words follow the original API on `/api/finetune/*` (`completed` when done).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from kubetune_crd.names import (
    ANNOTATION_JOB_ID,
    ANNOTATION_REQUEST_HASH,
    LABEL_IDEMPOTENCY,
    format_time,
    name_to_job_id,
    parse_time,
)
from kubetune_crd.promotion import PromotionOutcome
from kubetune_crd.spec import HyperparametersSpec
from kubetune_crd.status import FineTuneJobStatus
from pydantic import ValidationError

from kubetune_api.schemas import AliasDecision, JobStatus, OriginalStatus, SampleAnswer

log = logging.getLogger(__name__)

PHASE_TO_ORIGINAL: dict[str, OriginalStatus] = {
    "Pending": "pending",
    "Validating": "pending",  # the CPU pre-flight: the original API had no such word
    "Running": "running",
    "Succeeded": "completed",
    "Failed": "failed",
    "Cancelled": "cancelled",
}


def original_time(when: datetime | None) -> str | None:
    """The original API's time form `2024-01-15T10:30:45`: the shared format without its `Z`."""
    return format_time(when).removesuffix("Z") if when else None


def rv_int(resource_version: str | None) -> int | None:
    try:
        return int(resource_version or "")
    except ValueError:
        return None


@dataclass(frozen=True)
class JobRecord:
    """One FineTuneJob as the API sees it."""

    namespace: str
    name: str
    job_id: str
    obj: dict[str, Any] = field(repr=False)
    status: FineTuneJobStatus
    resource_version: str
    created: datetime | None
    model: str
    idempotency_hash: str | None
    request_hash: str | None
    cancel: bool

    @cached_property
    def status_json(self) -> bytes:
        """The original API's status body, serialised once per object version."""
        return job_status(self).model_dump_json().encode()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def phase(self) -> str | None:
        return self.status.phase

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.obj.get("spec")
        return spec if isinstance(spec, dict) else {}

    @cached_property
    def hyperparameters(self) -> HyperparametersSpec:
        """The stored hyperparameters, defaults filled in by the contract."""
        try:
            return HyperparametersSpec.model_validate(self.spec.get("hyperparameters") or {})
        except ValidationError as exc:
            log.warning("unreadable hyperparameters of %s/%s: %s", self.namespace, self.name, exc)
            return HyperparametersSpec()

    @property
    def annotations(self) -> dict[str, str]:
        meta = self.obj.get("metadata") or {}
        return meta.get("annotations") or {}

    @property
    def uid(self) -> str | None:
        uid = (self.obj.get("metadata") or {}).get("uid")
        return str(uid) if uid else None

    @property
    def original_status(self) -> OriginalStatus:
        return original_status(self.status)

    @property
    def created_ts(self) -> float:
        return self.created.timestamp() if self.created else 0.0

    def annotation_json(self, key: str) -> dict[str, Any]:
        """A JSON object the API stored in an annotation ({} when absent or unreadable)."""
        raw = self.annotations.get(key)
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def record_from_obj(obj: dict[str, Any]) -> JobRecord:
    """Build the record of an object read from the apiserver (tolerant of odd statuses)."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    raw_status = obj.get("status") or {}
    try:
        status = FineTuneJobStatus.model_validate(raw_status)
    except ValidationError as exc:
        log.warning("unreadable status of %s/%s: %s", meta.get("namespace"), name, exc)
        status = FineTuneJobStatus()
    spec = obj.get("spec") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return JobRecord(
        namespace=str(meta.get("namespace", "")),
        name=name,
        job_id=annotations.get(ANNOTATION_JOB_ID) or name_to_job_id(name),
        obj=obj,
        status=status,
        resource_version=str(meta.get("resourceVersion", "")),
        created=parse_time(meta.get("creationTimestamp")),
        model=str(spec.get("model", "")),
        idempotency_hash=labels.get(LABEL_IDEMPOTENCY),
        request_hash=annotations.get(ANNOTATION_REQUEST_HASH),
        cancel=bool(spec.get("cancel", False)),
    )


def alias_decision(outcome: PromotionOutcome | None) -> AliasDecision | None:
    """A job's (or a schedule's latest run's) promotion decision, as the API shows it."""
    return AliasDecision(**outcome.model_dump()) if outcome else None


def original_status(status: FineTuneJobStatus) -> OriginalStatus:
    """The original API's status word of a FineTuneJob status."""
    phase = status.phase
    if phase is None:
        return "pending"
    if phase == "Pending" and status.pending is not None and status.pending.reason == "Queued":
        return "queued"
    return PHASE_TO_ORIGINAL.get(phase, "pending")


def model_location(status: FineTuneJobStatus) -> str | None:
    """The original API's `model_path`: `models/<name>` on the PVC, or the S3 URI."""
    if status.model is None:
        return None
    return status.model.path or status.model.uri


def job_status(rec: JobRecord) -> JobStatus:
    st = rec.status
    progress = st.progress
    fraction = 1.0 if st.phase == "Succeeded" else (progress.fraction if progress else 0.0)
    return JobStatus(
        job_id=rec.job_id,
        status=rec.original_status,
        progress=max(0.0, min(1.0, fraction)),
        model_path=model_location(st) if st.phase == "Succeeded" else None,
        model=rec.model or None,
        phase=st.phase,
        message=st.message,
        stage=progress.stage if progress else None,
        step=progress.step if progress else None,
        total_steps=progress.total_steps if progress else None,
        epoch=progress.epoch if progress else None,
        loss=progress.loss if progress else None,
        eta_seconds=progress.eta_seconds if progress else None,
        world_size=st.world_size,
        effective_batch_size=st.effective_batch_size,
        pending_reason=st.pending.reason if st.pending else None,
        pending_message=st.pending.message if st.pending else None,
        failure_reason=st.failure.reason if st.failure else None,
        failure_message=st.failure.message if st.failure else None,
        cancel_requested=rec.cancel,
        created=(rec.obj.get("metadata") or {}).get("creationTimestamp"),
        started=st.start_time,
        finished=st.completion_time,
        metrics=st.metrics.model_dump(exclude_none=True) if st.metrics else None,
        samples=[SampleAnswer(prompt=s.prompt, before=s.before, after=s.after) for s in st.samples],
        promotion=alias_decision(st.promotion),
    )


def sort_newest_first(records: Iterable[JobRecord]) -> list[JobRecord]:
    return sorted(records, key=lambda r: (r.created_ts, r.name), reverse=True)
