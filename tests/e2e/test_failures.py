"""The system keeps its promises under failure (real operator, API and trainer).

Cancel mid-run; a trainer pod deleted mid-run (resume from the last checkpoint); the
operator SIGKILLed and the API restarted mid-run; a bad dataset (no retry storm); a job
asking for more GPUs than the node has (Pending with the scheduler's reason).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

import pytest

from e2e.stack import (
    FINISHED,
    E2EStack,
    ftj_name,
    parse_events,
    progress_steps,
    short_job,
    wait_training,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_cancel_mid_run_stops_everything(stack: E2EStack) -> None:
    stack.start_operator()
    stack.start_api()
    job_id = stack.start_job(short_job(max_steps=2000))
    name = ftj_name(job_id)
    wait_training(stack, job_id)
    uids = {p.metadata.uid for p in stack.pods(name)}
    assert uids and stack.pod_processes(uids), "the trainer process should be running"

    resp = stack.http.post(f"/api/finetune/cancel/{job_id}")
    assert resp.status_code == 202, resp.text
    final = stack.wait_api_status(job_id, FINISHED, 60)
    assert final["status"] == "cancelled", final
    assert final["failure_reason"] == "Cancelled" and final["cancel_requested"] is True, final
    status = stack.ftj_status(name)
    assert status["phase"] == "Cancelled" and status["failure"]["reason"] == "Cancelled", status

    def all_gone() -> bool:
        pods = stack.core.list_namespaced_pod(stack.namespace).items
        jobs = stack.batch.list_namespaced_job(stack.namespace).items
        return not pods and not jobs and not stack.pod_processes(uids)

    stack.wait(all_gone, 60, "the Job, its pods and their processes to be gone", name=name)
    assert stack.ftj_status(name)["phase"] == "Cancelled"  # the record stays, never reverts
    assert stack.api_status(job_id)["status"] == "cancelled"
    assert stack.model_dirs() == [] and stack.models()["total"] == 0
    again = stack.http.post(f"/api/finetune/cancel/{job_id}")
    assert again.status_code == 409, again.text


@pytest.mark.slow
@pytest.mark.timeout(480)
@pytest.mark.parametrize("gpus", [None, 2], ids=["one-process", "two-processes"])
def test_deleted_trainer_pod_resumes_from_checkpoint(stack: E2EStack, gpus: int | None) -> None:
    """A force-deleted pod (what a node failure does: no grace, no clean shutdown). The Job
    starts another pod, whose trainer resumes at the last complete checkpoint; with 2 GPUs
    (two torchrun workers on the local node's fake GPUs) both ranks resume at that step."""
    stack.start_operator()
    stack.start_api()
    total = 60
    resources = {"resources": {"gpus": gpus}} if gpus else {}
    job_id = stack.start_job(
        short_job(
            max_steps=total, checkpoint={"every_steps": 5, "keep": 2}, max_retries=2, **resources
        )
    )
    name = ftj_name(job_id)
    ckpt_root = stack.models_dir / ".checkpoints" / stack.namespace / name

    def checkpointed() -> tuple[int, Any] | None:
        steps = [
            int(p.name.rsplit("-", 1)[1])
            for p in ckpt_root.glob("checkpoint-*")
            if (p / "COMPLETE").is_file()
        ]
        pod = stack.running_pod(name)
        return (max(steps), pod) if steps and pod is not None else None

    ckpt_step, pod = stack.wait(checkpointed, 240, "a complete checkpoint", name=name)
    first, uid = pod.metadata.name, pod.metadata.uid
    # the node fails: the trainer dies at once, with no chance to save (SIGKILL), and the
    # pod object goes (force deletion, as the pod GC does for the pods of a lost node)
    pids = stack.pod_processes({uid})
    assert pids, f"no process of pod {first} found"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deleted = stack.cluster.kubectl(
        "delete", "pod", first, "-n", stack.namespace, "--grace-period=0", "--force", check=False
    )
    assert deleted.returncode == 0, deleted.stderr
    second_pod = stack.wait(
        lambda: next((p for p in stack.pods(name) if p.metadata.name != first), None),
        90,
        "the Job to start another pod",
        name=name,
    )
    second = second_pod.metadata.name
    done = stack.wait_api_status(job_id, FINISHED, 300)
    assert done["status"] == "completed", stack.diagnostics(name)

    logs = stack.trainer_logs(name)
    assert list(logs) == [first, second], (list(logs), first, second)
    first_steps = progress_steps(parse_events(logs[first]))
    events = parse_events(logs[second])
    resumed = [e for e in events if e["event"] == "stage" and e.get("stage") == "resuming"]
    assert resumed, f"pod {second} did not resume:\n{logs[second][-3000:]}"
    at = int(resumed[0]["step"])
    # the last periodic checkpoint (every 5 steps): at least the one seen before the kill,
    # at most the last step the first pod reached
    assert ckpt_step <= at <= max(first_steps) and at % 5 == 0, (ckpt_step, at, first_steps)
    steps = progress_steps(events)
    assert steps, f"pod {second} reported no training step:\n{logs[second][-3000:]}"
    assert steps[0] == at + 1 and min(steps) > at, f"started over: {steps[:5]} after {at}"
    assert steps[-1] == total, steps[-5:]
    assert "evaluating" not in [
        e.get("stage") for e in events if e["event"] == "stage" and (e.get("step") or 0) == 0
    ], "the second pod re-ran the initial evaluation instead of resuming"

    status = stack.ftj_status(name)
    print(  # shown with -s: what the scenario observed
        f"checkpoint seen at step {ckpt_step}; pod {first} reached step {max(first_steps)}; "
        f"pod {second} resumed at {at}, went on from {steps[0]} to {steps[-1]}; "
        f"attempts {status.get('attempts')}"
    )
    assert status["phase"] == "Succeeded" and status["progress"]["step"] == total, status
    assert status["attempts"] == 2 and status["lastPod"] == second, status
    assert len(stack.jobs(name)) == 1, "the same Job retried: no second Job"
    assert stack.models()["total"] == 1 and len(stack.model_dirs()) == 1
    assert not ckpt_root.exists(), "checkpoints are removed once the model is stored"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_operator_sigkilled_and_api_restarted_mid_run(stack: E2EStack) -> None:
    operator = stack.start_operator()
    api = stack.start_api()
    total = 50
    resp = stack.http.post("/api/finetune/start", json=short_job(max_steps=total))
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    model_name = resp.json()["config"]["output"]["model_name"]
    name = ftj_name(job_id)
    wait_training(stack, job_id)

    def trainer_steps() -> list[int]:
        return [
            s
            for text in stack.trainer_logs(name).values()
            for s in progress_steps(parse_events(text))
        ]

    operator.kill()
    assert not operator.alive()
    at_kill = max(trainer_steps(), default=0)
    api.kill()
    stack.reset_http()
    api.start(timeout=120)
    # the trainer goes on without the operator (its progress POSTs fail, best effort)
    stack.wait(
        lambda: max(trainer_steps(), default=0) > at_kill,
        120,
        f"training to go on past step {at_kill} while the operator is down",
        name=name,
    )
    # the restarted API answers from the cluster's state
    assert stack.api_status(job_id)["status"] in ("running", "completed"), stack.api_status(job_id)
    operator.start()

    done = stack.wait_api_status(job_id, FINISHED, 300)
    assert done["status"] == "completed", stack.diagnostics(name)
    assert done["model_path"] == f"models/{model_name}", done
    assert [j.metadata.name for j in stack.jobs(name)] == [name], "exactly one Job"
    assert len(stack.trainer_logs(name)) == 1, "the trainer pod was never replaced"
    status = stack.ftj_status(name)
    assert status["attempts"] == 1, status
    assert [o["metadata"]["name"] for o in stack.ftjs()] == [name]
    models = stack.models()
    assert models["total"] == 1 and models["models"][0]["name"] == model_name, models
    assert stack.model_dirs() == [model_name]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bad_dataset_fails_once_with_bad_input(stack: E2EStack) -> None:
    """The real trainer's CPU pre-flight finds it: no training Job, no trainer pod, ever."""
    rows = [f'"Le frigo {i} fait du bruit","Vérifier le ventilateur {i}"' for i in range(20)]
    bad = stack.data_dir / "data" / "no_text_column.csv"
    bad.write_text("question,answer\n" + "\n".join(rows) + "\n")
    stack.start_operator()
    stack.start_api()
    job_id = stack.start_job(short_job(dataset_url="data/no_text_column.csv", max_retries=3))
    name = ftj_name(job_id)
    final = stack.wait_api_status(job_id, FINISHED, 240)
    assert final["status"] == "failed", final
    assert final["failure_reason"] == "BadInput", final
    message = final["failure_message"] or ""
    assert "columns found: 'question', 'answer'" in message, message
    assert message.startswith("pre-flight: "), message
    status = stack.ftj_status(name)
    assert status["failure"]["exitCode"] == 42, status
    assert status["preflight"]["outcome"] == "Failed", status
    # No training Job and no trainer pod ever: the node agent ran the pre-flight pod only.
    # v1.20 has no podFailurePolicy: the operator removes the pre-flight Job itself; the Job
    # controller may start one replacement pod in the same instant, which dies with the Job.
    preflight_job = f"{name}-preflight"
    stack.wait(lambda: not stack.jobs(name, None), 60, "the pre-flight Job to go", name=name)
    stack.wait(lambda: not stack.pods(name, None), 60, "the pods to be gone", name=name)
    status = stack.ftj_status(name)
    assert status["phase"] == "Failed" and status["attempts"] == 0, status
    assert "jobName" not in status, status
    assert stack.trainer_logs(name) == {}, "a trainer pod ran"
    logs = stack.trainer_logs(preflight_job)
    assert 1 <= len(logs) <= 2, f"{len(logs)} pre-flight pods ran: {list(logs)}"
    results = [e for text in logs.values() for e in parse_events(text) if e["event"] == "result"]
    assert results and results[0]["exitCode"] == 42, results
    assert stack.models()["total"] == 0 and stack.model_dirs() == []


@pytest.mark.timeout(240)
def test_too_many_gpus_stays_pending_with_the_scheduler_reason(stack: E2EStack) -> None:
    stack.start_operator()
    stack.start_api()
    job_id = stack.start_job(short_job(resources={"gpus": 8}))
    name = ftj_name(job_id)

    def unschedulable() -> dict[str, Any] | None:
        status = stack.api_status(job_id)
        return status if status.get("pending_reason") == "Unschedulable" else None

    status = stack.wait(unschedulable, 90, "pending reason Unschedulable", name=name)
    assert status["status"] == "pending", status
    assert "Insufficient nvidia.com/gpu" in (status["pending_message"] or ""), status
    ftj = stack.ftj_status(name)
    assert ftj["phase"] == "Pending", ftj
    assert ftj["pending"]["reason"] == "Unschedulable", ftj
    assert "Insufficient nvidia.com/gpu" in ftj["pending"]["message"], ftj
    scheduled = {c["type"]: c for c in ftj["conditions"]}["Scheduled"]
    assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable", ftj
    # it stays so: watched across an operator resync (every 10 s), it never moves and
    # its pod is never bound to the node
    watch_until = time.monotonic() + 12
    while time.monotonic() < watch_until:
        now = stack.api_status(job_id)
        assert now["status"] == "pending" and now["pending_reason"] == "Unschedulable", now
        assert all(not p.spec.node_name for p in stack.pods(name)), "a pod was bound"
        time.sleep(1)
    # clean up through the API: a pending job can be cancelled
    assert stack.http.post(f"/api/finetune/cancel/{job_id}").status_code == 202
    assert stack.wait_api_status(job_id, FINISHED, 60)["status"] == "cancelled"
