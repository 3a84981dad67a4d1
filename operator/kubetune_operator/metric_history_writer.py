"""Keeps each FineTuneJob's metric history in its ConfigMap, `<job>-metrics`.

Why the operator writes it: the trainer's points already reach the operator with its
progress reports (authenticated there, see progress_server.py), and the ConfigMap, owned by
the FineTuneJob, survives the pods (a Job's TTL removes them with their logs) and restarts
of the operator and the API; it is garbage-collected with the FineTuneJob.

Points are merged in memory and written at most once per job per `interval` seconds (3 s by
default, so a point is readable within ~3 s of the report). The first write after a start
reads the record back and merges into it; writes replace the ConfigMap guarded by its
resourceVersion (a conflict rereads it; unwritten points are kept for the next try). A job's
in-memory copy is dropped once `idle_after` seconds pass without a point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubetune_crd import names
from kubetune_crd.metric_history import MetricHistory, MetricPoint
from kubetune_crd.resource import API_VERSION, KIND

from kubetune_operator.kube import ApiError, KubeClient
from kubetune_operator.kube_objects import Obj
from kubetune_operator.object_meta import controller_reference

log = logging.getLogger("kubetune.operator.metrics_history")

Key = tuple[str, str]
MAX_FAILURES = 20
"""Failed writes in a row after which a job's pending points are dropped (logged)."""
OwnerLookup = Callable[[str, str], Obj | None]
"""(namespace, name) -> the cached FineTuneJob, or None when unknown."""


class NotOursError(Exception):
    """The ConfigMap of that name belongs to another object."""

    status = 409


def configmap_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    return f"{base}/{name}" if name else base


def history_labels(job_name: str) -> dict[str, str]:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_FINETUNEJOB: job_name,
        names.LABEL_COMPONENT: names.COMPONENT_METRICS,
    }


def history_configmap(owner: Obj, history: MetricHistory, resource_version: str | None) -> Obj:
    """The ConfigMap manifest of `owner`'s (a FineTuneJob's) history (pure)."""
    metadata = owner.get("metadata") or {}
    job = str(metadata["name"])
    meta: Obj = {
        "name": names.metrics_configmap_name(job),
        "namespace": str(metadata["namespace"]),
        "labels": history_labels(job),
        "ownerReferences": [controller_reference(API_VERSION, KIND, metadata)],
    }
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {names.METRICS_DATA_KEY: history.encode()},
    }


