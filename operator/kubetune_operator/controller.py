"""The operator process: the informer cache, a work queue, workers running the reconciler.

kopf delivers watch events for FineTuneJobs, the operator's Jobs and pods (server-side label
selectors) and Warning Events; the handlers pass each object to one of the `*_event` methods
here, which store it in the cache and enqueue the owning FineTuneJob's key. FineTuneJobs
without a Job are queued first (urgent). Workers then run `Reconciler.reconcile(key)`
(reconciler.py), which reads the latest cached objects.

Why not kopf's create/update/resume handlers: they persist per-handler progress and a
"last handled" diff base in annotations (two extra writes per object, which matter at
hundreds of objects) and are edge-triggered. A level-triggered reconcile of cached state
needs no such bookkeeping, handles objects created while the operator was down (kopf's initial
listing enqueues every object), and is idempotent by construction. Jobs and pods are
pre-listed at start-up before any reconcile runs, so a restarted operator sees the Jobs it
created before it was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubetune_crd import names
from kubetune_crd.catalog import Catalog, load_catalog
from kubetune_crd.resource import GROUP, PLURAL, VERSION
from kubetune_crd.status import TERMINAL_PHASES, Progress

from kubetune_operator.cache_prune import listed_uids, snapshot, stale_keys
from kubetune_operator.capabilities import ServerCapabilities, capabilities_for
from kubetune_operator.informer_cache import JOB_SELECTOR, POD_SELECTOR, InformerCache
from kubetune_operator.kube import ApiError, KubeClient, ftj_path, job_path, pod_path
from kubetune_operator.kube_objects import Key, Obj, key_of, labels_of, meta, owner_uid
from kubetune_operator.metric_history_writer import MetricHistoryWriter
from kubetune_operator.metrics import OperatorMetrics
from kubetune_operator.pod_readers import job_finished, pod_phase
from kubetune_operator.progress_server import ProgressServer
from kubetune_operator.reconciler import Reconciler
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.workqueue import WorkQueue

log = logging.getLogger("kubetune.operator")


@dataclass(frozen=True)
class _Watched:
    """One watched kind, as the resync's list-and-prune sees it."""

    kind: str
    entries: dict[Any, Obj]
    path: Callable[[str | None], str]
    selector: str | None
    drop: Callable[[Obj], None]


def _watch_path(namespaced: Callable[[str], str], cluster_wide: str) -> Callable[[str | None], str]:
    """A collection path: one namespace's, or every namespace's when none is set."""
    return lambda ns: namespaced(ns) if ns else cluster_wide


