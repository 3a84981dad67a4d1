"""Operations endpoints: liveness, readiness (the job cache is listed and in touch with the
apiserver) and Prometheus metrics."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubetune_api.deps import AppState, State
from kubetune_api.store.errors import (
    API_KEYS_NOT_LOADED,
    API_SERVER_UNAVAILABLE,
    CACHE_NOT_SYNCED,
    CACHE_STALE,
    NOT_CONNECTED,
)

router = APIRouter(tags=["ops"])


@router.get("/healthz", include_in_schema=True)
async def healthz() -> dict[str, str]:
    """The process serves requests (liveness: the apiserver being down does not change it)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready, with the cause"}})
async def readyz(state: State) -> JSONResponse:
    """Ready once the job cache is listed and its watch reaches the apiserver (and API keys
    are loaded, unless auth is off); 503 naming the cause otherwise. Recovers by itself."""
    checks, cause = readiness(state)
    ready = all(checks.values())
    content: dict[str, Any] = {"status": "ready" if ready else "not ready", **checks}
    store = state.store
    if store is not None:
        age = store.jobs.cache_age()
        content["cache_age_seconds"] = None if math.isinf(age) else round(age, 1)
    if not ready and cause is not None:
        content["reason"], content["detail"] = cause
    return JSONResponse(status_code=200 if ready else 503, content=content)


def readiness(state: AppState) -> tuple[dict[str, bool], tuple[str, str] | None]:
    """The readiness checks, and (reason, detail) of the first one failing."""
    store = state.store
    if store is None:
        keys_ok = state.settings.auth_disabled
        checks = dict.fromkeys(
            ("cache_synced", "watch_running", "apiserver_reachable", "cache_fresh"), False
        )
        checks["api_keys_loaded"] = keys_ok
        return checks, (NOT_CONNECTED, "not connected to the Kubernetes API server yet")
    health = store.jobs.health()
    checks = {
        "cache_synced": health.synced,
        "watch_running": health.watching,
        "apiserver_reachable": health.connected,
        "cache_fresh": health.fresh,
        "api_keys_loaded": state.settings.auth_disabled
        or bool(state.keyring and state.keyring.loaded.is_set()),
    }
    unreachable = "the Kubernetes API server is unreachable" + (
        f": {health.cause}" if health.cause else ""
    )
    causes = [  # a failed attempt first: before the first one, "not listed yet" says it
        (health.connected or health.cause is None, (API_SERVER_UNAVAILABLE, unreachable)),
        (health.synced, (CACHE_NOT_SYNCED, "the job cache is not listed yet")),
        (health.connected, (API_SERVER_UNAVAILABLE, unreachable)),
        (health.fresh, (CACHE_STALE, f"the job cache may be {health.age:.0f} s stale")),
        (health.watching, ("WatchStopped", "the job cache's watch thread stopped")),
        (checks["api_keys_loaded"], (API_KEYS_NOT_LOADED, "the API keys are not loaded yet")),
    ]
    return checks, next((cause for ok, cause in causes if not ok), None)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: State) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
