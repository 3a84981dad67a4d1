"""The model registry as the API answers it: the models list, a model's page, the comparison
of models trained on the same data, and an alias with its history (pure functions).

The list keeps the original API's shape (name, base_model, created, size_mb, latest, path)
and reads the FineTunedModel records, which outlive their jobs; a Succeeded job whose record
is not there (an operator older than the registry) is listed from its status, so no model is
ever missing. Records win over jobs for the same model name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubetune_crd.names import name_to_job_id, parse_time
from kubetune_crd.registry import AliasRequest, FineTunedModel, ModelAlias
from kubetune_crd.status import Metrics, ModelInfo
from pydantic import ValidationError

from kubetune_api.schemas import (
    AliasDecision,
    AliasesResponse,
    AliasSummary,
    AliasView,
    CompareEntry,
    CompareResponse,
    ModelDetail,
    ModelEntry,
    ModelsResponse,
    OpenAIModel,
    PendingRequest,
    SampleAnswer,
)
from kubetune_api.views import JobRecord, original_time

log = logging.getLogger(__name__)
EPOCH = datetime.fromtimestamp(0, timezone.utc)


@dataclass(frozen=True)
class ModelRow:
    """One model: when it was written, its list entry, its record (None: from a job)."""

    written: datetime
    entry: ModelEntry
    record: FineTunedModel | None = None


def size_mb(size_bytes: int | None) -> int:
    """Whole MiB, rounded up so a non-empty model never shows 0."""
    if not size_bytes:
        return 0
    return max(1, math.ceil(size_bytes / (1024 * 1024)))


def _entry(
    info: ModelInfo, base: str, written: datetime | None, job: str, metrics: Metrics | None
) -> ModelEntry:
    return ModelEntry(
        name=info.name,
        base_model=base,
        created=original_time(written),
        size_mb=size_mb(info.size_bytes),
        latest=False,
        path=info.path or info.uri,
        job_id=name_to_job_id(job),
        metrics=metrics.model_dump(exclude_none=True) if metrics else None,
    )


def job_row(rec: JobRecord) -> ModelRow | None:
    """A Succeeded job's model; None for any other job."""
    st = rec.status
    if st.phase != "Succeeded" or st.model is None:
        return None
    info = st.model
    written = parse_time(info.created or st.completion_time) or rec.created
    base = info.base_model_alias or rec.model or info.base_model
    return ModelRow(written or EPOCH, _entry(info, base, written, rec.name, st.metrics))


def record_row(obj: dict[str, Any]) -> ModelRow | None:
    """A FineTunedModel record's row (None for one this API cannot read)."""
    try:
        record = FineTunedModel.from_k8s(obj)
    except ValidationError as exc:
        log.warning(
            "unreadable FineTunedModel %s: %s", (obj.get("metadata") or {}).get("name"), exc
        )
        return None
    info = record.spec.model
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    written = parse_time(info.created or created)
    base = info.base_model_alias or info.base_model
    entry = _entry(info, base, written, record.spec.job, record.spec.metrics)
    return ModelRow(written or EPOCH, entry, record)


def model_rows(records: Iterable[dict[str, Any]], jobs: Iterable[JobRecord]) -> list[ModelRow]:
    """Every model, newest first: the registry's, then jobs' models it does not hold."""
    rows = {row.entry.name: row for row in map(job_row, jobs) if row is not None}
    rows.update({row.entry.name: row for row in map(record_row, records) if row is not None})
    return sorted(rows.values(), key=lambda r: (r.written, r.entry.name), reverse=True)


def current_models(aliases: Iterable[dict[str, Any]]) -> dict[str, str]:
    """alias -> the name of its current model."""
    out: dict[str, str] = {}
    for obj in aliases:
        alias = ModelAlias.from_k8s(obj)
        if alias.status.current is not None:
            out[str(alias.metadata.get("name"))] = alias.status.current.model
    return out


def models_view(
    rows: list[ModelRow], *, base_model: str | None = None, current: str | None = None
) -> ModelsResponse:
    """The original API's models list, newest first, `latest` marking the newest per base;
    filtered by base model and by an alias's current model (`current`: its name)."""
    seen: set[str] = set()
    models: list[ModelEntry] = []
    for row in rows:
        entry = row.entry
        if entry.base_model not in seen:
            seen.add(entry.base_model)
            entry = entry.model_copy(update={"latest": True})
        if base_model is not None and entry.base_model != base_model:
            continue
        if current is not None and entry.name != current:
            continue
        models.append(entry)
    return ModelsResponse(models=models, total=len(models))


def openai_model(row: ModelRow, owner: str) -> OpenAIModel:
    """A model as OpenAI's `/v1/models` lists it (`created` in Unix seconds)."""
    return OpenAIModel(id=row.entry.name, created=int(row.written.timestamp()), owned_by=owner)


