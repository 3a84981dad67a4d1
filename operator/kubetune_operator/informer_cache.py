"""The operator's in-memory copy of what its watches deliver (like client-go's informer stores).

kopf's watch handlers store FineTuneJobs, the operator's Jobs and pods, and recent Warning
Events here; the reconciler reads only this cache, never the API server, so a reconcile is
cheap and sees one consistent snapshot. Objects are indexed by the FineTuneJob they belong to
(the `kubetune.io/finetunejob` label) and an older copy never replaces a newer one.
"""

from __future__ import annotations

from kubetune_crd import names

from kubetune_operator.kube_objects import Key, Obj, key_of, labels_of, newer, owner_uid, slim
from kubetune_operator.kube_objects import resource_version as rv

JOB_SELECTOR = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
"""Server-side label selector of the Job watch: only the operator's Jobs."""
POD_SELECTOR = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY},{names.LABEL_FINETUNEJOB}"
"""Server-side label selector of the pod watch: only trainer pods."""
MAX_EVENTS_PER_OBJECT = 5

EventKey = tuple[str, str, str]
"""(namespace, involved kind, involved name)."""


def _ftj_label(obj: Obj) -> str | None:
    value = labels_of(obj).get(names.LABEL_FINETUNEJOB)
    return str(value) if value else None


def is_preflight(obj: Obj) -> bool:
    """A CPU pre-flight Job or pod (not the training Job's)."""
    return labels_of(obj).get(names.LABEL_COMPONENT) == names.COMPONENT_PREFLIGHT


class InformerCache:
    """FineTuneJobs, Jobs, pods and Warning events, as last seen."""

    def __init__(self) -> None:
        self.ftjs: dict[Key, Obj] = {}
        self.jobs: dict[Key, Obj] = {}
        self.preflight_jobs: dict[Key, Obj] = {}
        """CPU pre-flight Jobs (component label `preflight`), by their FineTuneJob's key."""
        self.pods: dict[Key, Obj] = {}  # (namespace, pod name) -> pod
        self.pods_by_ftj: dict[Key, set[str]] = {}
        self.events: dict[EventKey, list[Obj]] = {}

    # --- FineTuneJobs ------------------------------------------------------------------------

    def store_ftj(self, obj: Obj) -> Key:
        key = key_of(obj)
        if newer(self.ftjs.get(key), obj):
            self.ftjs[key] = slim(obj)
        return key

    def forget_ftj(self, key: Key) -> None:
        self.ftjs.pop(key, None)

    def is_news(self, obj: Obj) -> bool:
        """False for the echo of a write whose answer is already cached (same version)."""
        current = self.ftjs.get(key_of(obj))
        return current is None or rv(current) is None or rv(current) != rv(obj)

    # --- Jobs ----------------------------------------------------------------------------------

    def store_job(self, obj: Obj, deleted: bool = False) -> Key | None:
        """Store (or drop) a training or pre-flight Job; the owning FineTuneJob's key, None
        for a Job not ours."""
        ftj = _ftj_label(obj)
        if ftj is None:
            return None
        key = (key_of(obj)[0], ftj)
        store = self.preflight_jobs if is_preflight(obj) else self.jobs
        current = store.get(key)
        same = current is not None and current["metadata"].get("uid") == obj["metadata"].get("uid")
        if deleted:
            if same:
                del store[key]
        elif not same or newer(current, obj):
            store[key] = slim(obj)
        return key

    # --- pods ----------------------------------------------------------------------------------

    def store_pod(self, obj: Obj, deleted: bool = False) -> Key | None:
        """Store (or drop) a trainer pod; the owning FineTuneJob's key."""
        ftj = _ftj_label(obj)
        if ftj is None:
            return None
        ns, name = key_of(obj)
        key = (ns, ftj)
        if deleted:
            self._drop_pod(key, ns, name)
        elif newer(self.pods.get((ns, name)), obj):
            self.pods[(ns, name)] = slim(obj)
            self.pods_by_ftj.setdefault(key, set()).add(name)
        return key

    def _drop_pod(self, key: Key, ns: str, name: str) -> None:
        self.pods.pop((ns, name), None)
        names_left = self.pods_by_ftj.get(key)
        if names_left is not None:
            names_left.discard(name)
            if not names_left:
                del self.pods_by_ftj[key]
        self.events.pop((ns, "Pod", name), None)

    def pods_of(self, key: Key, job: Obj | None) -> list[Obj]:
        """The cached pods of `job` (by owner; a pod without an owner yet counts)."""
        if job is None:
            return []
        uid = job["metadata"].get("uid")
        ns = key[0]
        pods = [self.pods[(ns, n)] for n in self.pods_by_ftj.get(key, ()) if (ns, n) in self.pods]
        return [p for p in pods if owner_uid(p, "Job") in (uid, None)]

    # --- Warning events ----------------------------------------------------------------------

    def store_event(self, obj: Obj) -> Key | None:
        """Keep a recent Warning event about one of our Jobs or pods; the owning key, if any."""
        involved = obj.get("involvedObject") or {}
        kind, name = str(involved.get("kind")), str(involved.get("name"))
        ns = str(involved.get("namespace") or (obj.get("metadata") or {}).get("namespace") or "")
        key = self._event_owner(ns, kind, name)
        if key is None:
            return None
        bucket = self.events.setdefault((ns, kind, name), [])
        bucket.append(
            {
                "involvedObject": {"kind": kind, "name": name},
                "reason": obj.get("reason"),
                "message": obj.get("message"),
                "type": obj.get("type"),
                "lastTimestamp": obj.get("lastTimestamp") or obj.get("eventTime"),
            }
        )
        del bucket[:-MAX_EVENTS_PER_OBJECT]
        return key

    def _event_owner(self, ns: str, kind: str, name: str) -> Key | None:
        if kind == "Job" and (ns, name) in self.jobs:
            return ns, name
        if kind == "Pod" and (ns, name) in self.pods:
            return ns, str(_ftj_label(self.pods[(ns, name)]))
        return None

    def events_of(self, key: Key, job: Obj | None, pods: list[Obj]) -> list[Obj]:
        """The kept Warning events about `job` and `pods`."""
        if job is None:
            return []
        found = list(self.events.get((key[0], "Job", job["metadata"]["name"]), []))
        for pod in pods:
            found += self.events.get((key[0], "Pod", pod["metadata"]["name"]), [])
        return found
