"""The kopf handlers of FineTuneSchedules: thin, like handlers.py (which starts and stops them).

Watches: FineTuneSchedules, and FineTuneJobs labelled `kubetune.io/schedule` (their runs:
a run that ends updates the schedule's status and may let old runs be pruned). The
FineTuneJob watch is kopf's one stream, shared with handlers.py's handler. Without the
FineTuneSchedule CRD, kopf logs that the resource cannot be served and the FineTuneJob side
works as before (the operator scans resources at start only: restart it after installing
the CRD).
"""

from __future__ import annotations

from typing import Any, cast

import kopf
from kubetune_crd import names
from kubetune_crd.resource import GROUP, PLURAL, SCHEDULE_PLURAL, VERSION

from kubetune_operator.kube import KubeClient
from kubetune_operator.metrics import OperatorMetrics
from kubetune_operator.schedule_controller import ScheduleController
from kubetune_operator.settings import OperatorSettings

_state: dict[str, ScheduleController] = {}


async def start(settings: OperatorSettings, client: KubeClient, metrics: OperatorMetrics) -> None:
    """Start the schedule side (handlers.startup calls this once the client is ready)."""
    schedules = ScheduleController(settings, client, metrics)
    await schedules.start()
    _state["controller"] = schedules


async def stop() -> None:
    schedules = _state.pop("controller", None)
    if schedules is not None:
        await schedules.stop()


def _obj(event: kopf.RawEvent) -> dict[str, Any]:
    return cast(dict[str, Any], event["object"])


@kopf.on.event(GROUP, VERSION, SCHEDULE_PLURAL)
async def finetuneschedule_event(event: kopf.RawEvent, **_: Any) -> None:
    schedules = _state.get("controller")
    if schedules is not None:
        schedules.schedule_event(_obj(event), deleted=event["type"] == "DELETED")


@kopf.on.event(GROUP, VERSION, PLURAL, labels={names.LABEL_SCHEDULE: kopf.PRESENT})
async def schedule_run_event(event: kopf.RawEvent, **_: Any) -> None:
    schedules = _state.get("controller")
    if schedules is not None:
        schedules.run_event(_obj(event), deleted=event["type"] == "DELETED")
