"""The reconciler: caches fed by kopf's watches, a work queue, and one level-triggered reconcile.

kopf delivers watch events for FineTuneJobs, the operator's Jobs and pods (server-side label
selector) and Warning Events; the handlers only store the object and enqueue the owning
FineTuneJob's key. Workers then run `reconcile(key)`, which reads the latest cached objects:

1. no Job yet and not finished -> build it (pure `job_builder`) and create it; a 409 means it
   already exists (an earlier run, maybe killed right after creating it): adopt it when its
   owner reference is this FineTuneJob's uid. The Job name is the FineTuneJob's name, so
   there can never be two. FineTuneJobs without a Job are queued first (urgent); while
   others still wait for theirs, a worker that just created a Job re-queues its key (at the
   back) instead of writing the status now, so a burst of creations is not slowed down by
   status writes (`CreateTimings`, in the liveness probe, shows where the latency goes).
2. derive the status (pure `status_derivation`) and write the difference (merge patch on the
   status subresource); post an Event for each transition once the write succeeded.
3. only after a terminal status is written: delete a still-running Job (cancel, or a bad-input
   exit on servers without podFailurePolicy) and give a finished Job its
   `ttlSecondsAfterFinished`, so the Job disappears only once its outcome is copied.

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
import os
import signal
import time
from collections import deque
from typing import Any

from kubetune_crd.catalog import Catalog, load_catalog
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.status import TERMINAL_PHASES, FailureInfo, Progress
from pydantic import ValidationError

from kubetune_operator import job_builder
from kubetune_operator.capabilities import ServerCapabilities, capabilities_for
from kubetune_operator.events import post_transitions
from kubetune_operator.job_builder import LABEL_FINETUNEJOB, LABEL_MANAGED_BY
from kubetune_operator.kube import ApiError, KubeClient, ftj_path, job_path, pod_path
from kubetune_operator.progress_server import ProgressServer
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.status_derivation import (
    CreateError,
    derive_status,
    iso,
    job_finished,
    merge_patch,
    now_utc,
)
from kubetune_operator.workqueue import WorkQueue

Obj = dict[str, Any]
Key = tuple[str, str]
log = logging.getLogger("kubetune.operator")

JOB_SELECTOR = f"{LABEL_MANAGED_BY}=kubetune"
POD_SELECTOR = f"{LABEL_MANAGED_BY}=kubetune,{LABEL_FINETUNEJOB}"
MAX_EVENTS_PER_OBJECT = 5


def _rv(obj: Obj) -> int | None:
    try:
        return int(str((obj.get("metadata") or {}).get("resourceVersion")))
    except (TypeError, ValueError):
        return None


def _newer(old: Obj | None, new: Obj) -> bool:
    """Whether `new` is at least as recent as `old` (resourceVersions are etcd revisions)."""
    if old is None:
        return True
    a, b = _rv(old), _rv(new)
    return a is None or b is None or b >= a


def _slim(obj: Obj) -> Obj:
    """Drop managedFields: they are most of an object's size and never read here."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _owner_uid(obj: Obj, kind: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 1)}


class CreateTimings:
    """Where the time between a FineTuneJob's watch event and its Job's creation goes (ms).

    `queue`: handler -> a worker picks the key up; `build`: parse + pure Job builder;
    `post`: the Job create call (API server latency); `total`: handler -> Job created.
    The latest `size` creations only; served by the liveness probe (benchmarks read it).
    """

    STAGES = ("queue", "build", "post", "total")

    def __init__(self, size: int = 2000) -> None:
        self.samples: deque[tuple[float, float, float, float]] = deque(maxlen=size)

    def add(self, seen: float, dequeued: float, post_start: float, post_end: float) -> None:
        ms = 1000.0
        self.samples.append(
            (
                (dequeued - seen) * ms,
                (post_start - dequeued) * ms,
                (post_end - post_start) * ms,
                (post_end - seen) * ms,
            )
        )

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": len(self.samples)}
        for i, stage in enumerate(self.STAGES):
            out[stage] = _percentiles([sample[i] for sample in self.samples])
        return out


