"""Multi-node FineTuneJobs against the real local cluster (kube-apiserver v1.20).

v1.20 has no Indexed Jobs, so the operator must refuse a multi-node run there, naming the
version, and create nothing. With Indexed Jobs forced on (KUBETUNE_USE_INDEXED_JOBS=true,
as an operator of a 1.21 cluster with the alpha gate would) the next check reads the real
claims' access modes; and with shared claims the run's headless Service and NetworkPolicy
are created, owned by the FineTuneJob, and removed once the run ended. (The v1.20 server
drops `completionMode`, so that last run is an ordinary 2-pod Job: it shows the objects'
lifecycle, not the node ranks, which the builder tests and the trainer's own tests cover.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client
from kubetune_local.cluster import LocalCluster
from kubetune_local.testing import wait_for
from kubetune_local.workspace import kubectl as kubectl_in
from operator_cluster_helpers import Ftj, manifest
from support.operator_proc import OperatorProcess

pytestmark = pytest.mark.cluster

GANG = {"resources": {"gpus": 0, "nodes": 2}}


def networking(k8s_api: client.ApiClient) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(k8s_api)


def gang_objects(ftj: Ftj, k8s_api: client.ApiClient) -> tuple[list[str], list[str]]:
    """(Services, NetworkPolicies) named after the FineTuneJob in its namespace."""
    selector = f"kubetune.io/finetunejob={ftj.name}"
    services = ftj.core.list_namespaced_service(ftj.namespace, label_selector=selector).items
    policies = networking(k8s_api).list_namespaced_network_policy(
        ftj.namespace, label_selector=selector
    )
    return [s.metadata.name for s in services], [p.metadata.name for p in policies.items]


def test_multi_node_is_refused_on_a_server_without_indexed_jobs(
    operator_proc: OperatorProcess,
    ftj_factory: Callable[[str], Ftj],
    k8s_api: client.ApiClient,
) -> None:
    ftj = ftj_factory("gang")
    ftj.create(manifest("gang", **GANG))
    status = ftj.wait_phase("Failed", 30)
    assert status["failure"]["reason"] == "BadInput"
    message = status["failure"]["message"]
    assert "resources.nodes=2" in message and "v1.20" in message and "Indexed Jobs" in message
    job_created = {c["type"]: c for c in status["conditions"]}["JobCreated"]
    assert job_created["status"] == "False"
    assert job_created["reason"] == "IndexedJobsUnsupported"
    time.sleep(2)  # nothing follows a refusal
    assert ftj.jobs() == [] and ftj.pods() == []
    assert gang_objects(ftj, k8s_api) == ([], [])
    assert ("Warning", "BadInput") in ftj.events()
    assert "worldSize" not in ftj.status()


def test_multi_node_is_refused_when_a_claim_cannot_be_shared(
    cluster: LocalCluster,
    ftj_namespace: str,
    ftj_factory: Callable[[str], Ftj],
    k8s_api: client.ApiClient,
    tmp_path: Path,
) -> None:
    settings = {"NAMESPACES": [ftj_namespace], "USE_INDEXED_JOBS": "true"}
    with OperatorProcess(cluster.kubeconfig, settings, tmp_path / "operator.log"):
        ftj = ftj_factory("rwo")
        ftj.create(manifest("rwo", **GANG))
        status = ftj.wait_phase("Failed", 30)
    assert status["failure"]["reason"] == "BadInput"
    message = status["failure"]["message"]
    assert "kubetune-models" in message and "ReadWriteOnce" in message
    assert "ReadWriteMany" in message
    job_created = {c["type"]: c for c in status["conditions"]}["JobCreated"]
    assert (job_created["status"], job_created["reason"]) == ("False", "StorageNotShared")
    assert ftj.jobs() == [] and gang_objects(ftj, k8s_api) == ([], [])


def _shared_claims(cluster: LocalCluster, namespace: str) -> None:
    items = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": "1Gi"}}},
        }
        for name, modes in (("shared-models", ["ReadWriteMany"]), ("shared-data", ["ReadOnlyMany"]))
    ]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    kubectl_in(cluster.kubeconfig, "apply", "-f", "-", stdin=body)


def test_a_multi_node_runs_service_and_network_policy_live_as_long_as_the_run(
    cluster: LocalCluster,
    ftj_namespace: str,
    ftj_factory: Callable[[str], Ftj],
    k8s_api: client.ApiClient,
    tmp_path: Path,
) -> None:
    _shared_claims(cluster, ftj_namespace)
    settings = {
        "NAMESPACES": [ftj_namespace],
        "USE_INDEXED_JOBS": "true",
        "GANG_NETWORK_POLICY": "true",
        "MODELS_CLAIM": "shared-models",
        "DATA_CLAIM": "shared-data",
    }
    with OperatorProcess(cluster.kubeconfig, settings, tmp_path / "operator.log"):
        ftj = ftj_factory("pair")
        created = ftj.create(manifest("pair", "data/fake_steps-6_interval-0.5.csv", **GANG))
        uid = created["metadata"]["uid"]
        ftj.wait_phase("Running", 40)
        assert gang_objects(ftj, k8s_api) == (["pair"], ["pair"])
        svc = ftj.core.read_namespaced_service("pair", ftj.namespace)
        assert svc.spec.cluster_ip == "None" and svc.spec.publish_not_ready_addresses
        assert svc.metadata.owner_references[0].uid == uid
        policy = networking(k8s_api).read_namespaced_network_policy("pair", ftj.namespace)
        assert policy.metadata.owner_references[0].uid == uid
        job = ftj.jobs()[0]
        assert (job.spec.parallelism, job.spec.completions) == (2, 2)
        pod = job.spec.template.spec
        assert pod.subdomain == "pair"
        env = {e.name: e.value for e in pod.containers[0].env}
        assert env["PET_MASTER_ADDR"] == "pair-0.pair" and env["PET_NNODES"] == "2"
        status = ftj.wait_phase("Succeeded", 60)
        assert status["worldSize"] == 2 and status["effectiveBatchSize"] == 8
        wait_for(lambda: gang_objects(ftj, k8s_api) == ([], []), 20, "the gang objects to go")
