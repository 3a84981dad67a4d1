"""Helpers of the FineTuneSchedule cluster tests: a schedule manifest, `Schedule` (one
schedule, its runs and Events), and waiting for a given second of the wall-clock minute."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from kubernetes import client

GROUP, VERSION = "kubetune.io", "v1alpha1"
SCHEDULES, FTJS = "finetuneschedules", "finetunejobs"
QUICK = "data/fake_steps-1_interval-0.2.csv"
"""A run of the stand-in trainer that succeeds in about a second."""
LONG = "data/fake_steps-200_interval-1.csv"
"""A run that stays active for minutes (until cancelled)."""


def schedule_manifest(
    name: str, url: str = QUICK, schedule: str = "* * * * *", **spec: Any
) -> dict[str, Any]:
    template = spec.pop("jobTemplate", {})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {
                "model": "tiny",
                "dataset": {"url": url},
                "resources": {"gpus": 0},
                **template,
            },
            **spec,
        },
    }


def wait_for_second(lo: int, hi: int) -> datetime:
    """Sleep until the wall clock's second within the minute is in [lo, hi]; that time (UTC)."""
    while True:
        now = datetime.now(timezone.utc)
        if lo <= now.second <= hi:
            return now
        time.sleep(0.2)


def minute_after(when: datetime) -> datetime:
    """The first minute boundary after `when`: the next slot of `* * * * *`."""
    return when.replace(second=0, microsecond=0) + timedelta(minutes=1)


def sleep_until(when: datetime) -> None:
    time.sleep(max(0.0, (when - datetime.now(timezone.utc)).total_seconds()))


class Schedule:
    """Reads one FineTuneSchedule and its runs."""

    def __init__(self, custom: client.CustomObjectsApi, core: client.CoreV1Api, ns: str, name: str):
        self.custom, self.core, self.namespace, self.name = custom, core, ns, name

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, SCHEDULES, body
            )
        )

    def get(self) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, SCHEDULES, self.name
            )
        )

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    def patch_spec(self, **spec: Any) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, SCHEDULES, self.name, {"spec": spec}
        )

    def runs(self) -> list[dict[str, Any]]:
        """The schedule's FineTuneJobs, oldest slot first."""
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, FTJS, label_selector=f"kubetune.io/schedule={self.name}"
        )["items"]
        return sorted(items, key=lambda r: r["metadata"]["name"])

    def run_names(self) -> list[str]:
        return [r["metadata"]["name"] for r in self.runs()]

    def condition(self, ctype: str = "Ready") -> dict[str, Any]:
        found = [c for c in self.status().get("conditions") or [] if c["type"] == ctype]
        return found[0] if found else {}

    def events(self) -> list[tuple[str, str, str]]:
        items = self.core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.name={self.name},involvedObject.kind=FineTuneSchedule",
        ).items
        return [(e.type, e.reason, e.message) for e in items]

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events()]


def slot_name(schedule: str, slot: datetime) -> str:
    return f"{schedule}-{slot.astimezone(timezone.utc):%Y%m%d%H%M}"
