"""cluster-up is idempotent, cluster-down leaves no process behind but keeps the data, and
`clean` deletes it (own state dir)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from kubetune_local import procs
from kubetune_local.cluster import REPO, ClusterError, binaries, clean
from kubetune_local.testing import cluster_unavailable, start_cluster, stop_cluster, wait_for

pytestmark = pytest.mark.cluster


def test_cluster_up_is_idempotent_and_down_leaves_nothing() -> None:
    state = REPO / ".local" / "lifecycle-cluster"
    shutil.rmtree(state, ignore_errors=True)
    try:
        binaries()
        first, out1 = start_cluster(state)
    except (ClusterError, subprocess.TimeoutExpired) as exc:
        cluster_unavailable(str(exc))
    try:
        assert out1.strip().splitlines()[-1] == f"export KUBECONFIG={state / 'kubeconfig'}"
        second, out2 = start_cluster(state, fresh=False)
        assert "already up" in out2
        assert out2.strip().splitlines()[-1] == f"export KUBECONFIG={state / 'kubeconfig'}"
        assert second.pids == first.pids
        # a pod process, to check that cluster-down stops pods too (once pods can be admitted)
        sa_token = ("get", "sa", "default", "-o", "jsonpath={.secrets[0].name}")
        wait_for(
            lambda: first.kubectl(*sa_token, check=False).stdout.strip(), 60, "default SA token"
        )
        first.kubectl(
            "run",
            "idle",
            "--image=python",
            "--restart=Never",
            "--",
            "python3",
            "-c",
            "import time; time.sleep(600)",
        )
        marker = str(state)
        wait_for(
            lambda: [p for p in procs.find(marker) if "KUBETUNE_POD_UID" in procs.environ(p)],
            60,
            "pod process",
        )
        assert len(procs.find(str(state))) >= 6
    finally:
        stop_cluster(state)
    assert procs.find(str(state)) == []
    for pid in first.pids.values():
        assert not procs.alive(pid)
    out = stop_cluster(state)  # twice is fine
    assert "no local cluster running" in out
    assert (state / "etcd").is_dir() and (state / "cluster.json").is_file()  # data kept
    clean(state)  # what `make clean` does to the cluster
    assert not state.exists()
