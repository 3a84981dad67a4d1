"""`/api/finetune/models*` and `/api/finetune/aliases*`: the model registry (the operator
writes it; here it is read, and a manual promote or rollback is asked for).

Thin handlers: the store reads the records (blocking calls, run in a worker thread), the
pure `model_views` shapes them. Names are checked before anything is read, so a name no
record can have is a 404, never an apiserver error. A promote or rollback is 202: it writes
the alias's `spec.request`, the operator publishes the pointer and records the decision
(`pending` until then); the model must be one of this tenant's registry records.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, HTTPException, Query
from kubetune_crd import names
from kubetune_crd.promotion import ALIAS_MAX, ALIAS_PATTERN
from kubetune_crd.registry import AliasAction, AliasRequest, ModelAlias

from kubetune_api.auth import Tenant
from kubetune_api.deps import AppState, CurrentTenant, State
from kubetune_api.model_views import (
    ModelRow,
    alias_view,
    aliases_view,
    compare_view,
    current_models,
    model_detail,
    model_rows,
    models_view,
    pending_request,
    rollback_target,
)
from kubetune_api.schemas import (
    AliasesResponse,
    AliasView,
    CompareResponse,
    ModelDetail,
    ModelsResponse,
    PromoteRequest,
)

router = APIRouter(prefix="/api/finetune", tags=["models"])

MODEL_NAME = re.compile(names.MODEL_NAME_PATTERN)
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    404: {"description": "Unknown model or alias (or another tenant's)"},
}
_ASK_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"description": "A request is pending, nothing to roll back to, or no record"},
    422: {"description": "Invalid alias or model name"},
}


async def tenant_models(state: AppState, tenant: Tenant) -> list[ModelRow]:
    """The tenant's models (registry records, then Succeeded jobs' models), newest first."""
    store = state.require_store()
    jobs = await store.jobs.in_namespace(tenant.namespace)  # first: an unsynced cache says so
    records = await anyio.to_thread.run_sync(store.registry.models, tenant.namespace)
    return model_rows(records, jobs)


async def _aliases(state: AppState, tenant: Tenant) -> dict[str, str]:
    registry = state.require_store().registry
    return current_models(await anyio.to_thread.run_sync(registry.aliases, tenant.namespace))


def _valid_alias(alias: str) -> bool:
    return len(alias) <= ALIAS_MAX and re.fullmatch(ALIAS_PATTERN, alias) is not None


async def _read_alias(state: AppState, tenant: Tenant, alias: str) -> dict[str, Any] | None:
    """The tenant's ModelAlias (None: none of that name; `alias` was checked valid)."""
    registry = state.require_store().registry
    return await anyio.to_thread.run_sync(registry.alias, tenant.namespace, alias)


async def _existing_alias(state: AppState, tenant: Tenant, alias: str) -> dict[str, Any]:
    """The tenant's ModelAlias; 404 for a name no alias can have or one that is not there."""
    obj = await _read_alias(state, tenant, alias) if _valid_alias(alias) else None
    if obj is None:
        raise HTTPException(status_code=404, detail=f"alias {alias} not found")
    return obj


def _find(rows: list[ModelRow], name: str) -> ModelRow:
    found = (
        next((r for r in rows if r.entry.name == name), None) if MODEL_NAME.match(name) else None
    )
    if found is None:
        raise HTTPException(status_code=404, detail=f"model {name} not found")
    return found


@router.get("/models", response_model=ModelsResponse, responses=_ERRORS)
async def models(
    state: State,
    tenant: CurrentTenant,
    base_model: Annotated[str | None, Query(max_length=256, description="Only this base.")] = None,
    alias: Annotated[
        str | None, Query(max_length=ALIAS_MAX, description="Only the alias's current model.")
    ] = None,
) -> ModelsResponse:
    """Fine-tuned models (the registry: they outlive their jobs), newest first; `latest`
    marks the newest per base model."""
    rows = await tenant_models(state, tenant)
    current: str | None = None
    if alias is not None:
        current = (await _aliases(state, tenant)).get(alias, "")
    return models_view(rows, base_model=base_model, current=current)


