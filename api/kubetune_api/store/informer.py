"""LIST + WATCH of FineTuneJobs in one scope, in a daemon thread, keeping a JobCache current.

The way client-go's informers do it: a paginated LIST gives the objects and a
resourceVersion, a WATCH from that resourceVersion (with bookmarks) streams the changes, a
dropped watch resumes from the last resourceVersion seen, and `410 Gone` (the version was
compacted away) triggers a fresh LIST that replaces the scope's contents.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubetune_crd.resource import GROUP, PLURAL, VERSION

from kubetune_api.store.errors import StoreUnavailableError, as_dict
from kubetune_api.store.job_cache import ALL_NAMESPACES, JobCache
from kubetune_api.views import JobRecord, record_from_obj

log = logging.getLogger(__name__)


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
        watch_timeout: int = 300,
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
        self.last_error: str | None = None
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

    def _list_call(self, **kwargs: Any) -> Any:
        if self.scope == ALL_NAMESPACES:
            return self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
        return self.api.list_namespaced_custom_object(GROUP, VERSION, self.scope, PLURAL, **kwargs)

    def _relist(self) -> None:
        records: list[JobRecord] = []
        token: str | None = None
        rv = ""
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size, "_request_timeout": 60}
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
            _request_timeout=(10, self.watch_timeout + 30),
        )
        self._response = response
        try:
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=False):
                if self._stop.is_set():
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
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
            except GoneError:
                log.info("watch expired (410), listing again", extra={"scope": self.scope or "*"})
                self.resource_version = None
            except ApiException as exc:
                if exc.status == 410:
                    self.resource_version = None
                    continue
                self._failed(f"apiserver answered {exc.status}: {exc.reason}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._failed(f"{type(exc).__name__}: {exc}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _failed(self, message: str) -> None:
        self.restarts += 1
        self.last_error = message
        log.warning("watch interrupted, resuming", extra={"scope": self.scope, "error": message})
