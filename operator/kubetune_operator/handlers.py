"""The kopf handlers: thin. They store what the watches deliver and enqueue the owning key.

All decisions live in `reconciler.Reconciler.reconcile` (level-triggered) and the pure
builders and status derivation; `controller.Controller` keeps the cache and the queue. Watches:

- FineTuneJobs (the initial listing at start-up enqueues every object, including those
  created while the operator was down: the "resume" case);
- batch/v1 Jobs and pods labelled `app.kubernetes.io/managed-by=kubetune` (server-side
  label selectors, so the operator never receives unrelated Jobs or pods);
- core/v1 Events with `type=Warning` (server-side field selector), kept only when they
  are about one of our Jobs or pods (FailedCreate, FailedScheduling...);
- FineTuneSchedules and their runs: schedule_handlers.py, started and stopped here;
- ModelAliases and their pointer-publishing Jobs (label `kubetune.io/alias`): a manual
  promotion or rollback, one step per event (alias_reconciler.py).

Deletion needs no handler and no finalizer: the Job's owner reference lets the garbage
collector delete it (and its pods) with the FineTuneJob.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
from kubetune_crd import names
from kubetune_crd.registry import ALIAS_PLURAL
from kubetune_crd.resource import GROUP, PLURAL, VERSION

from kubetune_operator import schedule_handlers
from kubetune_operator.alias_reconciler import reconcile_alias
from kubetune_operator.controller import Controller
from kubetune_operator.informer_cache import JOB_SELECTOR, POD_SELECTOR
from kubetune_operator.kube import ApiError, KubeClient, load_configuration
from kubetune_operator.metrics import OperatorMetrics
from kubetune_operator.settings import OperatorSettings

log = logging.getLogger("kubetune.operator")

_state: dict[str, Any] = {}


def _obj(event: kopf.RawEvent) -> dict[str, Any]:
    return cast(dict[str, Any], event["object"])


def configure(settings: OperatorSettings, metrics: OperatorMetrics) -> None:
    """Set the settings and metrics the next operator run uses (main() calls this first)."""
    _state["settings"] = settings
    _state["metrics"] = metrics


def controller() -> Controller:
    ctl = _state.get("controller")
    if ctl is None:
        raise RuntimeError("the operator has not started")
    return ctl  # type: ignore[no-any-return]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    ours: OperatorSettings = _state.get("settings") or OperatorSettings()
    metrics: OperatorMetrics = _state.get("metrics") or OperatorMetrics()
    settings.posting.enabled = False  # our own Events, one per transition (events.py)
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace watching (RBAC)
    settings.watching.label_selectors["batch", "v1", "jobs"] = JOB_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = POD_SELECTOR
    settings.watching.field_selectors["v1", "events"] = "type=Warning"
    client = KubeClient(load_configuration(), ours.api_connections)
    ctl = Controller(ours, client, metrics=metrics)
    try:
        await ctl.start()
        await schedule_handlers.start(ours, client, metrics)
    except (OSError, ApiError) as exc:
        # e.g. the progress port is taken, or no permission: exit instead of retrying quietly
        await schedule_handlers.stop()
        await ctl.stop()
        raise kopf.PermanentError(f"cannot start: {exc}") from exc
    _state["controller"] = ctl
    _state["starts"] = starts() + 1


def starts() -> int:
    """How many operator runs in this process got through startup() (main.py restarts kopf)."""
    return int(_state.get("starts", 0))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    await schedule_handlers.stop()
    ctl = _state.pop("controller", None)
    if ctl is not None:
        await ctl.stop()


def probe() -> dict[str, Any] | None:
    """The liveness answer (health_server.py); None until startup() is done."""
    ctl = _state.get("controller")
    return ctl.probe() if ctl is not None else None


@kopf.on.event(GROUP, VERSION, PLURAL)
async def finetunejob_event(event: kopf.RawEvent, **_: Any) -> None:
    controller().ftj_event(_obj(event), deleted=event["type"] == "DELETED")


@kopf.on.event("batch", "v1", "jobs")
async def job_event(event: kopf.RawEvent, **_: Any) -> None:
    obj = _obj(event)
    alias = ((obj.get("metadata") or {}).get("labels") or {}).get(names.LABEL_ALIAS)
    if alias is not None:  # a pointer-publishing Job: its alias's next step
        if event["type"] != "DELETED":
            await _reconcile_alias(str(obj["metadata"]["namespace"]), alias)
        return
    controller().job_event(obj, deleted=event["type"] == "DELETED")


@kopf.on.event(GROUP, VERSION, ALIAS_PLURAL)
async def modelalias_event(event: kopf.RawEvent, **_: Any) -> None:
    if event["type"] != "DELETED":
        meta = _obj(event).get("metadata") or {}
        await _reconcile_alias(str(meta.get("namespace")), str(meta.get("name")))


async def _reconcile_alias(namespace: str, name: str) -> None:
    ctl = controller()
    try:
        await reconcile_alias(
            ctl.client, ctl.settings, namespace, name, ctl.settings.reporting_instance
        )
    except (ApiError, OSError) as exc:  # the next event of the alias or its Job retries
        log.warning("alias %s/%s: %s", namespace, name, exc)


@kopf.on.event("v1", "pods")
async def pod_event(event: kopf.RawEvent, **_: Any) -> None:
    controller().pod_event(_obj(event), deleted=event["type"] == "DELETED")


@kopf.on.event("v1", "events")
async def warning_event(event: kopf.RawEvent, **_: Any) -> None:
    if event["type"] != "DELETED":
        controller().warning_event(_obj(event))
