"""One level-triggered reconcile of one FineTuneSchedule, from the cached schedule and runs.

1. A spec the typed models refuse (a cron expression croniter cannot use, an unknown time
   zone, a template that is invalid once rendered) gets `Ready=False` with the reason and
   a Warning Event; nothing is created.
2. The pure slot decision (`schedule_slots.decide`) for the slots since the last one handled:
   run, skip, miss or wait. A run cancels the active runs first under `Replace` (spec.cancel:
   their records stay), then creates the FineTuneJob named after the schedule and the slot.
   A 409 means that slot's run exists already (an earlier pass, maybe killed right after the
   create, or another replica): the slot is done, never run twice.
3. The status (pure `schedule_status`) is written with the object's resourceVersion as a
   precondition, so two replicas cannot both count one slot; Events and metrics follow.
4. Only then the runs beyond the history limits are deleted (their models stay).

The reconcile returns how long to wait before the next check: until the next slot, at most
`schedule_check_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from kubetune_crd import names
from kubetune_crd.resource import GROUP, SCHEDULE_PLURAL, VERSION
from kubetune_crd.schedule import FineTuneSchedule, FineTuneScheduleStatus, run_manifest
from pydantic import ValidationError

from kubetune_operator.events import post_transitions
from kubetune_operator.kube import ApiError, KubeClient, ftj_path
from kubetune_operator.kube_objects import Key, Obj, meta
from kubetune_operator.metrics import OperatorMetrics
from kubetune_operator.owned_objects import OwnedKind, delete_owned
from kubetune_operator.schedule_cache import ScheduleCache
from kubetune_operator.schedule_slots import Decision, decide
from kubetune_operator.schedule_status import (
    Outcome,
    active_runs,
    decision_transitions,
    derive_status,
    finished_transitions,
    history_to_delete,
    invalid_status,
    owned_runs,
)
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.status_patch import merge_patch
from kubetune_operator.transitions import Transition

log = logging.getLogger("kubetune.operator.schedule")

WAKE_MARGIN = 0.05
"""Seconds after a slot to wake up, so the slot is due when the reconcile reads the clock."""


def schedule_path(namespace: str, name: str, subresource: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SCHEDULE_PLURAL}/{name}"
    return f"{path}/{subresource}" if subresource else path


FINETUNEJOB = OwnedKind("FineTuneJob", ftj_path)

_INVALID_REASONS = {"schedule": "InvalidSchedule", "timeZone": "InvalidTimeZone"}


def invalid_reason(exc: ValidationError) -> tuple[str, str]:
    """The Ready condition's reason and message for a spec the models refuse."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    where = ".".join(loc)
    field = loc[1] if len(loc) > 1 and loc[0] == "spec" else ""
    if "placeholder" in error["msg"]:
        reason = "UnknownPlaceholder"
    else:
        reason = _INVALID_REASONS.get(field, "InvalidTemplate" if field == "jobTemplate" else "")
    return reason or "InvalidSpec", f"{where}: {error['msg']}"


