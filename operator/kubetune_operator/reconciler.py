"""One level-triggered reconcile of one FineTuneJob, from the cached state.

1. No Job yet and not finished -> refuse what cannot run here (`refusals`), run the CPU
   pre-flight Job (`preflight_builder`; phase Validating until it passes; its failure fails
   the FineTuneJob, so no GPU is ever requested for a bad dataset), create a
   multi-node run's headless Service (and NetworkPolicy), then the Job (pure builders);
   a 409 means it already exists (an earlier run, maybe killed right after creating it):
   adopt it when its owner reference is this FineTuneJob's uid. The Job name is the
   FineTuneJob's name, so there can never be two. While other FineTuneJobs still wait for
   their Jobs, a worker that just created one re-queues its key (at the back) instead of
   writing the status now, so a burst of creations is not slowed down by status writes.
2. Derive the status (pure `status_derivation`) and write the difference (merge patch on the
   status subresource); post an Event for each transition once the write succeeded, and
   count a phase change (metrics.py).
3. Only after a terminal status is written: delete a still-running Job (cancel, or a bad-input
   exit on servers without podFailurePolicy) and give a finished Job its
   `ttlSecondsAfterFinished`, so the Job disappears only once its outcome is copied; a
   multi-node run's Service and NetworkPolicy go then too. The pre-flight Job is deleted
   once the training Job exists (or the run is cancelled); a failed one keeps the TTL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass

from kubetune_crd import names
from kubetune_crd.catalog import Catalog
from kubetune_crd.resource import KIND, FineTuneJob
from kubetune_crd.status import TERMINAL_PHASES, FailureInfo
from pydantic import ValidationError

from kubetune_operator.capabilities import ServerCapabilities
from kubetune_operator.create_error import CreateError
from kubetune_operator.create_timings import CreateTimings
from kubetune_operator.events import post_transitions
from kubetune_operator.gang_builders import (
    build_gang_network_policy,
    build_headless_service,
    gang_service_name,
)
from kubetune_operator.informer_cache import InformerCache
from kubetune_operator.job_builder import make_job
from kubetune_operator.kube import ApiError, KubeClient, ftj_path, job_path
from kubetune_operator.kube_objects import Key, Obj, meta, owner_uid
from kubetune_operator.metric_history_writer import MetricHistoryWriter
from kubetune_operator.metrics import OperatorMetrics
from kubetune_operator.owned_objects import (
    JOB,
    NETWORK_POLICY,
    SERVICE,
    Created,
    create_or_adopt,
    delete_owned,
    not_owned,
)
from kubetune_operator.pod_readers import job_finished, sorted_pods
from kubetune_operator.preflight import PreflightView, passed_before, read_preflight
from kubetune_operator.preflight_builder import make_preflight_job
from kubetune_operator.progress_server import ProgressServer
from kubetune_operator.refusals import gpu_refusal, multi_node_refusal
from kubetune_operator.registry_writer import champion_of, read_alias, record_success
from kubetune_operator.run_plan import RunPlan, plan_for
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.status_derivation import derive_status
from kubetune_operator.status_patch import status_patch
from kubetune_operator.transitions import Transition
from kubetune_operator.workqueue import WorkQueue

log = logging.getLogger("kubetune.operator")

CREATE_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class _Current:
    """The FineTuneJob's Job as this reconcile found or made it, or why there is none."""

    obj: Obj | None
    error: CreateError | None
    fresh: bool = False
    """Created (or adopted) by this reconcile."""
    preflight: PreflightView | None = None
    """What the CPU pre-flight Job shows (None: pre-flight off, not started, or gone)."""

    @property
    def created_now(self) -> bool:
        return self.fresh and self.obj is not None and self.error is None


