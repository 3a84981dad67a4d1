"""Status of distributed runs: worldSize and the effective batch from the Job the operator
built, refusals, attempts counted per gang restart, and the failing rank's reason winning."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from kubetune_crd.catalog import load_catalog
from kubetune_crd.resource import FineTuneJob
from kubetune_operator.capabilities import ServerCapabilities
from kubetune_operator.create_error import CreateError
from kubetune_operator.job_builder import build_job
from kubetune_operator.refusals import indexed_jobs_refusal
from kubetune_operator.run_plan import Topology
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.status_derivation import derive_status

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
INDEX = "batch.kubernetes.io/job-completion-index"


def ftj(status: dict[str, Any] | None = None, **spec: Any) -> FineTuneJob:
    return FineTuneJob.from_k8s(
        {
            "metadata": {"name": "j", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"model": "tiny", "dataset": {"url": "d.csv"}, **spec},
            "status": status or {},
        }
    )


def built_job(obj: FineTuneJob, **status: Any) -> dict[str, Any]:
    """The Job the operator builds for `obj`, as the API server would report it."""
    job = build_job(obj, OperatorSettings(), ServerCapabilities(), load_catalog(), None)
    job["metadata"]["uid"] = "job-uid"
    job["status"] = {"conditions": [], **status}
    return job


def failed_cond(reason: str) -> dict[str, Any]:
    return {"type": "Failed", "status": "True", "reason": reason, "lastTransitionTime": "t"}


def pod(
    name: str,
    index: int,
    phase: str,
    state: dict[str, Any],
    created: str = "2026-01-02T03:00:00Z",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "annotations": {INDEX: str(index)},
        },
        "spec": {"nodeName": "n1"},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


RUNNING = {"running": {"startedAt": "2026-01-02T03:00:01Z"}}


def ended(code: int, reason: str = "Error", message: str = "", at: str = "03:01:00") -> Any:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "message": message,
            "startedAt": "2026-01-02T03:00:01Z",
            "finishedAt": f"2026-01-02T{at}Z",
        }
    }


def test_world_size_and_effective_batch_once_the_job_exists() -> None:
    spec = {
        "resources": {"gpus": 4, "nodes": 2},
        "hyperparameters": {"batchSize": 3, "gradientAccumulationSteps": 2},
    }
    before = derive_status(ftj(**spec), None, [], now=NOW).status
    assert before.world_size is None and before.effective_batch_size is None
    status = derive_status(ftj(**spec), built_job(ftj(**spec), active=2), [], now=NOW).status
    assert status.world_size == 8  # 2 nodes x 4 processes
    assert status.effective_batch_size == 48  # 3 x 2 x 8
    cpu = {"resources": {"gpus": 0}}
    single = derive_status(ftj(**cpu), built_job(ftj(**cpu)), [], now=NOW).status
    assert (single.world_size, single.effective_batch_size) == (1, 4)
    # a Job without torchrun's variables (an older operator's) states no world size
    old_job = {"metadata": {"name": "j", "uid": "x"}, "spec": {}, "status": {}}
    assert derive_status(ftj(), old_job, [], now=NOW).status.world_size is None


def test_a_refusal_fails_at_once_with_its_own_condition() -> None:
    v120 = ServerCapabilities(version=(1, 20), indexed_jobs=False, git_version="v1.20.2")
    refusal = indexed_jobs_refusal(Topology(nodes=2, gpus_per_node=1), v120)
    d = derive_status(ftj(resources={"nodes": 2}), None, [], now=NOW, create_error=refusal)
    s = d.status
    assert s.phase == "Failed" and s.failure is not None and s.failure.reason == "BadInput"
    assert "v1.20.2" in s.failure.message and s.failure.message.startswith("resources.nodes=2")
    conds = {c.type: c for c in s.conditions}
    assert conds["JobCreated"].status == "False"
    assert conds["JobCreated"].reason == "IndexedJobsUnsupported"
    assert conds["Failed"].status == "True"
    assert [(t.type, t.reason) for t in d.transitions] == [("Warning", "BadInput")]
    rejected = derive_status(
        ftj(), None, [], now=NOW, create_error=CreateError("invalid", permanent=True)
    ).status
    assert rejected.failure is not None
    assert rejected.failure.message == "the Job was rejected: invalid"
    assert "JobCreated" not in {c.type for c in rejected.conditions}


def test_a_gang_restart_is_one_attempt_not_one_per_pod() -> None:
    gang = ftj(resources={"nodes": 2})
    first = [pod("j-0-a", 0, "Running", RUNNING), pod("j-1-a", 1, "Running", RUNNING)]
    s1 = derive_status(gang, built_job(gang, active=2), first, now=NOW).status
    assert s1.attempts == 1 and s1.phase == "Running" and s1.last_pod == "j-0-a"
    later = "2026-01-02T03:05:00Z"
    restarted = [
        pod("j-0-a", 0, "Failed", ended(1)),
        pod("j-1-a", 1, "Failed", ended(75)),
        pod("j-0-b", 0, "Running", RUNNING, created=later),
        pod("j-1-b", 1, "Running", RUNNING, created=later),
    ]
    again = ftj({**s1.to_k8s()}, resources={"nodes": 2})
    s2 = derive_status(again, built_job(gang, active=2, failed=2), restarted, now=NOW).status
    assert s2.attempts == 2 and s2.last_pod == "j-0-b"
    # the same pods seen again: no new attempt
    same = ftj({**s2.to_k8s()}, resources={"nodes": 2})
    assert derive_status(same, built_job(gang, failed=2), restarted, now=NOW).status.attempts == 2
    # one pod per attempt on a single node: each failed pod is an attempt
    single = [pod("j-a", 0, "Failed", ended(75)), pod("j-b", 0, "Running", RUNNING, later)]
    s = derive_status(ftj(), built_job(ftj(), active=1, failed=1), single, now=NOW).status
    assert s.attempts == 2


def test_the_failing_rank_names_the_reason_not_its_peers() -> None:
    gang = ftj(resources={"nodes": 2})
    oom_rank1 = [
        pod("j-0-a", 0, "Failed", ended(1, message="peer lost: connection reset", at="03:02:00")),
        pod("j-1-a", 1, "Failed", ended(137, "OOMKilled", at="03:01:00")),
    ]
    job = built_job(gang, failed=2, conditions=[failed_cond("BackoffLimitExceeded")])
    s = derive_status(gang, job, oom_rank1, now=NOW).status
    assert s.phase == "Failed" and s.failure is not None
    assert s.failure.reason == "OutOfMemory" and s.failure.exit_code == 137
    # bad input on rank 1 only ends the run at once, whatever rank 0 did
    result = json.dumps({"outcome": "bad_input", "message": "no text column"})
    bad_rank1 = [
        pod("j-0-a", 0, "Running", RUNNING),
        pod("j-1-a", 1, "Failed", ended(42, message=result)),
    ]
    s = derive_status(gang, built_job(gang, active=1, failed=1), bad_rank1, now=NOW).status
    assert s.phase == "Failed" and s.failure is not None
    assert (s.failure.reason, s.failure.message) == ("BadInput", "no text column")
    # two plain crashes: the first to end explains the attempt
    crashes = [
        pod("j-0-a", 0, "Failed", ended(1, message="rank 0 lost its peer", at="03:02:00")),
        pod("j-1-a", 1, "Failed", ended(1, message="Traceback: boom", at="03:01:00")),
    ]
    s = derive_status(gang, job, crashes, now=NOW).status
    assert s.failure is not None and s.failure.reason == "Unknown"
    assert "boom" in s.failure.message
