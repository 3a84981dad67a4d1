"""Shared fixtures: the real local Kubernetes cluster, a namespace per test, an API client.

`cluster` (session) starts a cluster with the same code as `make cluster-up`, in its own
state dir (`.local/test-cluster`, or $KUBETUNE_TEST_CLUSTER_DIR), so it never collides with
a developer's cluster, and stops it at the end. Without the binaries or when it cannot
start: a failure under CI=true, a skip with the reason otherwise.
Mark tests that use it `@pytest.mark.cluster`. On it: `crd` (every generated CRD, once),
`start_api` (API servers stopped after the test) and `stack` (the real operator, API and
trainer on the tiny model in the test's namespace), used by the API, operator, e2e and
console tests alike.
"""

from __future__ import annotations

import os

# Before torch or numpy load anywhere: OpenMP's spin-wait slows 2-core machines 10-20x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api.api_proc import ApiProcess
from e2e.stack import E2EStack
from kubernetes import client, config
from kubetune_local.cluster import ClusterError, LocalCluster, binaries
from kubetune_local.testing import (
    cluster_unavailable,
    start_cluster,
    stop_cluster,
    temporary_namespace,
)
from kubetune_local.workspace import install_crd

REPO = Path(__file__).resolve().parents[1]
# KUBETUNE_TEST_CLUSTER_DIR gives a session its own cluster (two sessions in one checkout).
TEST_CLUSTER_DIR = Path(
    os.environ.get("KUBETUNE_TEST_CLUSTER_DIR") or REPO / ".local" / "test-cluster"
)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """The running local cluster (see `kubetune_local.cluster.LocalCluster`)."""
    try:
        binaries()
        started, _ = start_cluster(TEST_CLUSTER_DIR)
    except (ClusterError, subprocess.TimeoutExpired, OSError) as exc:
        cluster_unavailable(str(exc))
    try:
        yield started
    finally:
        stop_cluster(TEST_CLUSTER_DIR)


@pytest.fixture(scope="session")
def k8s_api(cluster: LocalCluster) -> Iterator[client.ApiClient]:
    """A `kubernetes.client.ApiClient` for the cluster (admin token)."""
    api = config.new_client_from_config(str(cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount has its token; deleted afterwards."""
    with temporary_namespace(cluster) as name:
        yield name


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline tiny base model (catalog alias `tiny`), built once per session."""
    from kubetune_trainer.tiny_model import build_tiny_model

    return Path(build_tiny_model(tmp_path_factory.mktemp("base") / "kubetune-tiny"))


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> None:
    """Every generated CRD installed and established (install_crd retries `kubectl wait`
    while a fresh CRD has no conditions yet)."""
    install_crd(cluster.kubeconfig, timeout=60)


@pytest.fixture
def start_api(cluster: LocalCluster, crd: None) -> Iterator[Callable[..., ApiProcess]]:
    """Start API servers against the cluster; all are stopped at the end of the test."""
    started: list[ApiProcess] = []

    def start(**settings: Any) -> ApiProcess:
        proc = ApiProcess(cluster.kubeconfig, settings).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def stack(
    cluster: LocalCluster,
    crd: None,
    namespace: str,
    k8s_api: client.ApiClient,
    tiny_model: Path,
    tmp_path: Path,
) -> Iterator[E2EStack]:
    """The real operator, API and trainer (tiny model) in the test's namespace, with seeded
    claims; the operator and API start on demand and stop afterwards."""
    st = E2EStack(cluster, namespace, k8s_api, tmp_path)
    st.seed(tiny_model)
    try:
        yield st
    finally:
        st.close()