class Controller:
    """Everything the operator holds in memory; one per process."""

    def __init__(
        self,
        settings: OperatorSettings,
        client: KubeClient,
        capabilities: ServerCapabilities | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.capabilities = capabilities or ServerCapabilities()
        self.catalog = catalog or load_catalog(settings.catalog_file)
        self.ftjs: dict[Key, Obj] = {}
        self.jobs: dict[Key, Obj] = {}
        self.pods: dict[Key, Obj] = {}  # (namespace, pod name) -> pod
        self.pods_by_ftj: dict[Key, set[str]] = {}
        self.events: dict[tuple[str, str, str], list[Obj]] = {}
        self.queue: WorkQueue[Key] = WorkQueue()
        self.progress: ProgressServer | None = None
        self.progress_base_url: str | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._resync: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.reconciles = 0
        self.jobs_created = 0
        self.seen_at: dict[Key, float] = {}  # first watch event of a FineTuneJob without a Job
        self.create_timings = CreateTimings()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Detect capabilities, pre-list Jobs and pods, start the progress endpoint, workers."""
        info = await self.client.get("/version")
        self.capabilities = capabilities_for(info, self.settings)
        log.info(
            "API server %s: podFailurePolicy=%s suspend=%s",
            self.capabilities.label,
            self.capabilities.pod_failure_policy,
            self.capabilities.suspend,
        )
        await self._prelist()
        if self.settings.progress_enabled:
            self.progress = ProgressServer(
                self.client,
                self.is_trainer_pod,
                self.write_progress,
                min_interval=self.settings.progress_min_interval,
                review_ttl=self.settings.token_review_cache_seconds,
            )
            port = await self.progress.start(
                self.settings.progress_bind, self.settings.progress_port
            )
            self.progress_base_url = self.settings.progress_base_url(port)
        self._workers = [
            asyncio.create_task(self._worker(i), name=f"kubetune-worker-{i}")
            for i in range(self.settings.workers)
        ]
        self._resync = asyncio.create_task(self._resync_loop(), name="kubetune-resync")

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
        await self.client.close()

    async def _prelist(self) -> None:
        namespaces: list[str | None] = list(self.settings.namespaces) or [None]
        for ns in namespaces:
            jobs_url = job_path(ns) if ns else "/apis/batch/v1/jobs"
            pods_url = pod_path(ns) if ns else "/api/v1/pods"
            jobs = await self.client.get(jobs_url, {"labelSelector": JOB_SELECTOR})
            for job in jobs.get("items") or []:
                job.setdefault("metadata", {}).setdefault("namespace", ns)
                self.store_job(job)
            pods = await self.client.get(pods_url, {"labelSelector": POD_SELECTOR})
            for pod in pods.get("items") or []:
                self.store_pod(pod)
        log.info("pre-listed %d Jobs and %d pods", len(self.jobs), len(self.pods))

    # --- caches (called by the kopf handlers) -----------------------------------------------

    def store_ftj(self, obj: Obj, deleted: bool = False) -> Key:
        key = _key(obj)
        if deleted:
            self.ftjs.pop(key, None)
            self.seen_at.pop(key, None)
            if self.progress is not None:
                self.progress.forget(*key)
            self.queue.forget(key)
        elif _newer(self.ftjs.get(key), obj):
            self.ftjs[key] = _slim(obj)
        return key

    def observe_ftj(self, obj: Obj) -> tuple[Key, bool]:
        """Store a watched FineTuneJob; False when it is no news (e.g. the echo of our own
        status patch, whose answer is already cached): nothing to reconcile then."""
        key = _key(obj)
        current = self.ftjs.get(key)
        if current is not None and _rv(current) is not None and _rv(current) == _rv(obj):
            return key, False
        self.store_ftj(obj)
        return key, True

    def needs_job(self, key: Key) -> bool:
        """A FineTuneJob that still needs its Job: reconciled before status-only work."""
        obj = self.ftjs.get(key) or {}
        needs = key not in self.jobs and (obj.get("status") or {}).get("phase") is None
        if needs:
            self.seen_at.setdefault(key, time.monotonic())
        return needs

    def store_job(self, obj: Obj, deleted: bool = False) -> Key | None:
        ns, _ = _key(obj)
        ftj = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_FINETUNEJOB)
        if not ftj:
            return None
        key = (ns, str(ftj))
        current = self.jobs.get(key)
        if deleted:
            if current is not None and current["metadata"].get("uid") == obj["metadata"].get("uid"):
                del self.jobs[key]
        elif (
            current is None
            or current["metadata"].get("uid") != obj["metadata"].get("uid")
            or _newer(current, obj)
        ):
            self.jobs[key] = _slim(obj)
        return key

    def store_pod(self, obj: Obj, deleted: bool = False) -> Key | None:
        ns, name = _key(obj)
        ftj = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_FINETUNEJOB)
        if not ftj:
            return None
        key = (ns, str(ftj))
        if deleted:
            self.pods.pop((ns, name), None)
            names = self.pods_by_ftj.get(key)
            if names is not None:
                names.discard(name)
                if not names:
                    del self.pods_by_ftj[key]
            for kind_key in [
                k for k in self.events if k[0] == ns and k[1] == "Pod" and k[2] == name
            ]:
                del self.events[kind_key]
        elif _newer(self.pods.get((ns, name)), obj):
            self.pods[(ns, name)] = _slim(obj)
            self.pods_by_ftj.setdefault(key, set()).add(name)
        return key

    def store_event(self, obj: Obj) -> Key | None:
        """Keep recent Warning events about our Jobs and pods; the owning key, if any."""
        involved = obj.get("involvedObject") or {}
        kind, name = involved.get("kind"), involved.get("name")
        ns = str(involved.get("namespace") or (obj.get("metadata") or {}).get("namespace") or "")
        key: Key | None = None
        if kind == "Job" and (ns, name) in self.jobs:
            key = (ns, str(name))
        elif kind == "Pod" and (ns, name) in self.pods:
            labels = (self.pods[(ns, str(name))].get("metadata") or {}).get("labels") or {}
            key = (ns, str(labels.get(LABEL_FINETUNEJOB)))
        if key is None:
            return None
        slim = {
            "involvedObject": {"kind": kind, "name": name},
            "reason": obj.get("reason"),
            "message": obj.get("message"),
            "type": obj.get("type"),
            "lastTimestamp": obj.get("lastTimestamp") or obj.get("eventTime"),
        }
        bucket = self.events.setdefault((ns, str(kind), str(name)), [])
        bucket.append(slim)
        del bucket[:-MAX_EVENTS_PER_OBJECT]
        return key

    def pods_of(self, key: Key, job: Obj | None) -> list[Obj]:
        if job is None:
            return []
        uid = job["metadata"].get("uid")
        pods = [
            self.pods[(key[0], n)]
            for n in self.pods_by_ftj.get(key, ())
            if (key[0], n) in self.pods
        ]
        return [p for p in pods if _owner_uid(p, "Job") in (uid, None)]

    def events_of(self, key: Key, job: Obj | None, pods: list[Obj]) -> list[Obj]:
        if job is None:
            return []
        found = list(self.events.get((key[0], "Job", job["metadata"]["name"]), []))
        for pod in pods:
            found += self.events.get((key[0], "Pod", pod["metadata"]["name"]), [])
        return found

    # --- workers -------------------------------------------------------------------------------

    async def _worker(self, index: int) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.reconcile(key)
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
            for key, obj in list(self.ftjs.items()):
                phase = (obj.get("status") or {}).get("phase")
                if phase not in TERMINAL_PHASES:
                    self.queue.add(key)
                    continue
                job = self.jobs.get(key)
                if job is not None and self._job_needs_cleanup(job):
                    self.queue.add(key)

    def _job_needs_cleanup(self, job: Obj) -> bool:
        if not job_finished(job):
            return True
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        return self.settings.ttl_seconds_after_finished is not None and ttl is None

    # --- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        dequeued = time.monotonic()
        obj = self.ftjs.get(key)
        if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
            return
        self.reconciles += 1
        namespace, name = key
        try:
            ftj = FineTuneJob.from_k8s(obj)
        except ValidationError as exc:
            await self._reject(key, obj, exc)
            return
        uid = str(ftj.metadata.get("uid"))
        terminal = ftj.status.phase in TERMINAL_PHASES
        job = self.jobs.get(key)
        create_error: CreateError | None = None
        if job is not None and _owner_uid(job, "FineTuneJob") != uid:
            # e.g. the Job of a deleted FineTuneJob of the same name, not yet collected
            create_error = CreateError(
                f"a Job named {name} that this FineTuneJob does not own exists "
                "(waiting for it to go away)"
            )
            job = None
        if job is None and create_error is None and not terminal and not ftj.spec.cancel:
            job, create_error = await self._ensure_job(key, ftj, dequeued)
            if job is not None and create_error is None and self.queue.urgent_waiting():
                # A burst: other FineTuneJobs still wait for their Jobs. Creating those first
                # keeps this worker (and the API server) off the status write, which follows
                # in a later pass, behind them (added now, queued at the back when done).
                self.queue.add(key)
                return
        plan = job_builder.plan_for(ftj, self.settings, self.catalog, self.progress_base_url)
        pods = self.pods_of(key, job)
        latest = self.progress.latest(namespace, name) if self.progress else None
        derived = derive_status(
            ftj,
            job,
            pods,
            self.events_of(key, job, pods),
            now=now_utc(),
            expected_model=plan.expected_model,
            progress=latest,
            create_error=create_error,
            image_pull_grace_seconds=self.settings.image_pull_grace_seconds,
        )
        status = derived.status
        await self._write_status(key, obj, status.to_k8s(), derived.transitions)
        if status.phase in TERMINAL_PHASES and job is not None:
            await self._finish_job(key, job, str(status.phase))
        if create_error is not None and not create_error.permanent:
            self.queue.add_after(key, 5.0)
        if derived.requeue_after is not None:
            self.queue.add_after(key, derived.requeue_after)

    async def _write_status(self, key: Key, obj: Obj, new: Obj, transitions: list[Any]) -> None:
        old = dict(obj.get("status") or {})
        if new.get("phase") != "Succeeded":
            # status.progress belongs to the progress endpoint, except the final 100%.
            old.pop("progress", None)
            new = {k: v for k, v in new.items() if k != "progress"}
        patch = merge_patch(old, new)
        if not patch:
            return
        try:
            updated = await self.client.merge_patch(
                ftj_path(key[0], key[1], "status"), {"status": patch}
            )
        except ApiError as exc:
            if exc.status == 404:
                return  # deleted meanwhile
            raise
        self.store_ftj(updated)
        if transitions:
            # Events are best effort: posted in the background, never holding a worker.
            task = asyncio.create_task(
                post_transitions(
                    self.client, updated, transitions, self.settings.reporting_instance
                )
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _ensure_job(
        self, key: Key, ftj: FineTuneJob, dequeued: float | None = None
    ) -> tuple[Obj | None, CreateError | None]:
        namespace, name = key
        manifest = job_builder.build_job(
            ftj, self.settings, self.capabilities, self.catalog, self.progress_base_url
        )
        post_start = time.monotonic()
        try:
            created = await self.client.post(job_path(namespace), manifest)
        except ApiError as exc:
            if exc.status == 409:
                return await self._adopt(key, ftj)
            if exc.status in (400, 422):
                return None, CreateError(exc.message, permanent=True)
            if exc.status in (403, 404):
                return None, CreateError(f"{exc.status} {exc.reason}: {exc.message}")
            raise
        post_end = time.monotonic()
        self.jobs_created += 1
        self.store_job(created)
        seen = self.seen_at.pop(key, None)
        if seen is not None and dequeued is not None:
            self.create_timings.add(seen, dequeued, post_start, post_end)
        log.info(
            "created Job %s/%s (%.0f ms after its watch event; create call %.0f ms)",
            namespace,
            name,
            (post_end - seen) * 1000 if seen is not None else float("nan"),
            (post_end - post_start) * 1000,
        )
        if self.settings.crash_after_job_create:
            os.kill(os.getpid(), signal.SIGKILL)  # tests: a crash right after the create
        return created, None

    async def _adopt(self, key: Key, ftj: FineTuneJob) -> tuple[Obj | None, CreateError | None]:
        namespace, name = key
        try:
            existing = await self.client.get(job_path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None, CreateError("the Job was deleted while being adopted; retrying")
            raise
        if _owner_uid(existing, "FineTuneJob") == str(ftj.metadata.get("uid")):
            self.store_job(existing)
            log.info("adopted existing Job %s/%s", namespace, name)
            return existing, None
        return None, CreateError(
            f"a Job named {name} that this FineTuneJob does not own exists "
            "(waiting for it to go away)"
        )

    async def _finish_job(self, key: Key, job: Obj, phase: str) -> None:
        """After the terminal status is written: stop a running Job, or set its TTL."""
        namespace = key[0]
        job_name = job["metadata"]["name"]
        if not job_finished(job):
            if job["metadata"].get("deletionTimestamp"):
                return
            # Cancelled, or failed by the operator (bad input without podFailurePolicy, an
            # image that never pulls): deleting the Job stops its pods (garbage collector).
            try:
                await self.client.delete(
                    job_path(namespace, job_name),
                    {
                        "kind": "DeleteOptions",
                        "apiVersion": "v1",
                        "propagationPolicy": "Background",
                        "preconditions": {"uid": job["metadata"]["uid"]},
                    },
                )
                log.info("deleted Job %s/%s (%s)", namespace, job_name, phase)
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
            self.store_job(job, deleted=True)
            return
        ttl = self.settings.ttl_seconds_after_finished
        if ttl is None or (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None:
            return
        try:
            updated = await self.client.merge_patch(
                job_path(namespace, job_name), {"spec": {"ttlSecondsAfterFinished": ttl}}
            )
            self.store_job(updated)
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def _reject(self, key: Key, obj: Obj, exc: ValidationError) -> None:
        """A spec the typed model refuses (the CRD schema lets it through): Failed, BadInput."""
        if (obj.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return
        failure = FailureInfo(reason="BadInput", message=f"invalid spec: {exc}"[:1000])
        status = {
            "phase": "Failed",
            "failure": failure.to_k8s(),
            "completionTime": iso(now_utc()),
            "message": f"Failed (BadInput): invalid spec: {exc.errors()[0].get('msg', '')}"[:300],
        }
        await self._write_status(key, obj, {**(obj.get("status") or {}), **status}, [])

    # --- progress endpoint callbacks -------------------------------------------------------

    async def is_trainer_pod(
        self, namespace: str, name: str, pod_name: str, pod_uid: str | None
    ) -> bool:
        pod = self.pods.get((namespace, pod_name))
        if pod is None:
            try:
                pod = await self.client.get(pod_path(namespace, pod_name))
            except ApiError:
                return False
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(LABEL_FINETUNEJOB) != name or labels.get(LABEL_MANAGED_BY) != "kubetune":
            return False
        if pod_uid is not None and meta.get("uid") != pod_uid:
            return False
        job = self.jobs.get((namespace, name))
        return job is None or _owner_uid(pod, "Job") == job["metadata"].get("uid")

    async def write_progress(self, namespace: str, name: str, progress: Progress) -> None:
        obj = self.ftjs.get((namespace, name))
        if obj is None or (obj.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return
        body = {"status": {"progress": progress.model_dump(by_alias=True, mode="json")}}
        started = time.monotonic()
        updated = await self.client.merge_patch(ftj_path(namespace, name, "status"), body)
        self.store_ftj(updated)
        log.debug("progress %s/%s written in %.3fs", namespace, name, time.monotonic() - started)
