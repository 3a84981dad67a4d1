"""How failures are answered: the original API's `{"detail": ...}` on `/api/*`, OpenAI's
`{"error": {message, type, param, code}}` on `/v1/*`.

Validation errors are 422 naming the field (pydantic's errors as they are, or one OpenAI
`param`), HTTPExceptions keep their status. The apiserver being unreachable (or the cache
too stale to answer from) is 503 with `Retry-After` and the cause: `{"detail", "reason"}` on
`/api/*`, OpenAI's shape with the reason as `code` on `/v1/*`. Anything else unexpected is a
JSON 500 carrying a request id (also in the log line with the traceback), never the error.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from kubetune_api.idempotency import IdempotencyMismatchError
from kubetune_api.service import FieldError
from kubetune_api.store.errors import ConflictError, NotFoundError, StoreUnavailableError

log = logging.getLogger("kubetune_api")

_UNION_BRANCH = re.compile(r"^(literal\[.*\]|constrained-\w+)$")
"""The branch pydantic appends to the location of an error inside a union (`"auto" | int`)."""
_OPENAI_CODES = {404: "not_found", 401: "invalid_api_key", 409: "conflict"}
_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def openai_error(status: int, message: str, param: str | None, code: str | None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param, "code": code}},
    )


def _openai_validation(errors: list[dict[str, Any]]) -> JSONResponse:
    """OpenAI names one parameter: for a value outside an `"auto" | number` union the number's
    error (its range) rather than "should be 'auto'", its path without the union branch."""
    first = next((e for e in errors if e.get("type") != "literal_error"), None)
    first = first or (errors[0] if errors else {})
    loc = [
        str(p)
        for p in first.get("loc", ())
        if p not in ("body", "query", "path") and not _UNION_BRANCH.match(str(p))
    ]
    param = ".".join(loc) or None
    return openai_error(422, f"{param}: {first.get('msg', 'invalid')}", param, "invalid_value")


def validation_response(request: Request, errors: list[dict[str, Any]]) -> JSONResponse:
    if _is_openai(request):
        return _openai_validation(errors)
    return JSONResponse(status_code=422, content={"detail": errors})


async def on_validation(request: Request, exc: RequestValidationError) -> Response:
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
    return validation_response(request, errors)


async def on_field_error(request: Request, exc: FieldError) -> Response:
    loc: list[str] = [exc.location, *exc.field.split(".")]
    error: dict[str, Any] = {"type": "value_error", "loc": loc, "msg": exc.message}
    if isinstance(exc.value, str | int | float | bool):
        error["input"] = exc.value
    return validation_response(request, [error])


async def on_mismatch(request: Request, exc: IdempotencyMismatchError) -> Response:
    error: dict[str, Any] = {
        "type": "idempotency_key_reused",
        "loc": ["header", "Idempotency-Key"],
        "msg": f"this Idempotency-Key was used for a different request (job {exc.job_id})",
    }
    return validation_response(request, [error])


def _retry_after(request: Request) -> dict[str, str]:
    seconds: int = request.app.state.kubetune.settings.retry_after_seconds
    return {"Retry-After": str(seconds)}


def _unavailable(request: Request, detail: str, reason: str, retry: bool) -> Response:
    """503 naming the cause; `Retry-After` when the same request may succeed later."""
    headers = _retry_after(request) if retry else None
    if _is_openai(request):
        code = _CAMEL_HUMP.sub("_", reason).lower()  # ApiServerUnavailable -> api_server_...
        response = openai_error(503, detail, None, code)
        response.headers.update(headers or {})
        return response
    return JSONResponse(
        status_code=503, content={"detail": detail, "reason": reason}, headers=headers
    )


async def on_store(request: Request, exc: StoreUnavailableError) -> Response:
    log.warning(
        "apiserver request failed",
        extra={
            "path": request.url.path,
            "reason": exc.reason,
            "status": exc.status,
            "error": repr(exc.__cause__) if exc.__cause__ else exc.detail,
        },
    )
    return _unavailable(request, exc.detail, exc.reason, exc.retry)


async def on_conflict(request: Request, exc: ConflictError) -> Response:
    return _unavailable(request, str(exc), "Conflict", retry=True)


async def on_not_found(request: Request, exc: NotFoundError) -> Response:
    """The object vanished between the read and the write (deleted meanwhile)."""
    return await on_http(request, HTTPException(status_code=404, detail="job not found"))


async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
    if not _is_openai(request):
        return await http_exception_handler(request, exc)
    code = _OPENAI_CODES.get(exc.status_code)
    response = openai_error(exc.status_code, str(exc.detail), None, code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """The last resort: a JSON 500 with a request id to find the traceback in the log."""
    request_id = uuid.uuid4().hex
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"request_id": request_id, "path": request.url.path},
    )
    message = f"internal error (request id {request_id})"
    headers = {"X-Request-Id": request_id}
    if _is_openai(request):
        response = openai_error(500, message, None, "internal_error")
        response.headers.update(headers)
        return response
    content = {"detail": message, "reason": "InternalError", "request_id": request_id}
    return JSONResponse(status_code=500, content=content, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    handlers: list[tuple[type[Exception], Any]] = [
        (RequestValidationError, on_validation),
        (FieldError, on_field_error),
        (IdempotencyMismatchError, on_mismatch),
        (StoreUnavailableError, on_store),
        (ConflictError, on_conflict),
        (NotFoundError, on_not_found),
        (StarletteHTTPException, on_http),  # also the router's own 404/405
        (Exception, on_unexpected),
    ]
    for exc_class, handler in handlers:
        app.exception_handler(exc_class)(handler)
