"""OpenAI-compatible `GET /v1/models` and `GET /v1/models/{model}`: the tenant's registry.

The same models as `/api/finetune/models` (FineTunedModel records, then Succeeded jobs'
models), in OpenAI's list shape, so `openai.OpenAI(base_url=<api>/v1).models.list()` shows
what a tenant has fine-tuned. `owned_by` is the tenant (its namespace, as a job's
`organization_id`). An unknown model, another tenant's included, is OpenAI's 404
(`code: model_not_found`, `param: model`).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from kubetune_crd import names

from kubetune_api.deps import CurrentTenant, State
from kubetune_api.error_answers import openai_error
from kubetune_api.model_views import openai_model
from kubetune_api.routes.registry import tenant_models
from kubetune_api.schemas import OpenAIModel, OpenAIModelList

router = APIRouter(prefix="/v1", tags=["openai"])

MODEL_NAME = re.compile(names.MODEL_NAME_PATTERN)
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    404: {"description": "Unknown model (or another tenant's): OpenAI's error shape"},
}


@router.get("/models", response_model=OpenAIModelList, responses=_ERRORS)
async def list_models(state: State, tenant: CurrentTenant) -> OpenAIModelList:
    """The tenant's fine-tuned models, newest first (OpenAI's `client.models.list`)."""
    rows = await tenant_models(state, tenant)
    return OpenAIModelList(data=[openai_model(row, tenant.namespace) for row in rows])


@router.get("/models/{model:path}", response_model=OpenAIModel, responses=_ERRORS)
async def retrieve_model(
    model: str, state: State, tenant: CurrentTenant
) -> OpenAIModel | JSONResponse:
    """One model (OpenAI's `client.models.retrieve`)."""
    rows = await tenant_models(state, tenant) if MODEL_NAME.match(model) else []
    row = next((r for r in rows if r.entry.name == model), None)
    if row is None:
        message = f"The model '{model}' does not exist or you do not have access to it."
        return openai_error(404, message, "model", "model_not_found")
    return openai_model(row, tenant.namespace)
