"""Fixtures for the operator's cluster tests: the CRDs, claims, and an operator per test.

Each test gets its own namespace (tests/conftest.py), the two PVCs the trainer mounts, and a
`kubetune-operator` subprocess watching only that namespace and running the stand-in trainer
(tests/support/fake_trainer.py) instead of `kubetune-trainer`; the FineTuneSchedule tests
get one started after the schedule CRD exists, checking schedules every 2 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubetune_local.cluster import LocalCluster
from kubetune_local.workspace import create_claims
from operator_cluster_helpers import Ftj
from schedule_cluster_helpers import Schedule
from support.operator_proc import OperatorProcess


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


@pytest.fixture
def schedule_operator(
    cluster: LocalCluster, crd: None, ftj_namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator, started after the schedule CRD exists (kopf scans resources at start)."""
    proc = OperatorProcess(
        cluster.kubeconfig,
        settings={
            "NAMESPACES": [ftj_namespace],
            "TTL_SECONDS_AFTER_FINISHED": "600",
            "SCHEDULE_CHECK_SECONDS": "2",
        },
        log_path=tmp_path / "operator.log",
    )
    with proc:
        yield proc


@pytest.fixture
def schedule(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, ftj_namespace: str
) -> Callable[[str], Schedule]:
    return lambda name: Schedule(custom, core, ftj_namespace, name)