class ScheduleReconciler:
    """Reconciles FineTuneSchedules against the cache; owns their writes to the API server."""

    def __init__(
        self,
        settings: OperatorSettings,
        client: KubeClient,
        cache: ScheduleCache,
        metrics: OperatorMetrics,
    ):
        self.settings = settings
        self.client = client
        self.cache = cache
        self.metrics = metrics
        self._background: set[asyncio.Task[None]] = set()

    async def reconcile(self, key: Key) -> float | None:
        """Reconcile `key`; seconds until it needs another look (None: only on a change)."""
        obj = self.cache.schedules.get(key)
        if obj is None or meta(obj).get("deletionTimestamp"):
            return None
        try:
            schedule = FineTuneSchedule.from_k8s(obj)
        except ValidationError as exc:
            await self._refuse(key, obj, *invalid_reason(exc))
            return None
        now = names.utc_now()
        uid = str(meta(obj)["uid"])
        active = active_runs(owned_runs(uid, self.cache.runs_of(key)))
        created_at = names.parse_time(meta(obj).get("creationTimestamp")) or now
        after = names.parse_time(schedule.status.last_schedule_time) or created_at
        decision = decide(schedule.spec, after, now, len(active))
        try:
            outcome = await self._act(key, schedule, decision, active)
        except (ValidationError, ValueError) as exc:  # a template that renders badly then
            await self._refuse(key, obj, "InvalidTemplate", f"jobTemplate: {exc}")
            return None
        runs = owned_runs(uid, self.cache.runs_of(key))
        status = derive_status(
            schedule.status,
            runs,
            decision,
            outcome,
            schedule.spec.suspend,
            meta(obj).get("generation"),
            now,
        )
        events = finished_transitions(schedule.status, runs)
        events += decision_transitions(decision, outcome, active)
        await self._write_status(key, status, events)
        self.metrics.schedule_pass(key, decision, outcome.created)  # as counted in the status
        await self._prune(key, schedule, runs)
        return self._wait(decision.next_slot)

    def _wait(self, next_slot: datetime) -> float:
        until_slot = (next_slot - names.utc_now()).total_seconds() + WAKE_MARGIN
        return max(WAKE_MARGIN, min(until_slot, self.settings.schedule_check_seconds))

    # --- acting on the decision ---------------------------------------------------------------

    async def _act(
        self, key: Key, schedule: FineTuneSchedule, decision: Decision, active: list[Obj]
    ) -> Outcome:
        if decision.action != "run" or decision.slot is None:
            return Outcome()
        manifest = run_manifest(schedule, decision.slot)
        cancelled = []
        if decision.cancel_active:
            for run in active:
                if await self._cancel(key[0], str(meta(run)["name"])):
                    cancelled.append(str(meta(run)["name"]))
        created = await self._create(key, manifest)
        return Outcome(created=created, cancelled=cancelled)

    async def _cancel(self, namespace: str, name: str) -> bool:
        """Replace: stop an active run the FineTuneJob way (spec.cancel), keeping its record."""
        try:
            updated = await self.client.merge_patch(
                ftj_path(namespace, name), {"spec": {"cancel": True}}
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        self.cache.store_run(updated)
        return True

    async def _create(self, key: Key, manifest: Obj) -> str | None:
        """Create the slot's run; None when it exists already (the slot is done)."""
        name = str(manifest["metadata"]["name"])
        try:
            created = await self.client.post(FINETUNEJOB.collection(key[0]), manifest)
        except ApiError as exc:
            if exc.status == 409:
                log.info("run %s/%s exists already: its slot is done", key[0], name)
                return None
            if exc.status in (400, 422):
                # The apiserver refuses the rendered spec: this slot cannot run; no retry storm.
                log.warning("run %s/%s refused: %s", key[0], name, exc.message)
                self._post(key, [Transition("Warning", "RunRefused", f"{name}: {exc.message}")])
                return None
            raise
        self.cache.store_run(created)
        log.info("created run %s/%s of schedule %s", key[0], name, key[1])
        return name

    async def _prune(self, key: Key, schedule: FineTuneSchedule, runs: list[Obj]) -> None:
        """Delete the finished runs beyond the history limits (never their models)."""
        spec = schedule.spec
        old = history_to_delete(
            runs, spec.successful_jobs_history_limit, spec.failed_jobs_history_limit
        )
        for run in old:
            name, uid = str(meta(run)["name"]), str(meta(run).get("uid"))
            if await delete_owned(self.client, FINETUNEJOB, key[0], name, uid):
                log.info("deleted run %s/%s (history limit)", key[0], name)
                self._post(key, [Transition("Normal", "RunDeleted", f"deleted {name} (history)")])
            self.cache.store_run(run, deleted=True)

    # --- status and Events -----------------------------------------------------------------

    async def _refuse(self, key: Key, obj: Obj, reason: str, message: str) -> None:
        previous = FineTuneScheduleStatus.model_validate(obj.get("status") or {})
        status = invalid_status(
            previous, reason, message, meta(obj).get("generation"), names.now_rfc3339()
        )
        changed = status.message != previous.message
        event = [Transition("Warning", reason, message)] if changed else []
        await self._write_status(key, status, event)

    async def _write_status(
        self, key: Key, status: FineTuneScheduleStatus, events: list[Transition]
    ) -> None:
        """Patch the difference, with the resourceVersion read as a precondition."""
        obj = self.cache.schedules.get(key)
        if obj is None:
            return
        patch = merge_patch(dict(obj.get("status") or {}), status.to_k8s())
        if patch:
            body = {"metadata": {"resourceVersion": meta(obj).get("resourceVersion")}}
            try:
                updated = await self.client.merge_patch(
                    schedule_path(*key, "status"), {**body, "status": patch}
                )
            except ApiError as exc:
                if exc.status == 404:
                    return  # deleted meanwhile
                raise  # 409: someone else wrote first; retried from the newer copy
            self.cache.store_schedule(updated)
        self._post(key, events)

    def _post(self, key: Key, events: list[Transition]) -> None:
        obj = self.cache.schedules.get(key)
        if not events or obj is None:
            return
        task = asyncio.create_task(
            post_transitions(self.client, obj, events, self.settings.reporting_instance)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