class Controller:
    """Everything the operator holds in memory; one per process."""

    def __init__(
        self,
        settings: OperatorSettings,
        client: KubeClient,
        capabilities: ServerCapabilities | None = None,
        catalog: Catalog | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.cache = InformerCache()
        self.queue: WorkQueue[Key] = WorkQueue()
        self.reconciler = Reconciler(
            settings,
            client,
            self.cache,
            self.queue,
            catalog or load_catalog(settings.catalog_file),
            capabilities or ServerCapabilities(),
            metrics or OperatorMetrics(),
        )
        self.progress: ProgressServer | None = None
        self.history = MetricHistoryWriter(
            client,
            lambda namespace, name: self.cache.ftjs.get((namespace, name)),
            interval=settings.metrics_flush_interval,
        )
        self._workers: list[asyncio.Task[None]] = []
        self._resync: asyncio.Task[None] | None = None
        self.pruned = 0
        """Cache entries dropped by list-and-prune (their DELETED event was missed)."""

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Detect capabilities, pre-list Jobs and pods, start the progress endpoint, workers."""
        caps = capabilities_for(await self.client.get("/version"), self.settings)
        self.reconciler.capabilities = caps
        log.info(
            "API server %s: podFailurePolicy=%s suspend=%s indexedJobs=%s",
            caps.label,
            caps.pod_failure_policy,
            caps.suspend,
            caps.indexed_jobs,
        )
        await self._prelist()
        if self.settings.progress_enabled:
            await self._start_progress()
        self._workers = [
            asyncio.create_task(self._worker(), name=f"kubetune-worker-{i}")
            for i in range(self.settings.workers)
        ]
        self._resync = asyncio.create_task(self._resync_loop(), name="kubetune-resync")

    async def _start_progress(self) -> None:
        self.progress = ProgressServer(
            self.client,
            self.is_trainer_pod,
            self.write_progress,
            min_interval=self.settings.progress_min_interval,
            review_ttl=self.settings.token_review_cache_seconds,
            points=self.history.add,
        )
        port = await self.progress.start(self.settings.progress_bind, self.settings.progress_port)
        self.reconciler.progress = self.progress
        self.reconciler.history = self.history
        self.reconciler.progress_base_url = self.settings.progress_base_url(port)

    async def stop(self) -> None:
        self.queue.close()
        tasks = [*self._workers, *([self._resync] if self._resync else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.progress is not None:
            await self.progress.stop()
        await self.history.stop()
        await self.client.close()

    async def _prelist(self) -> None:
        namespaces: list[str | None] = list(self.settings.namespaces) or [None]
        for ns in namespaces:
            jobs_url = job_path(ns) if ns else "/apis/batch/v1/jobs"
            pods_url = pod_path(ns) if ns else "/api/v1/pods"
            jobs = await self.client.get(jobs_url, {"labelSelector": JOB_SELECTOR})
            for job in jobs.get("items") or []:
                job.setdefault("metadata", {}).setdefault("namespace", ns)
                self.cache.store_job(job)
            pods = await self.client.get(pods_url, {"labelSelector": POD_SELECTOR})
            for pod in pods.get("items") or []:
                self.cache.store_pod(pod)
        log.info("pre-listed %d Jobs and %d pods", len(self.cache.jobs), len(self.cache.pods))

    # --- watch events (called by the kopf handlers) -----------------------------------------

    def ftj_event(self, obj: Obj, deleted: bool = False) -> None:
        key = key_of(obj)
        if deleted:
            self.cache.forget_ftj(key)
            self.reconciler.timings.forget(key)
            if self.progress is not None:
                self.progress.forget(*key)
            self.history.forget(*key)
            self.queue.forget(key)
            return
        if not self.cache.is_news(obj):
            return  # e.g. the echo of our own status patch, whose answer is already cached
        self.cache.store_ftj(obj)
        self.queue.add(key, urgent=self._needs_job(key))

    def _needs_job(self, key: Key) -> bool:
        """A FineTuneJob that still needs its Job: reconciled before status-only work."""
        obj = self.cache.ftjs.get(key) or {}
        needs = key not in self.cache.jobs and (obj.get("status") or {}).get("phase") is None
        if needs:
            self.reconciler.timings.seen(key)
        return needs

    def job_event(self, obj: Obj, deleted: bool = False) -> None:
        key = self.cache.store_job(obj, deleted=deleted)
        if key is not None:
            self.queue.add_soon(key, self.settings.batch_seconds)

    def pod_event(self, obj: Obj, deleted: bool = False) -> None:
        key = self.cache.store_pod(obj, deleted=deleted)
        if key is None:
            return
        if pod_phase(obj) in ("Failed", "Succeeded"):
            # An ended attempt decides the outcome (a bad-input exit must stop the Job before
            # the Job controller retries on servers without podFailurePolicy): no batching.
            self.queue.add(key, urgent=True)
        else:
            self.queue.add_soon(key, self.settings.batch_seconds)

    def warning_event(self, obj: Obj) -> None:
        key = self.cache.store_event(obj)
        if key is not None:
            self.queue.add_soon(key, self.settings.batch_seconds)

    def probe(self) -> dict[str, Any]:
        """The liveness probe's answer (benchmarks read the creation timings from it)."""
        return {
            "finetunejobs": len(self.cache.ftjs),
            "jobs": len(self.cache.jobs),
            "queued": len(self.queue),
            "reconciles": self.reconciler.reconciles,
            "jobsCreated": self.reconciler.jobs_created,
            "pruned": self.pruned,
            "jobCreateMs": self.reconciler.timings.summary(),
        }

    # --- workers -------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconciler.reconcile(key)
                self.queue.forget(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.queue.retry(key)
                log.warning("reconcile %s/%s failed (retry in %.1fs): %s", *key, delay, exc)
            finally:
                self.queue.done(key)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            await self.prune()
            for key, obj in list(self.cache.ftjs.items()):
                phase = (obj.get("status") or {}).get("phase")
                owned = [self.cache.jobs.get(key), self.cache.preflight_jobs.get(key)]
                if phase not in TERMINAL_PHASES or any(
                    job is not None and self._job_needs_cleanup(job) for job in owned
                ):
                    self.queue.add(key)

    def _watched(self) -> list[_Watched]:
        return [
            _Watched(
                "FineTuneJobs",
                self.cache.ftjs,
                _watch_path(ftj_path, f"/apis/{GROUP}/{VERSION}/{PLURAL}"),
                None,
                self._drop_ftj,
            ),
            _Watched(
                "Jobs",
                self.cache.jobs,
                _watch_path(job_path, "/apis/batch/v1/jobs"),
                JOB_SELECTOR,
                lambda job: self.job_event(job, deleted=True),
            ),
            _Watched(
                "pre-flight Jobs",
                self.cache.preflight_jobs,
                _watch_path(job_path, "/apis/batch/v1/jobs"),
                JOB_SELECTOR,
                lambda job: self.job_event(job, deleted=True),
            ),
            _Watched(
                "pods",
                self.cache.pods,
                _watch_path(pod_path, "/api/v1/pods"),
                POD_SELECTOR,
                lambda pod: self.pod_event(pod, deleted=True),
            ),
        ]

    def _drop_ftj(self, obj: Obj) -> None:
        self.ftj_event(obj, deleted=True)

    async def prune(self) -> None:
        """List each watched kind once; drop the cache entries the lists lack (cache_prune.py)."""
        namespaces: list[str | None] = list(self.settings.namespaces) or [None]
        for watched in self._watched():
            before = snapshot(watched.entries)
            params = {"labelSelector": watched.selector} if watched.selector else None
            uids: set[str] = set()
            try:
                for ns in namespaces:  # a consistent read: no resourceVersion parameter
                    listed = await self.client.get(watched.path(ns), params)
                    uids |= listed_uids(listed.get("items") or [])
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("resync: listing %s failed, nothing pruned: %s", watched.kind, exc)
                continue
            stale = stale_keys(before, watched.entries, uids)
            for key in stale:
                watched.drop(watched.entries[key])
            if stale:
                self.pruned += len(stale)
                log.info(
                    "resync: dropped %d %s whose deletion was missed", len(stale), watched.kind
                )

    def _job_needs_cleanup(self, job: Obj) -> bool:
        if not job_finished(job):
            return True
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        return self.settings.ttl_seconds_after_finished is not None and ttl is None

    # --- progress endpoint callbacks -------------------------------------------------------

    async def is_trainer_pod(
        self, namespace: str, name: str, pod_name: str, pod_uid: str | None
    ) -> bool:
        pod = self.cache.pods.get((namespace, pod_name))
        if pod is None:
            try:
                pod = await self.client.get(pod_path(namespace, pod_name))
            except ApiError:
                return False
        labels = labels_of(pod)
        if labels.get(names.LABEL_FINETUNEJOB) != name:
            return False
        if labels.get(names.LABEL_MANAGED_BY) != names.MANAGED_BY:
            return False
        if pod_uid is not None and meta(pod).get("uid") != pod_uid:
            return False
        job = self.cache.jobs.get((namespace, name))
        return job is None or owner_uid(pod, "Job") == job["metadata"].get("uid")

    async def write_progress(self, namespace: str, name: str, progress: Progress) -> None:
        obj = self.cache.ftjs.get((namespace, name))
        if obj is None or (obj.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return
        body = {"status": {"progress": progress.model_dump(by_alias=True, mode="json")}}
        started = time.monotonic()
        updated = await self.client.merge_patch(ftj_path(namespace, name, "status"), body)
        self.cache.store_ftj(updated)
        log.debug("progress %s/%s written in %.3fs", namespace, name, time.monotonic() - started)
