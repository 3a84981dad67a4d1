"""`create_app(settings)`: the FastAPI application, with thin handlers over the store."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from kubetune_crd.catalog import load_catalog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubetune_api.auth import KeyRing
from kubetune_api.deps import AppState, resolver_with_timeout
from kubetune_api.idempotency import IdempotencyMismatchError
from kubetune_api.metrics import Metrics
from kubetune_api.routes import finetune, openai
from kubetune_api.service import FieldError, Resolver
from kubetune_api.settings import Settings
from kubetune_api.store import (
    ALL_NAMESPACES,
    ConflictError,
    JobStore,
    StoreUnavailableError,
    make_api_client,
)

log = logging.getLogger("kubetune_api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_PREFIXES = ("/api/", "/v1/")


class BodyTooLargeError(Exception):
    pass


class RequestGuard:
    """Pure ASGI middleware (cheap on the hot path): body cap (413), JSON bodies sent without
    a JSON content type (the seed's `curl -d` examples), request metrics and access logs."""

    def __init__(self, app: ASGIApp, *, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.state.settings
        cap = settings.max_body_bytes
        method: str = scope["method"]
        path: str = scope["path"]
        start = time.perf_counter()
        status_holder = [500]
        started = [False]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                started[0] = True
            await send(message)

        headers: list[tuple[bytes, bytes]] = scope["headers"]
        length = next((v for k, v in headers if k == b"content-length"), None)
        try:
            if length is not None and (not length.isdigit() or int(length) > cap):
                await _plain_error(send_wrapper, 413, f"request body larger than {cap} bytes")
                return
            if method in ("POST", "PUT", "PATCH") and path.startswith(_JSON_PREFIXES):
                ctype = next((v for k, v in headers if k == b"content-type"), b"")
                base = ctype.split(b";", 1)[0].strip().lower()
                if base in (b"", b"application/x-www-form-urlencoded", b"text/plain"):
                    scope["headers"] = [(k, v) for k, v in headers if k != b"content-type"] + [
                        (b"content-type", b"application/json")
                    ]
            received = [0]

            async def receive_wrapper() -> Message:
                message = await receive()
                if message["type"] == "http.request":
                    received[0] += len(message.get("body", b""))
                    if received[0] > cap:
                        raise BodyTooLargeError
                return message

            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except BodyTooLargeError:
                if not started[0]:
                    await _plain_error(send_wrapper, 413, f"request body larger than {cap} bytes")
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            self.state.metrics.observe(method, route_path, status_holder[0], elapsed)
            if settings.access_log and log.isEnabledFor(logging.INFO):
                _access_log(method, path, route_path, status_holder[0], elapsed, scope)


def _access_log(
    method: str, path: str, route: str, status: int, elapsed: float, scope: Scope
) -> None:
    """`log.info("request", extra={...})` without its caller lookup and `extra` checks: the
    same record (logger `kubetune_api`, message `request`, the fields as attributes) handed to
    the same handlers, at a fraction of the cost on the hot path."""
    record = logging.LogRecord(
        log.name, logging.INFO, __file__, _ACCESS_LOG_LINE, "request", None, None, "RequestGuard"
    )
    fields = record.__dict__
    fields["method"] = method
    fields["path"] = path
    fields["route"] = route
    fields["status"] = status
    fields["duration_ms"] = round(elapsed * 1000, 2)
    fields["tenant"] = _tenant_of(scope)
    log.handle(record)


_ACCESS_LOG_LINE = _access_log.__code__.co_firstlineno


def _tenant_of(scope: Scope) -> str | None:
    state = scope.get("state")
    if isinstance(state, dict):
        value = state.get("tenant")
        return str(value) if value else None
    return None


async def _plain_error(send: Send, status: int, detail: str) -> None:
    body = ('{"detail":"' + detail.replace('"', "'") + '"}').encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def _openai_error(status: int, message: str, param: str | None, code: str | None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param, "code": code}},
    )


