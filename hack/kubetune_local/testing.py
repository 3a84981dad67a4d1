"""Test support for the local cluster, shared by `tests/conftest.py` and the cluster tests.

Starts and stops clusters through the same scripts as `make cluster-up`/`cluster-down`,
and turns "cannot start" into a failure under CI=true and a skip elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from kubetune_local.cluster import REPO, ClusterError, LocalCluster

T = TypeVar("T")


def cluster_unavailable(reason: str) -> NoReturn:
    """Fail under CI (a cluster that cannot start is a failure there), skip elsewhere."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"local cluster unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"local cluster unavailable: {reason}")


def _script(name: str, state_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBETUNE_CLUSTER_DIR": str(state_dir)}
    env.pop("KUBETUNE_PV_ROOT", None)
    return subprocess.run(
        ["bash", str(REPO / "hack" / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cluster(state_dir: Path, timeout: float = 180) -> tuple[LocalCluster, str]:
    """Run hack/cluster-up.sh for `state_dir`: the cluster and the script's stdout."""
    proc = _script("cluster-up.sh", state_dir, timeout)
    cluster = LocalCluster.load(state_dir)
    if proc.returncode != 0 or cluster is None:
        raise ClusterError(
            f"cluster-up exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return cluster, proc.stdout


def stop_cluster(state_dir: Path) -> str:
    """Run hack/cluster-down.sh for `state_dir`: its output."""
    proc = _script("cluster-down.sh", state_dir, 120)
    return proc.stdout + proc.stderr


@contextmanager
def temporary_namespace(cluster: LocalCluster, timeout: float = 60) -> Iterator[str]:
    """A fresh `t-xxxxxxxx` namespace whose `default` ServiceAccount has its token (pods can
    start in it at once); deleted, without waiting, afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        deadline = time.monotonic() + timeout
        while True:
            sa = cluster.kubectl(
                "get", "serviceaccount", "default", "-n", name,
                "-o", "jsonpath={.secrets[0].name}", check=False,
            )  # fmt: skip
            if sa.returncode == 0 and sa.stdout.strip():
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"namespace {name}: no ServiceAccount token in {timeout:.0f} s")
            time.sleep(0.2)
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_for(
    check: Callable[[], T | None],
    timeout: float = 60,
    what: str = "condition",
    interval: float = 0.2,
) -> T:
    """Poll `check` until it returns something truthy; an exception counts as "not yet".

    After `timeout` seconds it raises AssertionError naming `what` and the last value or error,
    so a test never sleeps and hopes.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
        except Exception as exc:  # the apiserver or a process not ready yet
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)
