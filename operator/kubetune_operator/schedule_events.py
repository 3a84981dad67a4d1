"""Kubernetes Events on a FineTuneSchedule: each run started, skipped, missed, finished.

`kubectl describe fts` shows them. The manifest is the FineTuneJob one (events.py) about the
schedule instead; posting is best effort, like every Event of the operator.
"""

from __future__ import annotations

import logging

from kubetune_crd.resource import SCHEDULE_KIND

from kubetune_operator.events import event_manifest
from kubetune_operator.kube import ApiError, KubeClient
from kubetune_operator.kube_objects import Obj, meta
from kubetune_operator.transitions import Transition

log = logging.getLogger("kubetune.operator.events")


def schedule_event_manifest(schedule: Obj, transition: Transition, instance: str) -> Obj:
    """A core/v1 Event about `schedule` (pure, apart from the unique name)."""
    manifest = event_manifest(schedule, transition, instance)
    manifest["involvedObject"]["kind"] = SCHEDULE_KIND
    return manifest


async def post_schedule_events(
    client: KubeClient, schedule: Obj, transitions: list[Transition], instance: str
) -> None:
    """Best effort: an Event that cannot be written is logged, never retried."""
    namespace = meta(schedule).get("namespace")
    for transition in transitions:
        try:
            await client.post(
                f"/api/v1/namespaces/{namespace}/events",
                schedule_event_manifest(schedule, transition, instance),
            )
        except (ApiError, OSError) as exc:
            log.warning("cannot post event %s: %s", transition.reason, exc)
