"""The FineTuneSchedule side of the operator: its cache, queue, workers and wake-up timers.

kopf delivers FineTuneSchedule events and the events of FineTuneJobs labelled with a
schedule (schedule_handlers.py); each is stored here and the schedule's key queued. Workers
run `ScheduleReconciler.reconcile`, which answers how long until the schedule needs another
look (its next slot, at most `schedule_check_seconds`): one timer per schedule re-queues it
then. The runs are listed before any reconcile, so a restarted operator knows which slots
were run and which runs are still active before it decides anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kubetune_crd import names
from kubetune_crd.resource import GROUP, PLURAL, VERSION

from kubetune_operator.kube import KubeClient
from kubetune_operator.kube_objects import Key, Obj
from kubetune_operator.metrics import OperatorMetrics
from kubetune_operator.schedule_cache import ScheduleCache
from kubetune_operator.schedule_reconciler import ScheduleReconciler
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.workqueue import WorkQueue

log = logging.getLogger("kubetune.operator.schedule")

WORKERS = 2


class ScheduleController:
    """Everything the schedule side holds in memory; one per operator process."""

    def __init__(
        self, settings: OperatorSettings, client: KubeClient, metrics: OperatorMetrics | None = None
    ) -> None:
        self.settings = settings
        self.client = client
        self.cache = ScheduleCache()
        self.queue: WorkQueue[Key] = WorkQueue()
        self.reconciler = ScheduleReconciler(
            settings, client, self.cache, metrics or OperatorMetrics()
        )
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self._prelist_runs()
        self._workers = [
            asyncio.create_task(self._worker(), name=f"kubetune-schedule-worker-{i}")
            for i in range(WORKERS)
        ]

    async def stop(self) -> None:
        self.queue.close()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _prelist_runs(self) -> None:
        namespaces: list[str | None] = list(self.settings.namespaces) or [None]
        for ns in namespaces:
            where = f"/namespaces/{ns}" if ns else ""
            url = f"/apis/{GROUP}/{VERSION}{where}/{PLURAL}"
            listed = await self.client.get(url, {"labelSelector": names.LABEL_SCHEDULE})
            for run in listed.get("items") or []:
                self.cache.store_run(run)
        log.info("pre-listed the runs of %d schedules", len(self.cache.runs))

    # --- watch events (called by the kopf handlers) -----------------------------------------

    def schedule_event(self, obj: Obj, deleted: bool = False) -> None:
        key = self.cache.store_schedule(obj)
        if deleted:
            self.cache.forget_schedule(key)
            self.queue.forget(key)
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            return
        self.queue.add(key)

    def run_event(self, obj: Obj, deleted: bool = False) -> None:
        key = self.cache.store_run(obj, deleted=deleted)
        if key is not None and key in self.cache.schedules:
            self.queue.add(key)

    # --- workers -------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                wait = await self.reconciler.reconcile(key)
                self.queue.forget(key)
                if wait is not None:
                    self._wake(key, wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.queue.retry(key)
                log.warning(
                    "reconcile schedule %s/%s failed (retry in %.1fs): %s", *key, delay, exc
                )
            finally:
                self.queue.done(key)

    def _wake(self, key: Key, delay: float) -> None:
        """Re-queue `key` after `delay` (replacing its previous timer)."""
        previous = self._timers.pop(key, None)
        if previous is not None:
            previous.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.queue.add(key)

        self._timers[key] = asyncio.get_running_loop().call_later(delay, fire)
