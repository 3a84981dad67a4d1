"""LIST + WATCH of FineTuneJobs in one scope, in a daemon thread, keeping a JobCache current.

The way client-go's informers do it: a paginated LIST gives the objects and a
resourceVersion, a WATCH from that resourceVersion (with bookmarks) streams the changes, a
watch the server ended resumes from the last resourceVersion seen, and `410 Gone` (the
version was compacted away) triggers a fresh LIST that replaces the scope's contents.
Failures (apiserver down, refused, 5xx, a silent stream) are retried with a capped backoff,
forever, and the first attempt that reaches the apiserver again LISTs: the cache is whole
again the moment the informer calls itself connected (a restarted apiserver would answer the
resumed watch with 410 anyway, once its own watch cache is ready, which can take seconds).

It also says how stale the cache may be: `connected` while its last LIST or WATCH reached
the apiserver, and `age()`, the seconds since it last heard from the apiserver while it is
not (0 while connected). A stream that stays silent past its server-side timeout plus a
margin counts as lost (the read times out), so a hung apiserver is noticed too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubetune_crd.resource import GROUP, PLURAL, VERSION

from kubetune_api.store.errors import (
    REQUEST_TIMEOUT,
    SILENT,
    TRANSPORT_ERRORS,
    StoreUnavailableError,
    as_dict,
    transport_cause,
)
from kubetune_api.store.job_cache import ALL_NAMESPACES, JobCache
from kubetune_api.views import JobRecord, record_from_obj

log = logging.getLogger(__name__)

SILENCE_MARGIN = 15
"""Seconds a watch may stay silent past its server-side timeout before it counts as lost."""
MAX_BACKOFF = 5.0
"""Seconds between two reconnection attempts, at most."""


class GoneError(Exception):
    """The watch's resourceVersion is too old (410): LIST again."""


class Informer:
    """LIST + WATCH of FineTuneJobs in one scope, in a daemon thread, feeding a JobCache."""

    def __init__(
        self,
        api: k8s.CustomObjectsApi,
        cache: JobCache,
        scope: str,
        *,
        watch_timeout: int = 60,
        page_size: int = 500,
    ) -> None:
        self.api = api
        self.cache = cache
        self.scope = scope
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self.restarts = 0
        self.relists = 0
        self.gone = 0
        self.last_error: str | None = None
        """Why the last attempt failed (short, address-free: it is shown in /readyz)."""
        self.connected = False
        self.last_heard: float | None = None
        """`time.monotonic()` of the last answer from the apiserver (None: never)."""
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"informer-{scope or 'all'}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
            with contextlib.suppress(Exception):
                response.close()
        self._thread.join(timeout=5)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def age(self) -> float:
        """Seconds the cache may lag the apiserver: 0 while connected, the time since the
        apiserver last answered while not, infinite before the first LIST."""
        if self.connected:
            return 0.0
        heard = self.last_heard
        return math.inf if heard is None else time.monotonic() - heard

    def _heard(self) -> None:
        self.last_heard = time.monotonic()
        self.connected = True

    def _list_call(self, **kwargs: Any) -> Any:
        if self.scope == ALL_NAMESPACES:
            return self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
        return self.api.list_namespaced_custom_object(GROUP, VERSION, self.scope, PLURAL, **kwargs)

    def _relist(self) -> None:
        records: list[JobRecord] = []
        token: str | None = None
        rv = ""
        while True:
            kwargs: dict[str, Any] = {
                "limit": self.page_size,
                "_request_timeout": (REQUEST_TIMEOUT[0], 60),
            }
            if token:
                kwargs["_continue"] = token
            page = as_dict(self._list_call(**kwargs))
            records.extend(record_from_obj(obj) for obj in page.get("items") or [])
            meta = page.get("metadata") or {}
            rv = str(meta.get("resourceVersion", rv))
            token = meta.get("continue")
            if not token:
                break
        self.cache.replace(self.scope, records)
        self.resource_version = rv
        self.relists += 1
        self._heard()
        self.synced.set()
        log.info(
            "cache listed",
            extra={"scope": self.scope or "*", "objects": len(records), "resource_version": rv},
        )

    def _events(self) -> Iterator[dict[str, Any]]:
        response = self._list_call(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
            _request_timeout=(REQUEST_TIMEOUT[0], self.watch_timeout + SILENCE_MARGIN),
        )
        self._response = response
        self._heard()
        try:
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=False):
                if self._stop.is_set():
                    return
                self.last_heard = time.monotonic()
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            self.last_heard = time.monotonic()  # closed by the server: current until now
        except TRANSPORT_ERRORS as exc:
            if transport_cause(exc) != SILENT:  # reset or closed: it was current until now
                self.last_heard = time.monotonic()
            raise
        finally:
            self._response = None
            response.release_conn()

    def _watch_once(self) -> None:
        for event in self._events():
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                code = obj.get("code")
                if code == 410:
                    raise GoneError(obj.get("message", "gone"))
                raise StoreUnavailableError(f"watch error: {obj.get('message', obj)}")
            meta = obj.get("metadata") or {}
            rv = meta.get("resourceVersion")
            if kind in ("ADDED", "MODIFIED"):
                self.cache.upsert(record_from_obj(obj))
            elif kind == "DELETED":
                self.cache.delete(str(meta.get("namespace", "")), str(meta.get("name", "")))
            if rv:
                self.resource_version = str(rv)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._relist()
                self._watch_once()
                backoff = 0.2
                continue
            except GoneError as exc:
                self._expired(str(exc))
                continue
            except ApiException as exc:
                if exc.status == 410:
                    self._expired(str(exc.reason))
                    continue
                self._failed(f"it answered {exc.status} {exc.reason}")
            except TRANSPORT_ERRORS as exc:
                if self._stop.is_set():
                    return
                self._failed(transport_cause(exc))
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._failed(f"{type(exc).__name__}: {exc}")
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _expired(self, message: str) -> None:
        """410 Gone: the apiserver answered (still connected), the version is too old."""
        self.gone += 1
        self.resource_version = None
        log.info(
            "watch expired (410), listing again",
            extra={"scope": self.scope or "*", "error": message},
        )

    def _failed(self, cause: str) -> None:
        self.restarts += 1
        self.connected = False
        self.last_error = cause
        self.resource_version = None  # list again once the apiserver answers
        log.warning("watch interrupted, resuming", extra={"scope": self.scope, "error": cause})