@dataclass
class _Job:
    pending: list[MetricPoint] = field(default_factory=list)
    total_steps: int | None = None
    stored: MetricHistory | None = None
    """What the ConfigMap holds (None: not read since the operator started)."""
    version: str | None = None
    owner_uid: str | None = None
    """The FineTuneJob `stored` belongs to (a job recreated under the same name starts anew)."""
    last_write: float = 0.0
    last_point: float = 0.0
    failures: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One write at a time (the flush loop and `flush` before a terminal status)."""


class MetricHistoryWriter:
    """Per-job histories, flushed to their ConfigMaps."""

    def __init__(
        self,
        client: KubeClient,
        owner_of: OwnerLookup,
        *,
        interval: float = 3.0,
        idle_after: float = 300.0,
    ) -> None:
        self._client = client
        self._owner_of = owner_of
        self._interval = interval
        self._idle_after = idle_after
        self._jobs: dict[Key, _Job] = {}
        self._flushers: dict[Key, asyncio.Task[None]] = {}
        self.writes = 0

    def add(
        self, namespace: str, name: str, points: list[MetricPoint], total_steps: int | None
    ) -> None:
        """Queue reported points; they are written within `interval` seconds."""
        if not points:
            return
        key = (namespace, name)
        job = self._jobs.setdefault(key, _Job())
        job.pending.extend(points)
        job.total_steps = total_steps if total_steps is not None else job.total_steps
        job.last_point = time.monotonic()
        if key not in self._flushers:
            self._flushers[key] = asyncio.create_task(self._flush_loop(key))

    async def flush(self, namespace: str, name: str, timeout: float = 5.0) -> None:
        """Write the job's pending points now (bounded by `timeout`): called before its
        terminal status is written, so a finished job's history is complete."""
        job = self._jobs.get((namespace, name))
        if job is None or not job.pending:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._write((namespace, name)), timeout)

    def forget(self, namespace: str, name: str) -> None:
        """The FineTuneJob is gone (its ConfigMap goes with it)."""
        key = (namespace, name)
        self._jobs.pop(key, None)
        task = self._flushers.pop(key, None)
        if task is not None:
            task.cancel()

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is pending (bounded by `timeout`), then stop."""
        tasks = list(self._flushers.values())
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        self._flushers.clear()
        keys = [key for key, job in self._jobs.items() if job.pending]
        if keys:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self._write(k) for k in keys), return_exceptions=True),
                    timeout,
                )

    async def _flush_loop(self, key: Key) -> None:
        try:
            while (job := self._jobs.get(key)) is not None and job.pending:
                wait = job.last_write + self._interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                job.last_write = time.monotonic()
                await self._write(key)
        finally:
            self._flushers.pop(key, None)
        asyncio.get_running_loop().call_later(self._idle_after, self._drop_if_idle, key)

    def _drop_if_idle(self, key: Key) -> None:
        job = self._jobs.get(key)
        quiet = job is not None and time.monotonic() - job.last_point >= self._idle_after
        if job is not None and quiet and not job.pending and key not in self._flushers:
            del self._jobs[key]

    async def _write(self, key: Key) -> None:
        """Merge the pending points into the record and store it; on failure they stay
        pending for the next try."""
        job = self._jobs.get(key)
        if job is None:
            return
        async with job.lock:
            await self._write_locked(key, job)

    async def _write_locked(self, key: Key, job: _Job) -> None:
        owner = self._owner_of(*key)
        if not job.pending:
            return
        if owner is None or not (owner.get("metadata") or {}).get("uid"):
            log.debug("metric points for unknown FineTuneJob %s/%s dropped", *key)
            job.pending.clear()
            return
        points, job.pending = job.pending, []
        written = False
        uid = str(owner["metadata"]["uid"])
        if job.owner_uid != uid:
            job.stored, job.version, job.owner_uid = None, None, uid
        try:
            if job.stored is None:
                job.stored, job.version = await self._read(key, uid)
            merged = job.stored.copy()
            merged.add(points, job.total_steps)
            manifest = history_configmap(owner, merged, job.version)
            if job.version is None:
                answer = await self._client.post(configmap_path(key[0]), manifest)
            else:
                path = configmap_path(key[0], manifest["metadata"]["name"])
                answer = await self._client.request("PUT", path, body=manifest)
            job.stored, written = merged, True
            job.version = str((answer.get("metadata") or {}).get("resourceVersion") or "") or None
            job.failures = 0
            self.writes += 1
        except (ApiError, OSError, TimeoutError, NotOursError) as exc:
            job.failures += 1
            if getattr(exc, "status", None) in (404, 409):
                job.stored = None  # written, deleted or not yet ours meanwhile: reread it
            log.warning("metric history of %s/%s not written: %s", key[0], key[1], exc)
        finally:
            if not written:
                job.pending = points + job.pending
                if job.failures >= MAX_FAILURES:
                    log.error("metric history of %s/%s: %d points dropped", *key, len(points))
                    job.pending, job.failures = [], 0

    async def _read(self, key: Key, owner_uid: str) -> tuple[MetricHistory, str | None]:
        path = configmap_path(key[0], names.metrics_configmap_name(key[1]))
        try:
            cm = await self._client.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return MetricHistory(), None
            raise
        owners = (cm.get("metadata") or {}).get("ownerReferences") or []
        if not any(ref.get("uid") == owner_uid for ref in owners):
            # a deleted FineTuneJob's of the same name (not yet collected), or someone
            # else's: waited out, never taken over
            raise NotOursError(f"ConfigMap {path} is not owned by this FineTuneJob")
        data = cm.get("data") or {}
        version = (cm.get("metadata") or {}).get("resourceVersion")
        return MetricHistory.decode(data.get(names.METRICS_DATA_KEY)), version
