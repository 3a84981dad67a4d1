"""Test support for the local cluster, shared by `tests/conftest.py` and the cluster tests.

Starts and stops clusters through the same scripts as `make cluster-up`/`cluster-down`,
and turns "cannot start" into a failure under CI=true and a skip elsewhere. A test cluster
starts fresh by default (`cluster-up --fresh --no-fsync`: nothing left from an earlier
session, etcd without fsync for speed); `restart_cluster`, `kill_component` and
`wait_writable` are for the tests of durability and self-healing.
"""

from __future__ import annotations

import os
import signal
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


def _script(
    name: str, state_dir: Path, timeout: float, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBETUNE_CLUSTER_DIR": str(state_dir)}
    env.pop("KUBETUNE_PV_ROOT", None)
    return subprocess.run(
        ["bash", str(REPO / "hack" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cluster(
    state_dir: Path, timeout: float = 180, *, fresh: bool = True, fsync: bool = False
) -> tuple[LocalCluster, str]:
    """Run hack/cluster-up.sh for `state_dir`: the cluster and the script's stdout.

    `fresh` (the default for tests) deletes whatever an earlier cluster left in `state_dir`;
    `fresh=False` starts (or finds) the cluster recorded there, as `make cluster-up` does.
    `fsync` only matters for a new cluster: tests run etcd without it unless they ask.
    """
    args = [*(["--fresh"] if fresh else []), *([] if fsync else ["--no-fsync"])]
    proc = _script("cluster-up.sh", state_dir, timeout, *args)
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


def restart_cluster(state_dir: Path, timeout: float = 180) -> LocalCluster:
    """cluster-down then cluster-up on the same state dir (what `make dev-down`/`dev-up` and
    a reboot do to the cluster): the same cluster, with its data, at the same address."""
    stop_cluster(state_dir)
    cluster, _ = start_cluster(state_dir, timeout, fresh=False)
    return cluster


def kill_component(cluster: LocalCluster, name: str) -> int:
    """SIGKILL one control-plane component (`etcd`, `apiserver`, `controller-manager`,
    `scheduler`, `node-agent`, `supervisor`) of a running cluster; its PID."""
    current = LocalCluster.load(cluster.state_dir)
    pid = (current.pids if current else {}).get(name)
    if pid is None:
        raise ClusterError(f"no running {name} recorded in {cluster.state_dir}")
    os.kill(pid, signal.SIGKILL)
    return pid


class ComponentOutage:
    """A component taken away for a while: `stop()` SIGKILLs it and holds the supervisor off
    restarting it (`<state>/hold/<name>`); `start()` lets the supervisor start it again --
    same address, certificates and data -- and waits until the cluster accepts writes."""

    def __init__(self, cluster: LocalCluster, name: str = "apiserver") -> None:
        self.cluster = cluster
        self.name = name
        self.hold = cluster.state_dir / "hold" / name
        self.pid: int | None = None
        self.stopped_at: float | None = None

    def stop(self) -> int:
        """Kill the component and keep it down; its PID."""
        self.hold.parent.mkdir(parents=True, exist_ok=True)
        self.hold.touch()
        pid = kill_component(self.cluster, self.name)
        wait_for(lambda: component_pid(self.cluster, self.name) != pid, 30, f"{self.name} down")
        self.pid, self.stopped_at = pid, time.monotonic()
        return pid

    def down_for(self) -> float:
        """Seconds since `stop()`."""
        assert self.stopped_at is not None, "stop() first"
        return time.monotonic() - self.stopped_at

    def start(self, timeout: float = 90) -> int:
        """Let the supervisor start it again; wait for it and for a write to succeed."""
        self.hold.unlink(missing_ok=True)
        new = wait_for(lambda: component_pid(self.cluster, self.name), timeout, self.name)
        wait_writable(self.cluster, timeout)
        return new


@contextmanager
def component_stopped(cluster: LocalCluster, name: str) -> Iterator[int]:
    """`with component_stopped(cluster, "apiserver"):` is an apiserver outage for the block;
    the component comes back (same address and data) on exit. Yields the PID it had."""
    outage = ComponentOutage(cluster, name)
    try:
        yield outage.stop()
    finally:
        outage.hold.unlink(missing_ok=True)


def component_pid(cluster: LocalCluster, name: str) -> int | None:
    """The PID the supervisor now records for component `name`."""
    current = LocalCluster.load(cluster.state_dir)
    return (current.pids if current else {}).get(name)


def wait_writable(cluster: LocalCluster, timeout: float = 60) -> float:
    """Wait until the cluster accepts a write (a ConfigMap created and deleted in `default`);
    the seconds it took. AssertionError after `timeout`."""
    t0 = time.monotonic()
    name = f"write-probe-{uuid.uuid4().hex[:8]}"

    def write() -> bool:
        created = cluster.kubectl(
            "create", "configmap", name, "-n", "default", check=False, timeout=10
        )
        if created.returncode != 0 and "AlreadyExists" not in created.stderr:
            return False
        cluster.kubectl("delete", "configmap", name, "-n", "default", check=False, timeout=10)
        return True

    wait_for(write, timeout, f"the cluster at {cluster.server} to accept writes", 0.5)
    return time.monotonic() - t0


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
