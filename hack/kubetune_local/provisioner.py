"""A local volume provisioner: binds every pending PersistentVolumeClaim to a host directory.

A real cluster has a storage provisioner; the local one has none, and the scheduler will not
place a pod whose claim is unbound. Like kind's local-path-provisioner, this creates a
`hostPath` PersistentVolume pre-bound (claimRef) to each pending claim, pointing at
`<pv_root>/<namespace>/<claim>` — the same directory the node agent mounts for that claim,
so files survive pod restarts and can be seeded from the host (tests, `make demo`).

Once its claim is deleted, the PV controller marks such a volume `Released`, and a Released
volume never binds again (its claimRef names the deleted claim's uid). The provisioner deletes
the Released volumes it created (the API object only: the host directory keeps its data, as
with reclaim policy Retain), so volumes do not pile up; a new claim of the same name gets a new
volume on the same directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("kubetune.provisioner")

PROVISIONED_BY = "kubetune.io/local-provisioner"
MANAGED_BY_SELECTOR = "app.kubernetes.io/managed-by=kubetune-local"


def claim_dir(pv_root: Path, namespace: str, claim: str) -> Path:
    """The host directory that backs claim `claim` in `namespace`."""
    return pv_root / namespace / claim


def pv_name(namespace: str, claim: str, uid: str) -> str:
    """A deterministic, DNS-safe PersistentVolume name for one claim."""
    digest = hashlib.sha256(f"{namespace}/{claim}/{uid}".encode()).hexdigest()[:10]
    return f"local-{namespace[:20]}-{claim[:20]}-{digest}".replace(".", "-").lower()


def volume_for_claim(pvc: dict[str, Any], pv_root: Path) -> dict[str, Any]:
    """The PersistentVolume manifest that satisfies `pvc` (pure)."""
    meta, spec = pvc["metadata"], pvc.get("spec") or {}
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name(namespace, name, uid),
            "labels": {"app.kubernetes.io/managed-by": "kubetune-local"},
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONED_BY},
        },
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": spec.get("storageClassName") or "",
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {
                "path": str(claim_dir(pv_root, namespace, name)),
                "type": "DirectoryOrCreate",
            },
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": name,
                "uid": uid,
            },
        },
    }


def released_by_us(pv: dict[str, Any]) -> bool:
    """A volume this provisioner created whose claim is gone (phase Released): to delete."""
    meta = pv.get("metadata") or {}
    return (
        (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONED_BY
        and (pv.get("status") or {}).get("phase") == "Released"
        and not meta.get("deletionTimestamp")
    )


class LocalProvisioner:
    """Watches claims and creates a bound hostPath volume for each pending one; deletes the
    volumes it created once they are Released (their data stays on the host)."""

    def __init__(self, api_client: client.ApiClient, pv_root: Path) -> None:
        self.core = client.CoreV1Api(api_client)
        self.pv_root = pv_root

    def provision(self, pvc: dict[str, Any]) -> bool:
        """Create the volume for a pending, unbound claim; True when one was created."""
        spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
        if spec.get("volumeName") or status.get("phase") not in (None, "Pending"):
            return False
        if (pvc.get("metadata") or {}).get("deletionTimestamp"):
            return False
        manifest: Any = volume_for_claim(pvc, self.pv_root)  # the client accepts dicts
        claim_dir(self.pv_root, pvc["metadata"]["namespace"], pvc["metadata"]["name"]).mkdir(
            parents=True, exist_ok=True
        )
        try:
            self.core.create_persistent_volume(manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        log.info(
            "provisioned %s for %s/%s",
            manifest["metadata"]["name"],
            pvc["metadata"]["namespace"],
            pvc["metadata"]["name"],
        )
        return True

    def reclaim(self, pv: dict[str, Any]) -> bool:
        """Delete a Released volume we provisioned (not its directory); True when deleted."""
        if not released_by_us(pv):
            return False
        name = pv["metadata"]["name"]
        try:
            # The uid precondition: never delete a newer volume that reuses the name.
            self.core.delete_persistent_volume(
                name,
                body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid=pv["metadata"].get("uid"))
                ),
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
        log.info("deleted released volume %s (its data stays in %s)", name, path)
        return True

    def run(self, stop: threading.Event) -> None:
        """List+watch claims (and, in a thread, our volumes) until `stop` is set."""
        threading.Thread(
            target=self.run_volumes, args=(stop,), name="provisioner-volumes", daemon=True
        ).start()
        self.run_claims(stop)

    def run_volumes(self, stop: threading.Event) -> None:
        """List+watch the volumes we created, deleting the Released ones."""
        _list_watch(
            self.core.list_persistent_volume, self.reclaim, stop, label_selector=MANAGED_BY_SELECTOR
        )

    def run_claims(self, stop: threading.Event) -> None:
        """List+watch claims, binding the pending ones."""
        _list_watch(self.core.list_persistent_volume_claim_for_all_namespaces, self.provision, stop)


def _list_watch(
    list_fn: Callable[..., Any],
    handle: Callable[[dict[str, Any]], object],
    stop: threading.Event,
    **selectors: str,
) -> None:
    """Call `handle` on every listed object, then on each added or changed one, until `stop`.

    A dropped watch or a restarting apiserver lists again after a short pause.
    """
    while not stop.is_set():
        try:
            data = _json(list_fn(_preload_content=False, **selectors))
            for obj in data.get("items") or []:
                handle(obj)
            stream = watch.Watch().stream(
                list_fn,
                resource_version=data["metadata"]["resourceVersion"],
                timeout_seconds=60,
                **selectors,
            )
            for event in stream:
                if stop.is_set():
                    return
                if event["type"] in ("ADDED", "MODIFIED"):
                    handle(dict(event["raw_object"]))
        except Exception:
            log.exception("provisioner %s loop failed; retrying", list_fn.__name__)
            stop.wait(2.0)


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data
