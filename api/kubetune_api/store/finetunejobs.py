"""FineTuneJobs: reads from the watch-backed cache (or the apiserver), writes to the apiserver.

The read mode is decided here and nowhere else: in `cache` mode (the default) a read is a
dictionary lookup with no thread hop; in `direct` mode (benchmarks, debugging) each read is
one apiserver request, run in a worker thread. Routes just `await` the read.

Writes (create, cancel) put the object the apiserver answered into the cache at once, so a
client that reads right after a 202 finds its job (read-your-writes on this replica).

A cached read is refused (StoreUnavailableError, answered 503) before the first LIST and
once the watch has been down longer than `max_staleness` seconds; `health()` says how
stale the cache may be, for the age header and `/readyz`.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from kubernetes import client as k8s
from kubetune_crd.resource import GROUP, PLURAL, VERSION

from kubetune_api.store.errors import (
    CACHE_NOT_SYNCED,
    CACHE_STALE,
    REQUEST_TIMEOUT,
    NotFoundError,
    StoreUnavailableError,
    as_dict,
    translated,
)
from kubetune_api.store.informer import Informer
from kubetune_api.store.job_cache import JobCache
from kubetune_api.views import JobRecord, record_from_obj

ReadMode = Literal["cache", "direct"]

CACHE_READS: ContextVar[list[bool] | None] = ContextVar("kubetune_cache_reads", default=None)
"""Set by the HTTP layer to a fresh list per request; each cached read appends to it, so the
answer can say how stale it may be (a context copied into a worker thread shares the list)."""


@dataclass(frozen=True)
class CacheHealth:
    """How far the cache can be trusted, for `/readyz` and the age header."""

    synced: bool
    """Every scope listed at least once."""
    watching: bool
    """Every informer thread still runs."""
    connected: bool
    """Every informer's last LIST or WATCH reached the apiserver."""
    age: float
    """Seconds the cache may lag the apiserver (0 while connected, inf before a LIST)."""
    max_staleness: float
    cause: str | None
    """Why an informer is not connected (address-free)."""

    @property
    def fresh(self) -> bool:
        return self.age <= self.max_staleness

    @property
    def ready(self) -> bool:
        """Listed, watching and in touch with the apiserver."""
        return self.synced and self.watching and self.connected and self.fresh


def _stale(age: float, max_staleness: float, cause: str | None) -> StoreUnavailableError:
    why = f": the Kubernetes API server is unreachable: {cause}" if cause else ""
    if math.isinf(age):
        return StoreUnavailableError(
            f"the job cache is not listed yet{why}", reason=CACHE_NOT_SYNCED
        )
    return StoreUnavailableError(
        f"the job cache may be {age:.0f} s stale (past the {max_staleness:.0f} s bound){why}",
        reason=CACHE_STALE,
    )


class FineTuneJobs:
    """The FineTuneJobs of the watched scopes: cached (or direct) reads, direct writes."""

    def __init__(
        self,
        custom: k8s.CustomObjectsApi,
        *,
        scopes: list[str],
        read_mode: ReadMode = "cache",
        watch_timeout: int = 60,
        max_staleness: float = 60.0,
    ) -> None:
        self.custom = custom
        self.cache = JobCache()
        self.read_mode = read_mode
        self.max_staleness = max_staleness
        self.informers = [
            Informer(custom, self.cache, scope, watch_timeout=watch_timeout) for scope in scopes
        ]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for informer in self.informers:
            if not informer.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    def watching(self) -> bool:
        """Every informer thread still runs."""
        return all(i.alive() for i in self.informers)

    def watch_restarts(self) -> int:
        return sum(i.restarts for i in self.informers)

    def relists(self) -> int:
        return sum(i.relists for i in self.informers)

    def cache_age(self) -> float:
        """Seconds the cache may lag the apiserver (the largest of the scopes')."""
        return max((i.age() for i in self.informers), default=0.0)

    def health(self) -> CacheHealth:
        down = [i for i in self.informers if not i.connected]
        return CacheHealth(
            synced=self.synced(),
            watching=self.watching(),
            connected=not down,
            age=self.cache_age(),
            max_staleness=self.max_staleness,
            cause=next((i.last_error for i in down if i.last_error), None),
        )

    def _cached_read(self) -> None:
        """Note the read (see CACHE_READS), then refuse it before the first LIST or past
        `max_staleness` (cheap: one attribute per scope while connected)."""
        reads = CACHE_READS.get()
        if reads is not None:
            reads.append(True)
        for informer in self.informers:
            if not informer.connected:
                age = informer.age()
                if age > self.max_staleness:
                    raise _stale(age, self.max_staleness, informer.last_error)

    # -- reads -------------------------------------------------------------------------------
    async def find(self, namespace: str, name: str) -> JobRecord | None:
        """The job from the cache; in `direct` read mode from one apiserver GET."""
        if self.read_mode == "direct":
            return await anyio.to_thread.run_sync(self.get_direct, namespace, name)
        self._cached_read()
        return self.cache.get(namespace, name)

    async def in_namespace(self, namespace: str) -> list[JobRecord]:
        """The namespace's jobs from the cache; in `direct` read mode from one apiserver LIST."""
        if self.read_mode == "direct":
            return await anyio.to_thread.run_sync(self._list_direct, namespace)
        self._cached_read()
        return self.cache.in_namespace(namespace)

    def get_direct(self, namespace: str, name: str) -> JobRecord | None:
        """One apiserver GET (blocking): the job as stored now, or None."""
        try:
            with translated():
                obj = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
        except NotFoundError:
            return None
        return record_from_obj(as_dict(obj))

    def _list_direct(self, namespace: str) -> list[JobRecord]:
        with translated():
            page = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT
            )
        return [record_from_obj(o) for o in as_dict(page).get("items") or []]

    def by_idempotency(self, namespace: str, key_hash: str) -> JobRecord | None:
        return self.cache.by_idempotency(namespace, key_hash)

    # -- writes (blocking) -------------------------------------------------------------------
    def create(self, namespace: str, body: dict[str, Any]) -> JobRecord:
        with translated():
            obj = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, _request_timeout=REQUEST_TIMEOUT
            )
        return self._remember(obj)

    def request_cancel(self, namespace: str, name: str) -> JobRecord:
        patch = {"spec": {"cancel": True}}
        with translated():
            obj = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch, _request_timeout=REQUEST_TIMEOUT
            )
        return self._remember(obj)

    def _remember(self, obj: Any) -> JobRecord:
        """The record of an object the apiserver just returned, in the cache at once (the
        watch event follows): a read right after a write sees it."""
        rec = record_from_obj(as_dict(obj))
        self.cache.upsert(rec)
        return rec
