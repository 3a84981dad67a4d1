"""FineTuneJobs: reads from the watch-backed cache (or the apiserver), writes to the apiserver.

The read mode is decided here and nowhere else: in `cache` mode (the default) a read is a
dictionary lookup with no thread hop; in `direct` mode (benchmarks, debugging) each read is
one apiserver request, run in a worker thread. Routes just `await` the read.

Writes (create, cancel) put the object the apiserver answered into the cache at once, so a
client that reads right after a 202 finds its job (read-your-writes on this replica).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import anyio
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubetune_crd.resource import GROUP, PLURAL, VERSION

from kubetune_api.store.errors import as_dict, raise_for
from kubetune_api.store.informer import Informer
from kubetune_api.store.job_cache import JobCache
from kubetune_api.views import JobRecord, record_from_obj

ReadMode = Literal["cache", "direct"]


class FineTuneJobs:
    """The FineTuneJobs of the watched scopes: cached (or direct) reads, direct writes."""

    def __init__(
        self,
        custom: k8s.CustomObjectsApi,
        *,
        scopes: list[str],
        read_mode: ReadMode = "cache",
        watch_timeout: int = 300,
    ) -> None:
        self.custom = custom
        self.cache = JobCache()
        self.read_mode = read_mode
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

    # -- reads -------------------------------------------------------------------------------
    async def find(self, namespace: str, name: str) -> JobRecord | None:
        """The job from the cache; in `direct` read mode from one apiserver GET."""
        if self.read_mode == "direct":
            return await anyio.to_thread.run_sync(self.get_direct, namespace, name)
        return self.cache.get(namespace, name)

    async def in_namespace(self, namespace: str) -> list[JobRecord]:
        """The namespace's jobs from the cache; in `direct` read mode from one apiserver LIST."""
        if self.read_mode == "direct":
            return await anyio.to_thread.run_sync(self._list_direct, namespace)
        return self.cache.in_namespace(namespace)

    def get_direct(self, namespace: str, name: str) -> JobRecord | None:
        """One apiserver GET (blocking): the job as stored now, or None."""
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise_for(exc)
        return record_from_obj(as_dict(obj))

    def _list_direct(self, namespace: str) -> list[JobRecord]:
        try:
            page = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        except ApiException as exc:
            raise_for(exc)
        return [record_from_obj(o) for o in as_dict(page).get("items") or []]

    def by_idempotency(self, namespace: str, key_hash: str) -> JobRecord | None:
        return self.cache.by_idempotency(namespace, key_hash)

    # -- writes (blocking) -------------------------------------------------------------------
    def create(self, namespace: str, body: dict[str, Any]) -> JobRecord:
        try:
            obj = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, _request_timeout=30
            )
        except ApiException as exc:
            raise_for(exc)
        return self._remember(obj)

    def request_cancel(self, namespace: str, name: str) -> JobRecord:
        patch = {"spec": {"cancel": True}}
        try:
            obj = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch, _request_timeout=30
            )
        except ApiException as exc:
            raise_for(exc)
        return self._remember(obj)

    def _remember(self, obj: Any) -> JobRecord:
        """The record of an object the apiserver just returned, in the cache at once (the
        watch event follows): a read right after a write sees it."""
        rec = record_from_obj(as_dict(obj))
        self.cache.upsert(rec)
        return rec
