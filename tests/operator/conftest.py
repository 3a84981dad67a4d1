"""Fixtures for the operator's cluster tests: the CRD, claims, and an operator per test.

Each test gets its own namespace (tests/conftest.py), the two PVCs the trainer mounts, and a
`kubetune-operator` subprocess watching only that namespace and running the stand-in trainer
(tests/support/fake_trainer.py) instead of `kubetune-trainer`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubetune_local.cluster import ClusterError, LocalCluster, binaries
from kubetune_local.testing import cluster_unavailable, start_cluster, stop_cluster
from support.operator_proc import OperatorProcess, create_claims, install_crd


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """tests/conftest.py's cluster, in `KUBETUNE_TEST_CLUSTER_DIR` when set.

    Several engineers run the suite in one checkout at once; the shared state dir lets one
    session's teardown stop another's cluster. A private dir avoids that.
    """
    state = Path(
        os.environ.get("KUBETUNE_TEST_CLUSTER_DIR")
        or Path(__file__).resolve().parents[2] / ".local" / "test-cluster"
    )
    try:
        binaries()
        started, _ = start_cluster(state)
    except (ClusterError, subprocess.TimeoutExpired, OSError) as exc:
        cluster_unavailable(str(exc))
    try:
        yield started
    finally:
        stop_cluster(state)


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> None:
    install_crd(cluster.kubeconfig)


@pytest.fixture
def ftj_namespace(cluster: LocalCluster, crd: None, namespace: str) -> str:
    create_claims(cluster.kubeconfig, namespace)
    return namespace


@pytest.fixture
def operator_proc(
    cluster: LocalCluster, ftj_namespace: str, tmp_path: object
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        cluster.kubeconfig,
        settings={"NAMESPACES": [ftj_namespace], "TTL_SECONDS_AFTER_FINISHED": "600"},
        log_path=f"{tmp_path}/operator.log",
    )
    with proc:
        yield proc


@pytest.fixture
def custom(k8s_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_api)


@pytest.fixture
def batch(k8s_api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(k8s_api)


@pytest.fixture
def core(k8s_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(k8s_api)
