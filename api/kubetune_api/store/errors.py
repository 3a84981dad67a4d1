"""Apiserver failures as the three exceptions the app maps to HTTP answers (409, 404, 503).

Every store call runs inside `translated()`: an `ApiException` becomes ConflictError,
NotFoundError or StoreUnavailableError by its status, and a transport failure (connection
refused, reset or timed out: urllib3 or socket errors, which the kubernetes client lets
through) becomes StoreUnavailableError too, so no apiserver outage reaches a client as a
bare 500. A StoreUnavailableError carries a `reason` (a machine-readable word), a `detail`
safe to show a client (no address, no body of a 5xx), and whether retrying may help.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import urllib3
from kubernetes.client.exceptions import ApiException

API_SERVER_UNAVAILABLE = "ApiServerUnavailable"
API_SERVER_FORBIDDEN = "ApiServerForbidden"
API_SERVER_REJECTED = "ApiServerRejected"
NOT_CONNECTED = "NotConnected"
API_KEYS_NOT_LOADED = "ApiKeysNotLoaded"
CACHE_NOT_SYNCED = "CacheNotSynced"
CACHE_STALE = "CacheStale"

SILENT = "no answer in time"
"""The cause of a read that timed out (the apiserver may be hung, not gone)."""

REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds of one short apiserver request: an apiserver that accepts no
connection is answered 503 in seconds, a slow answer still has 30 s."""

TRANSPORT_ERRORS: tuple[type[Exception], ...] = (urllib3.exceptions.HTTPError, OSError)
"""What the kubernetes client raises when it gets no HTTP answer at all."""
CALL_ERRORS: tuple[type[Exception], ...] = (ApiException, *TRANSPORT_ERRORS)
"""Every way an apiserver call fails (for best-effort calls that only log)."""


class ConflictError(Exception):
    """The object already exists (409)."""


class NotFoundError(Exception):
    """The object does not exist (404)."""


class StoreUnavailableError(Exception):
    """The apiserver could not be reached, failed, or refused the request; or the cache is
    too stale to answer from. The message is the `detail` shown to the client."""

    def __init__(
        self,
        detail: str,
        status: int | None = None,
        *,
        reason: str = API_SERVER_UNAVAILABLE,
        retry: bool = True,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.reason = reason
        self.retry = retry
        """Whether the same request may succeed later (answered with Retry-After)."""


def unreachable(cause: str) -> StoreUnavailableError:
    return StoreUnavailableError(f"the Kubernetes API server is unreachable: {cause}")


def raise_for(exc: ApiException) -> NoReturn:
    """Re-raise an apiserver error as ConflictError, NotFoundError or StoreUnavailableError."""
    status = exc.status or 0
    if status == 409:
        raise ConflictError(str(exc.reason)) from exc
    if status == 404:
        raise NotFoundError(str(exc.reason)) from exc
    if status == 0:  # the client's own failure to talk to it (TLS, for one)
        raise unreachable(str(exc.reason).splitlines()[0]) from exc
    if status == 429 or status >= 500:
        raise StoreUnavailableError(
            f"the Kubernetes API server is unavailable: it answered {status} {exc.reason}",
            status=status,
        ) from exc
    if status == 403:
        raise StoreUnavailableError(
            "the API is not allowed to do this in your namespace",
            status=status,
            reason=API_SERVER_FORBIDDEN,
            retry=False,
        ) from exc
    body = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
    raise StoreUnavailableError(
        f"apiserver answered {status}: {body or exc.reason}",
        status=status,
        reason=API_SERVER_REJECTED,
        retry=False,
    ) from exc


def transport_cause(exc: BaseException) -> str:
    """A short, address-free description of a failure to get any answer."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.ProtocolError) and exc.args:
        inner = exc.args[-1]
        if isinstance(inner, BaseException):
            exc = inner
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # before its base class
        text = str(exc).lower()
        return "connection refused" if "refused" in text else "cannot connect"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | socket.timeout | TimeoutError):
        return SILENT
    if isinstance(exc, urllib3.exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionError | urllib3.exceptions.ProtocolError):
        return "connection lost"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


@contextmanager
def translated() -> Iterator[None]:
    """Apiserver failures inside the block as ConflictError, NotFoundError or
    StoreUnavailableError (see the module docstring)."""
    try:
        yield
    except ApiException as exc:
        raise_for(exc)
    except TRANSPORT_ERRORS as exc:
        raise unreachable(transport_cause(exc)) from exc


def as_dict(obj: object) -> dict[str, Any]:
    """An apiserver answer that must be a JSON object (custom objects come back as dicts)."""
    if not isinstance(obj, dict):
        raise StoreUnavailableError(f"unexpected apiserver answer: {type(obj).__name__}")
    return obj
