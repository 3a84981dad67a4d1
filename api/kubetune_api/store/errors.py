"""Apiserver failures as the three exceptions the app maps to HTTP answers (409, 404, 503)."""

from __future__ import annotations

from typing import Any, NoReturn

from kubernetes.client.exceptions import ApiException


class ConflictError(Exception):
    """The object already exists (409)."""


class NotFoundError(Exception):
    """The object does not exist (404)."""


class StoreUnavailableError(Exception):
    """The apiserver could not be reached or refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def raise_for(exc: ApiException) -> NoReturn:
    """Re-raise an apiserver error as ConflictError, NotFoundError or StoreUnavailableError."""
    if exc.status == 409:
        raise ConflictError(str(exc.reason)) from exc
    if exc.status == 404:
        raise NotFoundError(str(exc.reason)) from exc
    body = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
    raise StoreUnavailableError(
        f"apiserver answered {exc.status}: {body or exc.reason}", status=exc.status
    ) from exc


def as_dict(obj: object) -> dict[str, Any]:
    """An apiserver answer that must be a JSON object (custom objects come back as dicts)."""
    if not isinstance(obj, dict):
        raise StoreUnavailableError(f"unexpected apiserver answer: {type(obj).__name__}")
    return obj
