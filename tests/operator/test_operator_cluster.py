"""The operator against the real local cluster (kube-apiserver v1.20, Job controller, GC,
scheduler and the node agent running the stand-in trainer as the container)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubetune_local.cluster import LocalCluster
from kubetune_local.testing import wait_for
from operator_cluster_helpers import GROUP, PLURAL, VERSION, Ftj, kubectl, manifest
from support.operator_proc import OperatorProcess

pytestmark = pytest.mark.cluster

CRASH_HOOK = Path(__file__).with_name("crash_hook")


def test_kubectl_apply_runs_to_success(
    cluster: LocalCluster,
    operator_proc: OperatorProcess,
    ftj_namespace: str,
    ftj_factory: Callable[[str], Ftj],
) -> None:
    ftj = ftj_factory("happy")
    body = manifest("happy", "data/fake_steps-4_interval-1.csv")
    proc = kubectl(cluster, "apply", "-n", ftj_namespace, "-f", "-", stdin=json.dumps(body))
    assert proc.returncode == 0, proc.stderr
    job = wait_for(lambda: ftj.jobs(), 20, "the Job")[0]
    assert job.metadata.name == "happy"
    assert job.metadata.owner_references[0].kind == "FineTuneJob"
    assert job.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    phases: list[str] = []
    fractions: list[float] = []

    def finished() -> bool:
        status = ftj.status()
        if status.get("phase") and (not phases or phases[-1] != status["phase"]):
            phases.append(status["phase"])
        fraction = (status.get("progress") or {}).get("fraction")
        if fraction is not None:
            fractions.append(fraction)
        return status.get("phase") in ("Succeeded", "Failed")

    wait_for(finished, 60, "the job to finish")
    assert phases[-1] == "Succeeded", phases
    assert "Running" in phases, phases
    # live progress arrived while it ran (the trainer posts every second, 4 steps)
    assert any(0 < f < 1 for f in fractions), fractions
    status = ftj.status()
    assert status["model"]["path"] == "models/tiny-finetuned-happy"
    assert status["model"]["uri"] == "pvc://kubetune-models/models/tiny-finetuned-happy"
    assert status["model"]["baseModelAlias"] == "tiny"
    assert status["metrics"]["evalLossAfter"] == 1.0
    assert status["progress"]["fraction"] == 1.0
    assert status["attempts"] == 1 and status["jobName"] == "happy"
    assert status["startTime"] and status["completionTime"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Succeeded"]["observedGeneration"] == 1
    model_dir = (
        cluster.pv_root / ftj_namespace / "kubetune-models" / "models" / "tiny-finetuned-happy"
    )
    assert (model_dir / "adapter_config.json").exists()
    # TTL only once the final status is written
    wait_for(lambda: ftj.jobs()[0].spec.ttl_seconds_after_finished == 600, 20, "the TTL")
    reasons = [r for _, r in wait_for(lambda: ftj.events() if len(ftj.events()) >= 3 else None, 10)]
    assert "JobCreated" in reasons and "Running" in reasons and "Succeeded" in reasons
    printed = kubectl(cluster, "get", "ftj", "happy", "-n", ftj_namespace)
    assert "Succeeded" in printed.stdout and "tiny" in printed.stdout


def test_bad_input_exit_code_fails_without_retry(
    operator_proc: OperatorProcess, ftj_factory: Callable[[str], Ftj]
) -> None:
    ftj = ftj_factory("bad")
    ftj.create(
        manifest(
            "bad", "data/fake_steps-1_interval-0.1_exit-42_message-no+text+column.csv", maxRetries=3
        )
    )
    status = ftj.wait_phase("Failed")
    assert status["failure"]["reason"] == "BadInput"
    assert status["failure"]["exitCode"] == 42
    assert status["failure"]["message"] == "no text column"
    # maxRetries 3 would allow 4 attempts; the Job controller may start a second pod before
    # the operator's reaction lands, never more
    assert status["attempts"] <= 2
    # v1.20 has no podFailurePolicy: the operator stopped the Job itself (no retry)
    wait_for(lambda: not ftj.jobs(), 20, "the Job to be deleted")
    assert status["phase"] == "Failed" and ftj.phase() == "Failed"
    assert ("Warning", "BadInput") in ftj.events()


def test_crash_exit_code_fails_with_unknown_after_retries(
    operator_proc: OperatorProcess, ftj_factory: Callable[[str], Ftj]
) -> None:
    ftj = ftj_factory("crash")
    ftj.create(
        manifest("crash", "data/fake_steps-1_interval-0.1_exit-1_noresult-1.csv", maxRetries=0)
    )
    status = ftj.wait_phase("Failed", 60)
    assert status["failure"]["reason"] == "Unknown"
    assert status["failure"]["exitCode"] == 1
    assert status["attempts"] == 1


def test_too_many_gpus_is_pending_unschedulable(
    operator_proc: OperatorProcess, ftj_factory: Callable[[str], Ftj]
) -> None:
    ftj = ftj_factory("greedy")
    ftj.create(manifest("greedy", resources={"gpus": 64}))
    status = wait_for(
        lambda: (
            s if (s := ftj.status()).get("pending", {}).get("reason") == "Unschedulable" else None
        ),
        30,
        "Unschedulable",
    )
    assert status["phase"] == "Pending"
    assert "Insufficient nvidia.com/gpu" in status["pending"]["message"]
    scheduled = {c["type"]: c for c in status["conditions"]}["Scheduled"]
    assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"
    assert ("Warning", "Unschedulable") in ftj.events()


def test_invalid_specs_are_rejected_by_the_apiserver(
    cluster: LocalCluster, ftj_namespace: str
) -> None:
    cases = {
        "epochs": {"hyperparameters": {"epochs": 50}},
        "batch": {"hyperparameters": {"batchSize": 0}},
        "method": {"method": {"type": "prefix-tuning"}},
        "two-outputs": {"output": {"pvc": {"claimName": "a"}, "s3": {"uri": "s3://bucket/x"}}},
        "bad-claim": {"output": {"pvc": {"claimName": "Not_A_Name"}}},
        "bad-gpus": {"resources": {"gpus": -1}},
    }
    for case, spec in cases.items():
        body = manifest(f"invalid-{case}", **spec)
        proc = kubectl(cluster, "apply", "-n", ftj_namespace, "-f", "-", stdin=json.dumps(body))
        assert proc.returncode != 0, case
        assert "is invalid" in proc.stderr, (case, proc.stderr)
    missing = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": "nodata"},
        "spec": {"model": "tiny"},
    }
    proc = kubectl(cluster, "apply", "-n", ftj_namespace, "-f", "-", stdin=json.dumps(missing))
    assert proc.returncode != 0 and "dataset" in proc.stderr
    long_name = manifest("x" * 53)
    proc = kubectl(cluster, "apply", "-n", ftj_namespace, "-f", "-", stdin=json.dumps(long_name))
    assert proc.returncode != 0 and "at most 52" in proc.stderr


def test_cancel_stops_the_pods_and_keeps_the_record(
    operator_proc: OperatorProcess, ftj_factory: Callable[[str], Ftj]
) -> None:
    ftj = ftj_factory("stopme")
    ftj.create(manifest("stopme", "data/fake_steps-300_interval-1.csv"))
    ftj.wait_phase("Running", 30)
    ftj.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ftj.namespace, PLURAL, "stopme", {"spec": {"cancel": True}}
    )
    status = ftj.wait_phase("Cancelled", 20)
    assert status["failure"]["reason"] == "Cancelled"
    wait_for(lambda: not ftj.jobs() and not ftj.pods(), 40, "the Job and pods to go")
    time.sleep(1)
    assert ftj.phase() == "Cancelled"  # the record stays, and never reverts
    assert ("Normal", "Cancelled") in ftj.events()


def test_delete_removes_job_and_pods(
    operator_proc: OperatorProcess, ftj_factory: Callable[[str], Ftj]
) -> None:
    ftj = ftj_factory("gone")
    ftj.create(manifest("gone", "data/fake_steps-300_interval-1.csv"))
    ftj.wait_phase("Running", 30)
    assert ftj.jobs() and ftj.pods()
    ftj.custom.delete_namespaced_custom_object(GROUP, VERSION, ftj.namespace, PLURAL, "gone")
    wait_for(lambda: not ftj.jobs() and not ftj.pods(), 60, "garbage collection of Job and pods")


class CrashingOperator(OperatorProcess):
    """The real operator, SIGKILLed right after its first Job create call returns.

    While `crash` is set, the process starts with tests/operator/crash_hook first on its
    PYTHONPATH, whose `sitecustomize` wraps the client's POST (see that module).
    """

    crash = True

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.crash:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(CRASH_HOOK), env.get("PYTHONPATH")) if p
            )
        return env


def test_sigkill_right_after_job_create_leaves_exactly_one_job(
    cluster: LocalCluster, ftj_namespace: str, ftj_factory: Callable[[str], Ftj], tmp_path: Any
) -> None:
    op = CrashingOperator(
        cluster.kubeconfig,
        settings={"NAMESPACES": [ftj_namespace]},
        log_path=tmp_path / "operator.log",
    )
    first = ftj_factory("crashy")
    with op:
        first.create(manifest("crashy"))
        assert op.wait_exit(30) == -9  # SIGKILLed right after POST /jobs returned
        assert len(first.jobs()) == 1
        # it died before writing the status that follows the Job (the pre-flight's came before)
        assert first.phase() == "Validating"
        # created while the operator is down: handled at start-up
        second = ftj_factory("while-down")
        second.create(manifest("while-down"))
        op.crash = False
        op.start()
        first.wait_phase("Succeeded", 60)
        second.wait_phase("Succeeded", 60)
        assert [j.metadata.name for j in first.jobs()] == ["crashy"]
        assert [j.metadata.name for j in second.jobs()] == ["while-down"]
        assert first.status()["attempts"] == 1
        assert "adopted existing Job" in op.log() or "pre-listed 1 Jobs" in op.log()


def test_progress_endpoint_rejects_foreign_tokens(
    cluster: LocalCluster,
    operator_proc: OperatorProcess,
    ftj_namespace: str,
    core: client.CoreV1Api,
    ftj_factory: Callable[[str], Ftj],
) -> None:
    import urllib.error
    import urllib.request

    ftj = ftj_factory("guarded")
    ftj.create(manifest("guarded", "data/fake_steps-300_interval-1.csv"))
    ftj.wait_phase("Running", 30)

    def post(token: str | None) -> int:
        req = urllib.request.Request(
            f"{operator_proc.url}/progress/{ftj_namespace}/guarded",
            data=json.dumps({"fraction": 0.99, "step": 99}).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {token}"} if token else {}),
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert post(None) == 401
    assert post("not-a-token") == 401
    # a real token of the namespace's service account with the right audience, but bound to
    # no pod of this job: refused
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["kubetune-progress"], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token(
        "default", ftj_namespace, request
    ).status.token
    assert post(token) == 403
    # and that audience opens nothing on the API server itself
    proc = kubectl(cluster, "--token", token, "get", "pods", "-n", ftj_namespace)
    assert proc.returncode != 0 and "Unauthorized" in proc.stderr
    assert (ftj.status().get("progress") or {}).get("fraction") != 0.99