class Reconciler:
    """Reconciles FineTuneJobs against the cache; owns the writes to the API server."""

    def __init__(
        self,
        settings: OperatorSettings,
        client: KubeClient,
        cache: InformerCache,
        queue: WorkQueue[Key],
        catalog: Catalog,
        capabilities: ServerCapabilities,
        metrics: OperatorMetrics,
    ) -> None:
        self.settings = settings
        self.client = client
        self.cache = cache
        self.queue = queue
        self.catalog = catalog
        self.capabilities = capabilities
        self.metrics = metrics
        self.progress: ProgressServer | None = None
        self.progress_base_url: str | None = None
        self.history: MetricHistoryWriter | None = None
        self.timings = CreateTimings()
        self.reconciles = 0
        self.jobs_created = 0
        self._background: set[asyncio.Task[None]] = set()

    async def reconcile(self, key: Key) -> None:
        dequeued = time.monotonic()
        obj = self.cache.ftjs.get(key)
        if obj is None or meta(obj).get("deletionTimestamp"):
            return
        self.reconciles += 1
        try:
            ftj = FineTuneJob.from_k8s(obj)
        except ValidationError as exc:
            await self._reject(key, obj, exc)
            return
        plan = plan_for(ftj, self.settings, self.catalog, self.progress_base_url)
        current = await self._current_job(key, ftj, plan, dequeued)
        if current.created_now and self.queue.urgent_waiting():
            # A burst: other FineTuneJobs still wait for their Jobs. Creating those first
            # keeps this worker (and the API server) off the status write, which follows
            # in a later pass, behind them (added now, queued at the back when done).
            self.queue.add(key)
            return
        await self._update_status(key, obj, ftj, plan, current)

    # --- step 1: the Job ---------------------------------------------------------------------

    async def _current_job(
        self, key: Key, ftj: FineTuneJob, plan: RunPlan, dequeued: float
    ) -> _Current:
        """The cached Job when it is ours; else a new one unless the job is over or cancelled,
        after the CPU pre-flight passed (its Job is created first and read until it ends)."""
        job = self.cache.jobs.get(key)
        view = self._preflight_view(key, ftj)
        if job is not None and owner_uid(job, KIND) != str(ftj.metadata.get("uid")):
            # e.g. the Job of a deleted FineTuneJob of the same name, not yet collected
            return _Current(None, not_owned(JOB, key[1]), preflight=view)
        if job is not None or ftj.status.phase in TERMINAL_PHASES or ftj.spec.cancel:
            return _Current(job, None, preflight=view)
        refusal = gpu_refusal(ftj, plan.topology) or await multi_node_refusal(
            self.client, ftj, plan, self.settings, self.capabilities
        )
        if refusal is not None:
            return _Current(None, refusal)
        if self.settings.preflight and not passed_before(ftj.status):
            if view is None:
                created = await self._create_preflight(ftj, plan)
                if created.obj is None:
                    return _Current(None, created.error)
                view = read_preflight(created.obj, [])
            if not view.passed:
                return _Current(None, None, preflight=view)
        gang_error = await self._ensure_gang_objects(ftj, plan)
        if gang_error is not None:
            return _Current(None, gang_error)
        plan = await self._with_champion(ftj, plan)
        created = await self._create_job(key, ftj, plan, dequeued)
        return _Current(created.obj, created.error, fresh=True, preflight=view)

    def _preflight_view(self, key: Key, ftj: FineTuneJob) -> PreflightView | None:
        """The pre-flight Job of this very FineTuneJob, as its pods show it."""
        pre = self.cache.preflight_jobs.get(key)
        if pre is None or owner_uid(pre, KIND) != str(ftj.metadata.get("uid")):
            return None
        return read_preflight(pre, sorted_pods(self.cache.pods_of(key, pre)))

    async def _create_preflight(self, ftj: FineTuneJob, plan: RunPlan) -> Created:
        """The CPU pre-flight Job (adopted when it exists already)."""
        manifest = make_preflight_job(ftj, plan, self.settings, self.capabilities)
        created = await create_or_adopt(self.client, JOB, manifest, str(ftj.metadata["uid"]))
        if created.obj is not None:
            self.cache.store_job(created.obj)
            if not created.adopted:
                log.info("created pre-flight Job %s", manifest["metadata"]["name"])
        return created

    async def _with_champion(self, ftj: FineTuneJob, plan: RunPlan) -> RunPlan:
        """A promoting run compares with the alias's current model: name it in the config."""
        promotion = ftj.spec.promotion
        if promotion is None:
            return plan
        namespace = str(ftj.metadata.get("namespace", "default"))
        alias = await read_alias(self.client, namespace, promotion.alias)
        champion = champion_of(alias)
        if champion is None:
            return plan
        config = plan.run_config.model_copy(update={"champion": champion})
        return dataclasses.replace(plan, run_config=config)

    async def _ensure_gang_objects(self, ftj: FineTuneJob, plan: RunPlan) -> CreateError | None:
        """A multi-node run's headless Service (and NetworkPolicy), before its pods exist."""
        if not plan.topology.multi_node:
            return None
        wanted = [(SERVICE, build_headless_service(ftj))]
        if self.settings.gang_network_policy:
            wanted.append((NETWORK_POLICY, build_gang_network_policy(ftj)))
        for kind, manifest in wanted:
            done = await create_or_adopt(self.client, kind, manifest, str(ftj.metadata["uid"]))
            if done.error is not None:
                return done.error
        return None

    async def _create_job(
        self, key: Key, ftj: FineTuneJob, plan: RunPlan, dequeued: float
    ) -> Created:
        manifest = make_job(ftj, plan, self.settings, self.capabilities)
        post_start = time.monotonic()
        created = await create_or_adopt(self.client, JOB, manifest, str(ftj.metadata["uid"]))
        post_end = time.monotonic()
        if created.obj is None:
            return created
        self.cache.store_job(created.obj)
        if created.adopted:
            return created
        self.jobs_created += 1
        self.metrics.job_created()
        since_seen = self.timings.created(key, dequeued, post_start, post_end)
        log.info(
            "created Job %s/%s (%.0f ms after its watch event; create call %.0f ms)",
            *key,
            since_seen if since_seen is not None else float("nan"),
            (post_end - post_start) * 1000,
        )
        return created

    # --- step 2: the status ------------------------------------------------------------------

    async def _update_status(
        self, key: Key, obj: Obj, ftj: FineTuneJob, plan: RunPlan, current: _Current
    ) -> None:
        job, error = current.obj, current.error
        pods = self.cache.pods_of(key, job)
        derived = derive_status(
            ftj,
            job,
            pods,
            self.cache.events_of(key, job, pods),
            now=names.utc_now(),
            expected_model=plan.expected_model,
            progress=self.progress.latest(*key) if self.progress else None,
            create_error=error,
            image_pull_grace_seconds=self.settings.image_pull_grace_seconds,
            preflight=current.preflight,
        )
        status = derived.status
        if status.phase == "Succeeded" and (obj.get("status") or {}).get("phase") != "Succeeded":
            # Registered before the status says Succeeded: a failed write is retried with it.
            await record_success(self.client, ftj, status, self.settings.reporting_instance)
        ended = status.phase in TERMINAL_PHASES
        was = (obj.get("status") or {}).get("phase")
        if ended and self.history is not None and was not in TERMINAL_PHASES:
            await self.history.flush(*key)  # a finished job's history is complete
        await self.write_status(key, obj, status.to_k8s(), derived.transitions)
        if status.phase in TERMINAL_PHASES and job is not None:
            await self._finish(key, job, plan, str(status.phase))
        if current.preflight is not None and (status.phase in TERMINAL_PHASES or job is not None):
            await self._tidy_preflight(key, current.preflight)
        if error is not None and not error.permanent:
            self.queue.add_after(key, CREATE_RETRY_SECONDS)
        if derived.requeue_after is not None:
            self.queue.add_after(key, derived.requeue_after)

    async def write_status(
        self, key: Key, obj: Obj, new: Obj, transitions: list[Transition]
    ) -> None:
        """Patch the difference into the status subresource; then post the Events."""
        patch = status_patch(dict(obj.get("status") or {}), new)
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
        self.cache.store_ftj(updated)
        self.metrics.phase_written((obj.get("status") or {}).get("phase"), new.get("phase"))
        self.metrics.transitions_posted(transitions)
        if transitions:
            # Events are best effort: posted in the background, never holding a worker.
            task = asyncio.create_task(
                post_transitions(
                    self.client, updated, transitions, self.settings.reporting_instance
                )
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reject(self, key: Key, obj: Obj, exc: ValidationError) -> None:
        """A spec the typed model refuses (the CRD schema lets it through): Failed, BadInput."""
        if (obj.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return
        failure = FailureInfo(reason="BadInput", message=f"invalid spec: {exc}"[:1000])
        status = {
            "phase": "Failed",
            "failure": failure.to_k8s(),
            "completionTime": names.now_rfc3339(),
            "message": f"Failed (BadInput): invalid spec: {exc.errors()[0].get('msg', '')}"[:300],
        }
        await self.write_status(key, obj, {**(obj.get("status") or {}), **status}, [])

    # --- step 3: after the end ---------------------------------------------------------------

    async def _finish(self, key: Key, job: Obj, plan: RunPlan, phase: str) -> None:
        """After the terminal status is written: stop a running Job, or set its TTL."""
        namespace, job_name = key[0], str(job["metadata"]["name"])
        if plan.topology.multi_node:
            await self._delete_gang_objects(namespace, job_name)
        if not job_finished(job):
            if meta(job).get("deletionTimestamp"):
                return
            # Cancelled, or failed by the operator (bad input without podFailurePolicy, an
            # image that never pulls): deleting the Job stops its pods (garbage collector).
            if await delete_owned(self.client, JOB, namespace, job_name, job["metadata"]["uid"]):
                log.info("deleted Job %s/%s (%s)", namespace, job_name, phase)
            self.cache.store_job(job, deleted=True)
            return
        await self._set_ttl(namespace, job)

    async def _tidy_preflight(self, key: Key, view: PreflightView) -> None:
        """Once its outcome is in the status: a failed pre-flight's Job stays for its logs
        (with the finished-Job TTL); otherwise (passed, cancelled) it is deleted."""
        pre = self.cache.preflight_jobs.get(key)
        if pre is None or meta(pre).get("deletionTimestamp"):
            return
        if view.failure is not None and job_finished(pre):
            await self._set_ttl(key[0], pre)
            return
        name = str(pre["metadata"]["name"])
        if await delete_owned(self.client, JOB, key[0], name, pre["metadata"]["uid"]):
            log.info("deleted pre-flight Job %s/%s", key[0], name)
        self.cache.store_job(pre, deleted=True)

    async def _set_ttl(self, namespace: str, job: Obj) -> None:
        """A finished Job disappears `ttl_seconds_after_finished` later (its outcome copied)."""
        job_name = str(job["metadata"]["name"])
        ttl = self.settings.ttl_seconds_after_finished
        if ttl is None or (job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None:
            return
        try:
            updated = await self.client.merge_patch(
                job_path(namespace, job_name), {"spec": {"ttlSecondsAfterFinished": ttl}}
            )
            self.cache.store_job(updated)
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def _delete_gang_objects(self, namespace: str, job_name: str) -> None:
        """The run is over: its pods need their DNS names and peer traffic no more."""
        await delete_owned(self.client, SERVICE, namespace, gang_service_name(job_name))
        await delete_owned(self.client, NETWORK_POLICY, namespace, job_name)
