"""Pod security on the local node: the node agent refuses runAsNonRoot with uid 0 as the
kubelet does, and runs a restricted pod (the trainer's settings) as its user, with a
read-only root filesystem, writable volumes owned by its uid and fsGroup, no capabilities
and no_new_privs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubetune_local.cluster import LocalCluster
from kubetune_local.testing import wait_for
from local_cluster_helpers import apply, get, pod_phase

pytestmark = pytest.mark.cluster

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
PROBE = """
import getpass, json, os, pathlib, pwd
out = {"ids": [os.getuid(), os.getgid(), sorted(os.getgroups())], "denied": {}}
out["user"] = [getpass.getuser(), pwd.getpwnam(getpass.getuser()).pw_uid]
for path in ("/kubetune-probe", "/usr/kubetune-probe", "/etc/kubetune-probe"):
    try:
        pathlib.Path(path).write_text("x")
        out["denied"][path] = None
    except OSError as exc:
        out["denied"][path] = exc.errno
pathlib.Path("/tmp/scratch.txt").write_text("scratch")
pathlib.Path("/var/lib/kubetune/models/out").mkdir()
pathlib.Path("/var/lib/kubetune/models/out/weights.bin").write_bytes(b"w")
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
out["caps"] = [status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd")]
out["no_new_privs"] = status["NoNewPrivs"].strip()
print(json.dumps(out))
"""


def _pod(name: str, pod_sc: dict[str, Any], container_sc: dict[str, Any] | None = None) -> Any:
    container: dict[str, Any] = {
        "name": "main",
        "image": "kubetune/trainer:dev",
        "command": ["python3", "-c", PROBE],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "models", "mountPath": "/var/lib/kubetune/models"},
        ],
    }
    if container_sc is not None:
        container["securityContext"] = container_sc
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": pod_sc,
            "containers": [container],
            "volumes": [
                {"name": "tmp", "emptyDir": {}},
                {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
            ],
        },
    }


def _claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def test_run_as_non_root_with_uid_0_is_refused(cluster: LocalCluster, namespace: str) -> None:
    apply(
        cluster,
        namespace,
        _claim("models"),
        _pod("implicit-root", {"runAsNonRoot": True}),
        _pod("explicit-root", {"runAsNonRoot": True, "runAsUser": 1000}, {"runAsUser": 0}),
    )

    def waiting(name: str) -> dict[str, Any] | None:
        statuses = get(cluster, namespace, "pod", name)["status"].get("containerStatuses") or []
        state = statuses[0]["state"].get("waiting") if statuses else None
        return state if state and state["reason"] == "CreateContainerConfigError" else None

    implicit = wait_for(lambda: waiting("implicit-root"), 60, "implicit-root refused")
    uid = get(cluster, namespace, "pod", "implicit-root")["metadata"]["uid"]
    assert implicit["message"] == (
        "container has runAsNonRoot and image will run as root "
        f'(pod: "implicit-root_{namespace}({uid})", container: main)'
    )
    explicit = wait_for(lambda: waiting("explicit-root"), 60, "explicit-root refused")
    assert explicit["message"].startswith("container's runAsUser breaks non-root policy (pod: ")
    for name in ("implicit-root", "explicit-root"):
        assert pod_phase(cluster, namespace, name) == "Pending"  # never started


def test_restricted_pod_runs_as_its_user_on_a_read_only_root(
    cluster: LocalCluster, namespace: str
) -> None:
    # the chart's user, which only its image's /etc/passwd knows (the node adds it)
    pod_sc = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 2000}
    apply(cluster, namespace, _claim("models"), _pod("restricted", pod_sc, RESTRICTED))
    wait_for(
        lambda: pod_phase(cluster, namespace, "restricted") in ("Succeeded", "Failed"),
        90,
        "pod restricted to finish",
    )
    logs = cluster.kubectl("logs", "-n", namespace, "restricted").stdout
    assert pod_phase(cluster, namespace, "restricted") == "Succeeded", logs
    out = json.loads(logs.strip().splitlines()[-1])
    assert out["ids"] == [65532, 65532, [2000]]
    assert out["user"][1] == 65532  # getpass.getuser() works, as kopf needs
    # EROFS for the root filesystem, /usr and /etc; the emptyDir and the claim were written
    assert out["denied"] == {
        "/kubetune-probe": 30,
        "/usr/kubetune-probe": 30,
        "/etc/kubetune-probe": 30,
    }
    assert out["caps"] == ["0000000000000000"] * 3 and out["no_new_privs"] == "1"
    claim = cluster.pv_root / namespace / "models"
    for path in (claim / "out", claim / "out" / "weights.bin"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (65532, 2000), path
    assert claim.stat().st_gid == 2000  # fsGroup given to the claim itself
