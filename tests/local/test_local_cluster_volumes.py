"""The local provisioner's volume lifecycle: a claim's volume goes away with the claim (its
Released PersistentVolume is deleted) while the host directory keeps the data."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubetune_local.cluster import LocalCluster
from kubetune_local.nodeagent.process import keep_visible
from kubetune_local.provisioner import PROVISIONED_BY, released_by_us
from kubetune_local.testing import wait_for
from local_cluster_helpers import apply, get


def _claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def _bound_volume(cluster: LocalCluster, ns: str, claim: str) -> str:
    def bound() -> str | None:
        pvc = get(cluster, ns, "pvc", claim)
        if pvc.get("status", {}).get("phase") == "Bound":
            return str(pvc["spec"]["volumeName"])
        return None

    return wait_for(bound, 60, f"claim {claim} to be bound")


def _volume_exists(cluster: LocalCluster, name: str) -> bool:
    found = cluster.kubectl("get", "pv", name, "-o", "name", check=False)
    if found.returncode != 0 and "NotFound" not in found.stderr:
        raise subprocess.CalledProcessError(found.returncode, "kubectl get pv", found.stderr)
    return found.returncode == 0


def test_only_released_volumes_of_this_provisioner_are_reclaimed() -> None:
    ours = {
        "metadata": {
            "name": "v",
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONED_BY},
        },
        "status": {"phase": "Released"},
    }
    assert released_by_us(ours)
    assert not released_by_us({**ours, "status": {"phase": "Bound"}})
    assert not released_by_us({**ours, "metadata": {"name": "v", "annotations": {}}})
    deleting = {"metadata": {**ours["metadata"], "deletionTimestamp": "2024-01-01T00:00:00Z"}}
    assert not released_by_us({**ours, **deleting})


@pytest.mark.cluster
def test_released_volume_is_deleted_and_its_data_kept(
    cluster: LocalCluster, namespace: str
) -> None:
    ns = namespace
    apply(cluster, ns, _claim("scratch"))
    first = _bound_volume(cluster, ns, "scratch")
    data = cluster.pv_root / ns / "scratch"
    (data / "keep.txt").write_text("still here")

    cluster.kubectl("delete", "pvc", "scratch", "-n", ns, "--wait=true")
    wait_for(lambda: not _volume_exists(cluster, first), 60, f"released volume {first} deleted")
    assert (data / "keep.txt").read_text() == "still here"  # Retain: only the API object goes

    # A new claim of the same name gets a new volume on the same directory.
    apply(cluster, ns, _claim("scratch"))
    second = _bound_volume(cluster, ns, "scratch")
    assert second != first
    pv = get(cluster, "default", "pv", second)
    assert pv["spec"]["hostPath"]["path"] == str(data)
    assert (data / "keep.txt").read_text() == "still here"


@pytest.mark.cluster
def test_empty_dir_over_tmp_keeps_the_other_volumes(cluster: LocalCluster, namespace: str) -> None:
    """A pod that mounts an emptyDir at /tmp (every trainer pod does) still gets its other
    volumes and its termination log, also when the node's state dir lies under /tmp (run
    with KUBETUNE_TEST_CLUSTER_DIR=/tmp/...: its volume sources are then below /tmp)."""
    ns = namespace
    apply(
        cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"mode": "fast"},
        },
        _claim("work"),
    )
    # A checkout under /tmp (a CI clone) shows in the emptyDir as the way back to it.
    way_back = {Path(k).parts[2] for k in keep_visible() if Path(k).is_relative_to("/tmp")}
    allowed = sorted({"scratch", *way_back})
    script = (
        "import os, pathlib\n"
        f"assert not [p for p in os.listdir('/tmp') if p not in {allowed!r}], os.listdir('/tmp')\n"
        "pathlib.Path('/tmp/scratch').write_text('x')\n"
        "mode = pathlib.Path('/etc/app/mode').read_text()\n"
        "pathlib.Path('/data/out.txt').write_text(mode)\n"
        "pathlib.Path('/dev/termination-log').write_text('done ' + mode)\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "tmp-shadow"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "kubetune/trainer:dev",
                    "command": ["python3", "-c", script],
                    "volumeMounts": [
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "cfg", "mountPath": "/etc/app"},
                        {"name": "work", "mountPath": "/data"},
                    ],
                }
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "work", "persistentVolumeClaim": {"claimName": "work"}},
            ],
        },
    }
    apply(cluster, ns, pod)

    def finished() -> dict[str, Any] | None:
        obj = get(cluster, ns, "pod", "tmp-shadow")
        return obj if obj["status"].get("phase") in ("Succeeded", "Failed") else None

    obj = wait_for(finished, 90, "pod tmp-shadow to finish")
    logs = cluster.kubectl("logs", "-n", ns, "tmp-shadow", check=False).stdout
    assert obj["status"]["phase"] == "Succeeded", logs
    state = obj["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["message"] == "done fast"
    assert (cluster.pv_root / ns / "work" / "out.txt").read_text() == "fast"
