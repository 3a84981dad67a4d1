"""Operations endpoints: liveness, readiness (the job cache is listed) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubetune_api.deps import State

router = APIRouter(tags=["ops"])


@router.get("/healthz", include_in_schema=True)
async def healthz() -> dict[str, str]:
    """The process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(state: State) -> JSONResponse:
    """Ready once the job cache is listed (and API keys loaded, unless auth is off)."""
    store = state.store
    checks = {
        "cache_synced": bool(store and store.jobs.synced()),
        "watch_running": bool(store and store.jobs.watching()),
        "api_keys_loaded": state.settings.auth_disabled
        or bool(state.keyring and state.keyring.loaded.is_set()),
    }
    ready = all(checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", **checks},
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: State) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