def model_detail(row: ModelRow, aliases: dict[str, str]) -> ModelDetail:
    """A model's own page: the list entry, its lineage, metrics and answers."""
    named = sorted(alias for alias, model in aliases.items() if model == row.entry.name)
    record = row.record
    if record is None:
        return ModelDetail(**row.entry.model_dump(), aliases=named)
    spec = record.spec
    return ModelDetail(
        **row.entry.model_dump(),
        aliases=named,
        uri=spec.model.uri,
        format=spec.model.format,
        method=spec.method,
        job=spec.job,
        dataset=spec.dataset.model_dump(),
        hyperparameters=spec.hyperparameters.model_dump(),
        samples=[SampleAnswer(**s.model_dump()) for s in spec.samples],
        files=[f.model_dump() for f in spec.model.files] if spec.model.files else None,
        manifest_sha256=spec.model.manifest_sha256,
    )


def compare_view(rows: list[ModelRow], reference: ModelRow) -> CompareResponse:
    """Models trained on the reference's data (same file sha256, split and seed), ranked by
    held-out bits per byte (lower is better; models without the figure last)."""
    assert reference.record is not None
    data = reference.record.spec.dataset
    same = [
        r
        for r in rows
        if r.record is not None
        and r.record.spec.dataset.sha256 == data.sha256
        and r.record.spec.dataset.validation_split == data.validation_split
        and r.record.spec.dataset.seed == data.seed
    ]

    def figure(row: ModelRow) -> float | None:
        metrics = row.record.spec.metrics if row.record else None
        bpb = metrics.bits_per_byte_after if metrics else None
        return bpb if bpb is not None and math.isfinite(bpb) else None

    ranked = sorted(same, key=lambda r: (figure(r) is None, figure(r) or 0.0, r.entry.name))
    entries = []
    for rank, row in enumerate(ranked, start=1):
        metrics = row.record.spec.metrics if row.record else None
        entries.append(
            CompareEntry(
                rank=rank,
                name=row.entry.name,
                base_model=row.entry.base_model,
                bits_per_byte=figure(row),
                bits_per_byte_before=metrics.bits_per_byte_before if metrics else None,
                eval_loss=metrics.eval_loss_after if metrics else None,
                job=row.record.spec.job if row.record else None,
            )
        )
    return CompareResponse(dataset=data.model_dump(), models=entries, total=len(entries))


def _alias_fields(alias: ModelAlias) -> dict[str, Any]:
    """An alias's summary fields: its current model, last decision, pending request."""
    cur = alias.status.current
    req = pending_request(alias)
    history = alias.status.history
    return {
        "alias": str(alias.metadata.get("name")),
        "model": cur.model if cur else None,
        "path": (cur.path or cur.uri) if cur else None,
        "uri": cur.uri if cur else None,
        "version": cur.version if cur else None,
        "bits_per_byte": cur.bits_per_byte if cur else None,
        "last_decision": AliasDecision(**history[-1].model_dump()) if history else None,
        "pending": PendingRequest(**req.model_dump()) if req else None,
    }


def alias_view(obj: dict[str, Any]) -> AliasView:
    """`GET /api/finetune/aliases/{alias}`: its current model and every decision."""
    alias = ModelAlias.from_k8s(obj)
    history = [AliasDecision(**h.model_dump()) for h in alias.status.history]
    return AliasView(**_alias_fields(alias), history=history)


def aliases_view(objs: Iterable[dict[str, Any]]) -> AliasesResponse:
    """`GET /api/finetune/aliases`: every readable alias, by name (an unreadable one is
    logged and left out, like an unreadable model record)."""
    out: list[AliasSummary] = []
    for obj in objs:
        try:
            alias = ModelAlias.from_k8s(obj)
        except ValidationError as exc:
            name = (obj.get("metadata") or {}).get("name")
            log.warning("unreadable ModelAlias %s: %s", name, exc)
            continue
        out.append(AliasSummary(**_alias_fields(alias)))
    out.sort(key=lambda a: a.alias)
    return AliasesResponse(aliases=out, total=len(out))


def pending_request(alias: ModelAlias) -> AliasRequest | None:
    """The alias's spec.request the operator has not decided yet."""
    req = alias.spec.request
    return req if req is not None and req.id != alias.status.observed_request else None


def rollback_target(alias: ModelAlias) -> str | None:
    """The model the alias named before its current one (None: nothing to go back to)."""
    current = alias.status.current.model if alias.status.current else None
    for decision in reversed(alias.status.history):
        if decision.promoted and decision.model != current:
            return decision.model
    return None
