"""Kubernetes Events for each transition of a kubetune object (`kubectl describe ftj|fts`)."""

from __future__ import annotations

import logging
import time
from typing import Any

from kubetune_crd import names
from kubetune_crd.resource import API_VERSION, GROUP, KIND

from kubetune_operator.kube import ApiError, KubeClient
from kubetune_operator.transitions import Transition

log = logging.getLogger("kubetune.operator.events")

COMPONENT = "kubetune-operator"


def event_manifest(obj: dict[str, Any], transition: Transition, instance: str) -> dict[str, Any]:
    """A core/v1 Event about `obj`, a FineTuneJob or a FineTuneSchedule (pure, apart from the
    unique name)."""
    meta = obj.get("metadata") or {}
    now = names.now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name')}.{time.time_ns():x}",
            "namespace": meta.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion") or API_VERSION,
            "kind": obj.get("kind") or KIND,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": transition.type,
        "reason": transition.reason,
        "message": transition.message[:1024],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": f"{GROUP}/{COMPONENT}",
        "reportingInstance": instance,
    }


async def post_transitions(
    client: KubeClient, obj: dict[str, Any], transitions: list[Transition], instance: str
) -> None:
    """Best effort: an Event that cannot be written is logged, never retried."""
    namespace = (obj.get("metadata") or {}).get("namespace")
    for transition in transitions:
        try:
            await client.post(
                f"/api/v1/namespaces/{namespace}/events",
                event_manifest(obj, transition, instance),
            )
        except (ApiError, OSError) as exc:
            log.warning("cannot post event %s: %s", transition.reason, exc)
