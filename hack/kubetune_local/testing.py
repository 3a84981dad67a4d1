"""Test support for the local cluster, shared by `tests/conftest.py` and the cluster tests.

Starts and stops clusters through the same scripts as `make cluster-up`/`cluster-down`,
and turns "cannot start" into a failure under CI=true and a skip elsewhere.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

from kubetune_local.cluster import REPO, ClusterError, LocalCluster


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
