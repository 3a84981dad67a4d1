"""Fixtures for the operator's cluster tests: the CRD, claims, and an operator per test.

Each test gets its own namespace (tests/conftest.py), the two PVCs the trainer mounts, and a
`kubetune-operator` subprocess watching only that namespace and running the stand-in trainer
(tests/support/fake_trainer.py) instead of `kubetune-trainer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kubernetes import client
from kubetune_local.cluster import LocalCluster
from kubetune_local.workspace import create_claims, install_crd
from operator_cluster_helpers import Ftj
from support.operator_proc import OperatorProcess


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


@pytest.fixture
def ftj_factory(
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    core: client.CoreV1Api,
    ftj_namespace: str,
) -> Callable[[str], Ftj]:
    return lambda name: Ftj(custom, batch, core, ftj_namespace, name)
