"""The operator's copy of FineTuneSchedules and of their runs, as the watches deliver them.

Runs are FineTuneJobs labelled `kubetune.io/schedule=<name>`, indexed by (namespace, schedule
name); whether the schedule really owns one (its uid) is checked where they are used. An
older copy never replaces a newer one.
"""

from __future__ import annotations

from kubetune_crd import names

from kubetune_operator.kube_objects import Key, Obj, key_of, labels_of, newer, slim


class ScheduleCache:
    """FineTuneSchedules and their runs, as last seen."""

    def __init__(self) -> None:
        self.schedules: dict[Key, Obj] = {}
        self.runs: dict[Key, dict[str, Obj]] = {}  # (namespace, schedule) -> run name -> run

    def store_schedule(self, obj: Obj) -> Key:
        key = key_of(obj)
        if newer(self.schedules.get(key), obj):
            self.schedules[key] = slim(obj)
        return key

    def forget_schedule(self, key: Key) -> None:
        self.schedules.pop(key, None)

    def store_run(self, obj: Obj, deleted: bool = False) -> Key | None:
        """Store (or drop) a run; its schedule's key, None for a FineTuneJob of no schedule."""
        schedule = labels_of(obj).get(names.LABEL_SCHEDULE)
        if not schedule:
            return None
        namespace, name = key_of(obj)
        key = (namespace, schedule)
        runs = self.runs.setdefault(key, {})
        if deleted:
            runs.pop(name, None)
        elif newer(runs.get(name), obj):
            runs[name] = slim(obj)
        if not runs:
            del self.runs[key]
        return key

    def runs_of(self, key: Key) -> list[Obj]:
        return list(self.runs.get(key, {}).values())
