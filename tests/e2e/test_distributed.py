"""Distributed training through the whole product: a FineTuneJob asking for 2 GPUs.

The local node advertises fake GPUs (there is no CUDA here), so the pod's trainer starts
torchrun with two CPU processes on gloo: the same launcher, rendezvous, sharding, rank-0
reporting and single model write as on a GPU node, just slower. A multi-node job is
refused on this v1.20 server (no Indexed Jobs) with a condition naming the version.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubetune_crd.names import LABEL_FINETUNEJOB

from e2e.stack import (
    FINISHED,
    E2EStack,
    check_model_loads,
    parse_events,
    progress_steps,
    short_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


def two_process_job(**overrides: Any) -> dict[str, Any]:
    return short_job(**{"max_steps": 8, "resources": {"gpus": 2}, **overrides})


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_gpu_job_trains_on_two_processes(stack: E2EStack) -> None:
    stack.start_operator()
    stack.start_api()
    job_id = stack.start_job(two_process_job())
    name = job_id.replace("_", "-")

    def two_workers() -> list[int] | None:
        pods = stack.pods(name)
        pids = stack.pod_processes({p.metadata.uid for p in pods}) if pods else []
        # the node agent's launcher, the torchrun agent and its two workers
        return pids if len(pids) >= 3 else None

    pids = stack.wait(two_workers, 240, "the pod to run two training processes", name=name)
    done = stack.wait_api_status(job_id, FINISHED, 300, name=name)
    assert done["status"] == "completed", stack.diagnostics(name)
    assert done["world_size"] == 2 and done["effective_batch_size"] == 4, done

    status = stack.ftj_status(name)
    assert status["phase"] == "Succeeded" and status["worldSize"] == 2, status
    assert status["progress"]["step"] == 8, status
    jobs = stack.jobs(name)
    assert len(jobs) == 1, "one Job for one FineTuneJob"
    limits = jobs[0].spec.template.spec.containers[0].resources.limits
    assert limits["nvidia.com/gpu"] == "2", limits
    logs = stack.trainer_logs(name)
    assert len(logs) == 1, list(logs)
    events = parse_events(next(iter(logs.values())))
    steps = progress_steps(events)
    # rank 0 alone reports: each step once, in order
    assert steps == sorted(set(steps)) and steps[-1] == 8, steps
    assert len(stack.model_dirs()) == 1 and stack.models()["total"] == 1
    loaded = check_model_loads(stack.models_dir / "models" / stack.model_dirs()[0], stack.tiny_dir)
    assert loaded.get("adapter", "").startswith("PeftModel"), loaded
    print(f"processes seen in the pod: {len(pids)}; steps {steps[0]}..{steps[-1]}")


@pytest.mark.timeout(240)
def test_multi_node_job_is_refused_without_indexed_jobs(stack: E2EStack) -> None:
    """v1.20 has no Indexed Jobs: never run a 2-node job on one node, say why instead."""
    stack.start_operator()
    stack.start_api()
    job_id = stack.start_job(two_process_job(resources={"gpus": 0, "nodes": 2}))
    name = job_id.replace("_", "-")
    done = stack.wait_api_status(job_id, FINISHED, 120, name=name)
    assert done["status"] == "failed", done
    status = stack.ftj_status(name)
    message = f"{status['failure']['message']} {status.get('message')}"
    assert "Indexed" in message and "1.20" in message, status
    assert stack.jobs(name) == [], "no Job for a refused multi-node run"
    pods = stack.core.list_namespaced_pod(
        stack.namespace, label_selector=f"{LABEL_FINETUNEJOB}={name}"
    ).items
    assert pods == []
