"""The FineTuneJob cache: the current records by (namespace, name), indexed by idempotency hash.

Filled by the informers (LIST, then WATCH events) and by the API's own writes, read by every
cached request: reads never reach the apiserver.
"""

from __future__ import annotations

import threading

from kubetune_api.views import JobRecord, rv_int

ALL_NAMESPACES = ""
"""The scope of a cluster-wide informer."""


class JobCache:
    """Thread-safe map (namespace, name) -> JobRecord, with an index by idempotency hash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], JobRecord] = {}
        self._by_ns: dict[str, dict[str, JobRecord]] = {}
        self._idem: dict[tuple[str, str], tuple[str, str]] = {}

    def _put(self, rec: JobRecord) -> None:
        old = self._items.get(rec.key)
        if old is not None and old.idempotency_hash:
            self._idem.pop((old.namespace, old.idempotency_hash), None)
        self._items[rec.key] = rec
        self._by_ns.setdefault(rec.namespace, {})[rec.name] = rec
        if rec.idempotency_hash:
            self._idem[(rec.namespace, rec.idempotency_hash)] = rec.key

    def _drop(self, key: tuple[str, str]) -> None:
        old = self._items.pop(key, None)
        if old is None:
            return
        ns_items = self._by_ns.get(old.namespace)
        if ns_items is not None:
            ns_items.pop(old.name, None)
            if not ns_items:
                del self._by_ns[old.namespace]
        if old.idempotency_hash:
            self._idem.pop((old.namespace, old.idempotency_hash), None)

    def upsert(self, rec: JobRecord) -> None:
        """Keep the newer of the cached and the given version (resourceVersion order)."""
        with self._lock:
            old = self._items.get(rec.key)
            if old is not None and old.uid == rec.uid:
                old_rv, new_rv = rv_int(old.resource_version), rv_int(rec.resource_version)
                if old_rv is not None and new_rv is not None and new_rv < old_rv:
                    return
            self._put(rec)

    def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            self._drop((namespace, name))

    def replace(self, scope: str, records: list[JobRecord]) -> None:
        """Set the contents of a scope (a namespace, or ALL_NAMESPACES) after a LIST."""
        with self._lock:
            stale = [key for key in self._items if scope == ALL_NAMESPACES or key[0] == scope]
            for key in stale:
                self._drop(key)
            for rec in records:
                self._put(rec)

    def get(self, namespace: str, name: str) -> JobRecord | None:
        return self._items.get((namespace, name))

    def in_namespace(self, namespace: str) -> list[JobRecord]:
        with self._lock:
            return list(self._by_ns.get(namespace, {}).values())

    def all(self) -> list[JobRecord]:
        with self._lock:
            return list(self._items.values())

    def by_idempotency(self, namespace: str, key_hash: str) -> JobRecord | None:
        with self._lock:
            key = self._idem.get((namespace, key_hash))
            return self._items.get(key) if key else None