def _validation_response(request: Request, errors: list[dict[str, Any]]) -> JSONResponse:
    if _is_openai(request):
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        return _openai_error(422, f"{param}: {first.get('msg', 'invalid')}", param, "invalid_value")
    return JSONResponse(status_code=422, content={"detail": errors})


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            item = {k: v for k, v in err.items() if k in ("type", "loc", "msg", "input")}
            if item.get("type") == "json_invalid":
                item["msg"] = "malformed JSON: " + str(item.get("msg", ""))
            if "input" in item and not isinstance(
                item["input"], str | int | float | bool | None | dict | list
            ):
                item["input"] = str(item["input"])
            errors.append(item)
        return _validation_response(request, errors)

    @app.exception_handler(FieldError)
    async def on_field_error(request: Request, exc: FieldError) -> JSONResponse:
        loc: list[str] = [exc.location, *exc.field.split(".")]
        error: dict[str, Any] = {"type": "value_error", "loc": loc, "msg": exc.message}
        if isinstance(exc.value, str | int | float | bool):
            error["input"] = exc.value
        return _validation_response(request, [error])

    @app.exception_handler(IdempotencyMismatchError)
    async def on_mismatch(request: Request, exc: IdempotencyMismatchError) -> JSONResponse:
        error: dict[str, Any] = {
            "type": "idempotency_key_reused",
            "loc": ["header", "Idempotency-Key"],
            "msg": f"this Idempotency-Key was used for a different request (job {exc.job_id})",
        }
        return _validation_response(request, [error])

    @app.exception_handler(StoreUnavailableError)
    async def on_store(request: Request, exc: StoreUnavailableError) -> JSONResponse:
        log.error("apiserver request failed: %s", exc)
        detail = "the cluster is unavailable, try again"
        if exc.status == 403:
            detail = "the API is not allowed to do this in your namespace"
        if _is_openai(request):
            return _openai_error(503, detail, None, "unavailable")
        return JSONResponse(status_code=503, content={"detail": detail})

    @app.exception_handler(ConflictError)
    async def on_conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> Response:
        if _is_openai(request):
            codes = {404: "not_found", 401: "invalid_api_key", 409: "conflict"}
            response = _openai_error(
                exc.status_code, str(exc.detail), None, codes.get(exc.status_code)
            )
            if exc.headers:
                response.headers.update(exc.headers)
            return response
        return await http_exception_handler(request, exc)


def create_app(settings: Settings | None = None, *, resolver: Resolver | None = None) -> FastAPI:
    """The API application; connects to the cluster when it starts (lifespan)."""
    settings = settings or Settings()
    catalog = load_catalog(settings.catalog_file)
    state = AppState(
        settings=settings,
        catalog=catalog,
        metrics=Metrics(lambda: state.store),
        resolver=resolver or resolver_with_timeout(settings.dns_timeout_seconds),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(_connect, state)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(_disconnect, state)

    app = FastAPI(
        title="kubetune API",
        version="0.1.0",
        description=(
            "Fine-tune language models on your own data. The seed's `/api/finetune/*` "
            "endpoints and OpenAI-compatible `/v1/fine_tuning/jobs`; every job is a "
            "FineTuneJob resource."
        ),
        lifespan=lifespan,
    )
    app.state.kubetune = state
    _install_handlers(app)
    app.include_router(finetune.router)
    app.include_router(openai.router)

    @app.get("/healthz", include_in_schema=True, tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process serves requests."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "Not ready"}})
    async def readyz() -> JSONResponse:
        """Ready once the job cache is listed (and API keys loaded, unless auth is off)."""
        store = state.store
        checks = {
            "cache_synced": bool(store and store.synced()),
            "watch_running": bool(store and all(i.alive() for i in store.informers)),
            "api_keys_loaded": settings.auth_disabled
            or bool(state.keyring and state.keyring.loaded.is_set()),
        }
        ready = all(checks.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "not ready", **checks},
        )

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestGuard, state=state)
    return app


def _connect(state: AppState) -> None:
    settings = state.settings
    api_client = make_api_client(settings.kubeconfig, settings.client_pool_size)
    scopes = [ALL_NAMESPACES] if settings.watch_cluster_wide else [settings.namespace]
    store = JobStore(
        api_client,
        scopes=scopes,
        read_mode=settings.read_mode,
        watch_timeout=settings.watch_timeout_seconds,
    )
    store.start()
    state.store = store
    if not settings.auth_disabled:
        keys_ns = settings.keys_namespace
        keyring = KeyRing(
            lambda: store.read_secret_data(keys_ns, settings.api_keys_secret),
            refresh_seconds=settings.api_keys_refresh_seconds,
        )
        keyring.start()
        state.keyring = keyring
    if not store.wait_synced(settings.cache_sync_timeout_seconds):
        log.warning("job cache not synced yet; /readyz reports not ready until it is")


def _disconnect(state: AppState) -> None:
    if state.keyring is not None:
        state.keyring.stop()
    if state.store is not None:
        state.store.stop()
