"""The local cluster keeps what it made and heals itself (own state dir, etcd with fsync).

cluster-down then cluster-up, and a crash of every process (what a reboot does), give back
the same cluster: same address and kubeconfig, the FineTuneJob, the claim and its files. A
SIGKILLed control-plane component is restarted by the supervisor and the cluster accepts
writes again within 60 s at the same address; a pod running when the node agent is killed
is re-adopted by the next agent, not started a second time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubetune_local import procs
from kubetune_local.cluster import REPO, ClusterError, LocalCluster, binaries, clean
from kubetune_local.testing import (
    cluster_unavailable,
    component_pid,
    component_stopped,
    kill_component,
    start_cluster,
    stop_cluster,
    temporary_namespace,
    wait_for,
    wait_writable,
)
from kubetune_local.workspace import install_crd
from local_cluster_helpers import apply, get, job, job_condition, pod_phase, python_pod

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STATE = Path(
    (os.environ.get("KUBETUNE_TEST_CLUSTER_DIR") or str(REPO / ".local" / "test-cluster"))
    + "-durability"
).resolve()
SAMPLE = REPO / "manifests" / "samples" / "tiny-finetunejob.yaml"
COMPONENTS = ("etcd", "apiserver", "controller-manager", "scheduler", "node-agent")
WRITER = (
    "import os, pathlib\n"
    "pathlib.Path('/models/run-1').mkdir()\n"
    "pathlib.Path('/models/run-1/model.txt').write_text('trained weights')\n"
)


@pytest.fixture(scope="module")
def durable() -> Iterator[LocalCluster]:
    """A cluster of its own, made as `make cluster-up` makes the dev cluster (fsync on)."""
    try:
        binaries()
        cluster, _ = start_cluster(STATE, fresh=True, fsync=True)
    except (ClusterError, subprocess.TimeoutExpired, OSError) as exc:
        cluster_unavailable(str(exc))
    try:
        yield cluster
    finally:
        clean(STATE, quiet=True)


def _writer_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "writer"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
            "containers": [
                {
                    "name": "main",
                    "image": "python",
                    "command": ["python3", "-c", WRITER],
                    "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                }
            ],
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
        },
    }


def _claim() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "models"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def _what_it_made(cluster: LocalCluster) -> dict[str, Any]:
    """The objects and files the restart must keep."""
    ftj = get(cluster, "default", "finetunejob", "tiny-frigo")
    pvc = get(cluster, "default", "pvc", "models")
    model = cluster.pv_root / "default" / "models" / "run-1" / "model.txt"
    return {
        "server": cluster.server,
        "kubeconfig": cluster.kubeconfig.read_text(),
        "finetunejob": (ftj["metadata"]["uid"], ftj["spec"]["model"]),
        "claim": (pvc["metadata"]["uid"], pvc["status"]["phase"], pvc["spec"]["volumeName"]),
        "writer": pod_phase(cluster, "default", "writer"),
        "model": model.read_text(),
    }


def test_restart_and_crash_keep_jobs_volumes_and_address(durable: LocalCluster) -> None:
    cluster = durable
    install_crd(cluster.kubeconfig, timeout=60)
    applied = cluster.kubectl("apply", "-f", str(SAMPLE))  # the README's command, as written
    assert "finetunejob.kubetune.io/tiny-frigo created" in applied.stdout
    apply(cluster, "default", _claim(), _writer_pod())
    wait_for(lambda: pod_phase(cluster, "default", "writer") == "Succeeded", 90, "writer pod")
    before = _what_it_made(cluster)
    assert before["model"] == "trained weights" and before["claim"][1] == "Bound"

    stop_cluster(STATE)
    assert procs.find(str(STATE)) == []
    again, out = start_cluster(STATE, fresh=False)
    assert "starting the local cluster recorded in" in out, out
    assert _what_it_made(again) == before

    # A crash of every process at once (a reboot, an OOM kill...), then `make cluster-up`.
    for pid in procs.find(str(STATE)):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not [p for p in procs.find(str(STATE)) if procs.alive(p)], 30, "all dead")
    third, _ = start_cluster(STATE, fresh=False)
    assert _what_it_made(third) == before


def _restarted(cluster: LocalCluster, name: str, old: int) -> Callable[[], bool]:
    return lambda: component_pid(cluster, name) not in (None, old)


def test_sigkilled_components_come_back_at_the_same_address(durable: LocalCluster) -> None:
    cluster = durable
    wait_writable(cluster)
    for name in COMPONENTS:
        old = kill_component(cluster, name)
        took = wait_writable(cluster, 60)
        wait_for(_restarted(cluster, name, old), 60, f"{name} restarted")
        assert took < 60, (name, took)
        current = LocalCluster.load(STATE)
        assert current is not None and current.server == cluster.server
    # The supervisor itself: `cluster-up` starts a new one, which adopts the running
    # components instead of starting second copies.
    before = LocalCluster.load(STATE)
    assert before is not None
    kill_component(cluster, "supervisor")
    repaired, _ = start_cluster(STATE, fresh=False)
    assert repaired.server == cluster.server
    assert {n: repaired.pids[n] for n in COMPONENTS} == {n: before.pids[n] for n in COMPONENTS}
    assert repaired.pids["supervisor"] != before.pids["supervisor"]
    # An outage: the apiserver stays away while held, then comes back where it was.
    with component_stopped(cluster, "apiserver"):
        time.sleep(3)
        with pytest.raises(OSError):
            cluster.get("/readyz")
    assert wait_writable(cluster, 60) < 60
    # The restarted controller-manager, scheduler and node agent run a Job to completion.
    apply(cluster, "default", job("after-kills", ["python3", "-c", "print('ok')"]))
    assert wait_for(lambda: job_condition(cluster, "default", "after-kills"), 90, "job") == (
        "Complete"
    )


def test_a_running_pod_is_readopted_by_a_restarted_node_agent(durable: LocalCluster) -> None:
    cluster = durable
    script = (
        "import os, time\n"
        "print('pid', os.getpid(), flush=True)\n"
        "for i in range(30):\n"
        "    print(i, flush=True); time.sleep(0.4)\n"
    )
    pod = python_pod("counter", script)
    with temporary_namespace(cluster) as ns:
        apply(cluster, ns, pod)

        def logs() -> str:
            return str(cluster.kubectl("logs", "-n", ns, "counter", check=False).stdout)

        first = wait_for(lambda: "3\n" in logs() and logs(), 60, "counter running")
        pid = int(first.split()[1])
        old_agent = kill_component(cluster, "node-agent")
        wait_for(_restarted(cluster, "node-agent", old_agent), 30, "node agent restarted")
        assert procs.alive(pid)  # the container outlived the agent
        wait_for(lambda: pod_phase(cluster, ns, "counter") in ("Succeeded", "Failed"), 60, "end")
        status = get(cluster, ns, "pod", "counter")["status"]["containerStatuses"][0]
        assert pod_phase(cluster, ns, "counter") == "Succeeded", status
        assert status["restartCount"] == 0 and status["state"]["terminated"]["exitCode"] == 0
        lines = logs().split("\n")
        # one run, whole: the pid once, every count once, in order, across the agent's restart
        assert lines[0] == f"pid {pid}" and lines[1:-1] == [str(i) for i in range(30)], lines
        uid = get(cluster, ns, "pod", "counter")["metadata"]["uid"]
        mine = ({"KUBETUNE_POD_UID": uid}, {"KUBETUNE_SHIM_POD": uid})  # container, shim
        wait_for(
            lambda: not any(procs.find(str(STATE), m) for m in mine), 10, "the pod's processes end"
        )
