"""The distributed run's builders: torchrun's PET_* variables, the Indexed Job of a multi-node
run, its headless Service and NetworkPolicy; the rendered manifests valid for Kubernetes 1.30."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubetune_crd.catalog import load_catalog
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.trainer_contract import TrainerRunConfig
from kubetune_operator.capabilities import ServerCapabilities, capabilities_for
from kubetune_operator.gang_builders import (
    build_gang_network_policy,
    build_headless_service,
    gang_service_name,
    master_address,
)
from kubetune_operator.job_builder import build_job
from kubetune_operator.settings import OperatorSettings

CURRENT = ServerCapabilities(version=(1, 30), pod_failure_policy=True, suspend=True)
NAME = "ft-20240115-103045-abc123"
SELECTOR = {"app.kubernetes.io/managed-by": "kubetune", "kubetune.io/finetunejob": NAME}
INDEX_PATH = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def ftj(spec: dict[str, Any] | None = None, name: str = NAME) -> FineTuneJob:
    body = {"model": "tiny", "dataset": {"url": "data/frigo_training.csv"}, **(spec or {})}
    return FineTuneJob.from_k8s(
        {"metadata": {"name": name, "namespace": "team-a", "uid": "uid-1"}, "spec": body}
    )


def build(obj: FineTuneJob, **settings: Any) -> dict[str, Any]:
    return build_job(obj, OperatorSettings(**settings), CURRENT, load_catalog(), None)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"])


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    container = pod_spec(job)["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def pet(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env_of(job).items() if k.startswith("PET_")}


def test_single_node_runs_torchrun_on_loopback_with_one_process_per_gpu() -> None:
    assert pet(build(ftj({"resources": {"gpus": 4}}))) == {
        "PET_NNODES": "1",
        "PET_NPROC_PER_NODE": "4",
        "PET_NODE_RANK": "0",
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": "29500",
    }
    assert pet(build(ftj({"resources": {"gpus": 0}})))["PET_NPROC_PER_NODE"] == "1"  # CPU
    # unset gpus: the operator's default decides the processes too
    assert pet(build(ftj(), trainer_default_gpus=2))["PET_NPROC_PER_NODE"] == "2"
    assert pet(build(ftj(), trainer_default_gpus=0))["PET_NPROC_PER_NODE"] == "1"
    job = build(ftj({"resources": {"gpus": 4}}))
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"]) == (1, 1)
    assert "completionMode" not in spec and "subdomain" not in pod_spec(job)


def test_multi_node_is_one_indexed_job_with_a_stable_rank_zero_address() -> None:
    job = build(ftj({"resources": {"gpus": 8, "nodes": 3}, "maxRetries": 2}))
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"]) == (3, 3)
    assert spec["backoffLimit"] == 6  # 2 gang restarts, each failing its 3 pods
    assert pod_spec(job)["subdomain"] == NAME  # the headless Service
    assert pod_spec(job)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert pet(job) == {
        "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": "8",
        "PET_NODE_RANK": {"fieldRef": {"fieldPath": INDEX_PATH}},
        "PET_MASTER_ADDR": f"{NAME}-0.{NAME}",
        "PET_MASTER_PORT": "29500",
    }
    assert build(ftj({"resources": {"gpus": 8, "nodes": 3}})) == build(
        ftj({"resources": {"gpus": 8, "nodes": 3}})
    )  # deterministic


def test_backoff_limit_is_counted_per_gang_and_bounded() -> None:
    spec = {"resources": {"nodes": 4}, "maxRetries": 9}
    assert build(ftj(spec), max_backoff_limit=3)["spec"]["backoffLimit"] == 12
    assert build(ftj({"resources": {"nodes": 4}, "maxRetries": 0}))["spec"]["backoffLimit"] == 0


def test_kueue_admits_the_whole_gang_as_one_suspended_job() -> None:
    job = build(ftj({"resources": {"nodes": 2}, "scheduling": {"queueName": "gpu"}}))
    assert job["spec"]["suspend"] is True and job["spec"]["parallelism"] == 2
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    assert job["spec"]["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"


def test_strategy_and_shape_reach_the_trainer_through_the_run_config() -> None:
    spec = {"resources": {"gpus": 2, "nodes": 2}, "distributed": {"strategy": "fsdp"}}
    cfg = TrainerRunConfig.model_validate_json(env_of(build(ftj(spec)))["KUBETUNE_RUN_CONFIG"])
    assert cfg.spec.distributed.strategy == "fsdp"
    assert (cfg.spec.resources.nodes, cfg.spec.resources.gpus) == (2, 2)


def test_headless_service_selects_the_runs_pods_and_publishes_them_before_ready() -> None:
    svc = build_headless_service(ftj({"resources": {"nodes": 2}}))
    assert svc["metadata"]["name"] == NAME and svc["metadata"]["namespace"] == "team-a"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == SELECTOR
    assert svc["spec"]["publishNotReadyAddresses"] is True
    owner = svc["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("FineTuneJob", "uid-1", True)


def test_network_policy_lets_the_runs_pods_reach_each_other_and_nothing_else() -> None:
    policy = build_gang_network_policy(ftj({"resources": {"nodes": 2}}))
    spec = policy["spec"]
    peers = [{"podSelector": {"matchLabels": SELECTOR}}]
    assert spec["podSelector"] == {"matchLabels": SELECTOR}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"from": peers}]  # every port: rendezvous and NCCL/gloo
    assert spec["egress"] == [{"to": peers}]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_a_name_that_is_no_service_name_gets_a_prefixed_service() -> None:
    assert gang_service_name("7b-run") == "kt-7b-run"
    assert master_address("7b-run") == "7b-run-0.kt-7b-run"
    assert gang_service_name("run-7b") == "run-7b"
    job = build(ftj({"resources": {"nodes": 2}}, name="7b-run"))
    assert pod_spec(job)["subdomain"] == "kt-7b-run"
    assert build_headless_service(ftj(name="7b-run"))["metadata"]["name"] == "kt-7b-run"


def test_indexed_jobs_capability_from_version() -> None:
    s = OperatorSettings()
    assert not capabilities_for({"gitVersion": "v1.20.2"}, s).indexed_jobs
    assert not capabilities_for({"major": "1", "minor": "21"}, s).indexed_jobs  # alpha, off
    assert capabilities_for({"major": "1", "minor": "22"}, s).indexed_jobs
    forced = OperatorSettings(use_indexed_jobs="true")
    assert capabilities_for({"gitVersion": "v1.20.2"}, forced).indexed_jobs


def _multi_node_objects(obj: FineTuneJob, **settings: Any) -> list[dict[str, Any]]:
    return [build(obj, **settings), build_headless_service(obj), build_gang_network_policy(obj)]


@pytest.mark.parametrize(
    "spec",
    [
        {"resources": {"nodes": 2}},
        {
            "resources": {"gpus": 8, "nodes": 16, "cpu": "32", "memory": "512Gi"},
            "distributed": {"strategy": "fsdp"},
            "scheduling": {"queueName": "q", "priorityClassName": "high"},
            "output": {"s3": {"uri": "s3://bkt/x", "credentialsSecretRef": {"name": "s"}}},
        },
    ],
    ids=["two-nodes", "everything"],
)
def test_multi_node_manifests_validate_against_kubernetes_1_30_strict(
    spec: dict[str, Any],
) -> None:
    for name in (NAME, "7b-run"):
        for item in _multi_node_objects(ftj(spec, name), default_queue_name="team"):
            kubernetes_validate.validate(item, "1.30", strict=True)


def test_multi_node_manifests_pass_the_kubernetes_validate_cli(tmp_path: Path) -> None:
    path = tmp_path / "gang.yaml"
    path.write_text(yaml.safe_dump_all(_multi_node_objects(ftj({"resources": {"nodes": 4}}))))
    cli = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run(
        [str(cli), "--strict", "-k", "1.30.0", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" passed for resource ") == 3, proc.stdout