@router.get("/models/compare", response_model=CompareResponse, responses=_ERRORS)
async def compare(
    state: State,
    tenant: CurrentTenant,
    model: Annotated[str, Query(max_length=128, description="Compare with this model's data.")],
) -> CompareResponse:
    """Models fine-tuned on the same data (sha256, split, seed) as `model`, ranked by held-out
    bits per byte (comparable across tokenizers; lower is better)."""
    rows = await tenant_models(state, tenant)
    reference = _find(rows, model)
    if reference.record is None:
        detail = f"model {model} has no registry record (trained before the registry)"
        raise HTTPException(status_code=409, detail=detail)
    return compare_view(rows, reference)


@router.get("/models/{name}", response_model=ModelDetail, responses=_ERRORS)
async def model(name: str, state: State, tenant: CurrentTenant) -> ModelDetail:
    """One model with its lineage: job, dataset, hyperparameters, metrics, answers, aliases."""
    row = _find(await tenant_models(state, tenant), name)
    return model_detail(row, await _aliases(state, tenant))


@router.get("/aliases", response_model=AliasesResponse, responses=_ERRORS)
async def list_aliases(state: State, tenant: CurrentTenant) -> AliasesResponse:
    """The tenant's aliases by name: each one's current model and its last decision."""
    registry = state.require_store().registry
    return aliases_view(await anyio.to_thread.run_sync(registry.aliases, tenant.namespace))


@router.get("/aliases/{alias}", response_model=AliasView, responses=_ERRORS)
async def get_alias(alias: str, state: State, tenant: CurrentTenant) -> AliasView:
    """The alias's current model and the history of its decisions (both figures each)."""
    obj = await _existing_alias(state, tenant, alias)
    return alias_view(obj)


def _refuse_pending(alias: str, obj: dict[str, Any] | None) -> None:
    """One request at a time: 409 while the operator has not decided the last one."""
    pending = pending_request(ModelAlias.from_k8s(obj)) if obj is not None else None
    if pending is not None:
        detail = f"alias {alias}: {pending.action} to {pending.model} is pending"
        raise HTTPException(status_code=409, detail=detail)


async def _ask(
    state: AppState,
    tenant: Tenant,
    alias: str,
    obj: dict[str, Any] | None,
    action: AliasAction,
    model_name: str,
) -> AliasView:
    """Write the alias's request for `model_name` (a record of this tenant), 202."""
    row = _find(await tenant_models(state, tenant), model_name)
    if row.record is None:
        detail = f"model {model_name} has no registry record (trained before the registry)"
        raise HTTPException(status_code=409, detail=detail)
    request = AliasRequest(
        id=secrets.token_hex(8),
        action=action,
        model=model_name,
        record=str(row.record.metadata.get("name")),
        time=names.now_rfc3339(),
    )
    version = obj["metadata"].get("resourceVersion") if obj else None
    registry = state.require_store().registry
    updated = await anyio.to_thread.run_sync(
        registry.ask, tenant.namespace, alias, request.to_k8s(), version
    )
    return alias_view(updated)


@router.post(
    "/aliases/{alias}/promote", response_model=AliasView, status_code=202, responses=_ASK_ERRORS
)
async def promote(
    alias: str, body: PromoteRequest, state: State, tenant: CurrentTenant
) -> AliasView:
    """Point the alias at a model now (a person decides: no comparison). The alias is
    created when it does not exist; `pending` until the operator has published it."""
    if not _valid_alias(alias):
        detail = f"invalid alias {alias!r}: a DNS label (lowercase letters, digits, '-')"
        raise HTTPException(status_code=422, detail=detail)
    obj = await _read_alias(state, tenant, alias)
    _refuse_pending(alias, obj)
    return await _ask(state, tenant, alias, obj, "promote", body.model)


@router.post(
    "/aliases/{alias}/rollback", response_model=AliasView, status_code=202, responses=_ASK_ERRORS
)
async def rollback(alias: str, state: State, tenant: CurrentTenant) -> AliasView:
    """Point the alias back at the model it named before its current one."""
    obj = await _existing_alias(state, tenant, alias)
    _refuse_pending(alias, obj)
    target = rollback_target(ModelAlias.from_k8s(obj))
    if target is None:
        raise HTTPException(status_code=409, detail=f"alias {alias}: nothing to roll back to")
    return await _ask(state, tenant, alias, obj, "rollback", target)
