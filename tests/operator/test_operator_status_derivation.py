"""The pure status derivation: phases, pending reasons, failure classification, no reverts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from kubetune_crd.resource import FineTuneJob
from kubetune_crd.status import ModelInfo, Progress
from kubetune_operator.create_error import CreateError
from kubetune_operator.failure_classification import classify_pod_failure
from kubetune_operator.status_derivation import derive_status
from kubetune_operator.status_patch import merge_patch

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
EXPECTED = ModelInfo(
    name="tiny-finetuned-j",
    path="models/tiny-finetuned-j",
    uri="pvc://m/models/tiny-finetuned-j",
    base_model="/base/tiny",
)


def ftj(status: dict[str, Any] | None = None, **spec: Any) -> FineTuneJob:
    return FineTuneJob.from_k8s(
        {
            "metadata": {"name": "j", "namespace": "ns", "uid": "u1", "generation": 2},
            "spec": {"model": "tiny", "dataset": {"url": "d.csv"}, **spec},
            "status": status or {},
        }
    )


def job(
    *conditions: dict[str, Any], active: int = 0, failed: int = 0, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "uid": "job-uid", "labels": {"kueue.x-k8s.io/queue-name": "q"}},
        "spec": spec,
        "status": {"conditions": list(conditions), "active": active, "failed": failed},
    }


def cond(ctype: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "type": ctype,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-02T03:00:00Z",
    }


def pod(
    name: str = "j-abcde",
    phase: str = "Pending",
    *,
    state: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    node: str | None = None,
    created: str = "2026-01-02T03:00:00Z",
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if state is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": state}]
    spec = {"nodeName": node} if node else {}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": spec,
        "status": status,
    }


def terminated(code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "message": message,
            "startedAt": "2026-01-02T03:00:01Z",
            "finishedAt": "2026-01-02T03:01:00Z",
        }
    }


RUNNING = {"running": {"startedAt": "2026-01-02T03:00:01Z"}}


def test_no_job_yet_is_pending_creating() -> None:
    d = derive_status(ftj(), None, [], now=NOW)
    assert d.status.phase == "Pending" and d.status.pending is not None
    assert d.status.pending.reason == "Creating"
    assert d.status.observed_generation == 2
    created = {c.type: c for c in d.status.conditions}["JobCreated"]
    assert created.status == "False" and created.observed_generation == 2


def test_unschedulable_carries_the_scheduler_message() -> None:
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    p = pod(
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ]
    )
    d = derive_status(ftj(), job(active=1), [p], now=NOW)
    assert d.status.phase == "Pending" and d.status.pending is not None
    assert d.status.pending.reason == "Unschedulable"
    assert d.status.pending.message == message
    assert d.transitions[-1].type == "Warning" and d.transitions[-1].reason == "Unschedulable"
    scheduled = {c.type: c for c in d.status.conditions}["Scheduled"]
    assert scheduled.status == "False" and scheduled.reason == "Unschedulable"


def test_unschedulable_from_failed_scheduling_event() -> None:
    event = {
        "involvedObject": {"kind": "Pod", "name": "j-abcde"},
        "reason": "FailedScheduling",
        "message": "0/3 nodes are available: 3 node(s) didn't match node selector.",
    }
    d = derive_status(ftj(), job(active=1), [pod()], [event], now=NOW)
    assert d.status.pending is not None and d.status.pending.reason == "Unschedulable"
    assert "node selector" in d.status.pending.message


def test_queued_when_suspended_for_kueue() -> None:
    d = derive_status(ftj(), job(suspend=True), [], now=NOW)
    assert d.status.pending is not None and d.status.pending.reason == "Queued"
    assert "queue q" in d.status.pending.message


def test_failed_create_event_explains_missing_pod() -> None:
    event = {
        "involvedObject": {"kind": "Job", "name": "j"},
        "reason": "FailedCreate",
        "message": 'pods "j-x" is forbidden: exceeded quota',
    }
    d = derive_status(ftj(), job(), [], [event], now=NOW)
    assert d.status.pending is not None and "exceeded quota" in d.status.pending.message


def test_running_then_succeeded_with_trainer_result() -> None:
    running = derive_status(ftj(), job(active=1), [pod(phase="Running", state=RUNNING)], now=NOW)
    assert running.status.phase == "Running" and running.status.attempts == 1
    assert running.status.start_time == "2026-01-02T03:00:01Z"
    result = {
        "outcome": "succeeded",
        "message": "ok",
        "model": {
            "name": "tiny-finetuned-j",
            "uri": "pvc://m/models/tiny-finetuned-j",
            "sizeBytes": 123,
            "format": "peft-lora",
            "baseModel": "/base/tiny",
        },
        "metrics": {"evalLossBefore": 2.0, "evalLossAfter": 1.0},
    }
    done_pod = pod(phase="Succeeded", state=terminated(0, "Completed", json.dumps(result)))
    done_job = job(cond("Complete"))
    done_job["status"]["completionTime"] = "2026-01-02T03:02:00Z"
    prev = ftj(running.status.to_k8s())
    d = derive_status(
        prev,
        done_job,
        [done_pod],
        now=NOW,
        expected_model=EXPECTED,
        progress=Progress(fraction=0.9, step=9, total_steps=10),
    )
    s = d.status
    assert s.phase == "Succeeded" and s.model is not None
    assert s.model.size_bytes == 123 and s.model.path == "models/tiny-finetuned-j"
    assert s.metrics is not None and s.metrics.eval_loss_after == 1.0
    assert s.progress is not None and s.progress.fraction == 1.0 and s.progress.step == 9
    assert s.completion_time == "2026-01-02T03:02:00Z"
    types = {c.type: c.status for c in s.conditions}
    assert types == {
        "JobCreated": "True",
        "Scheduled": "True",
        "Running": "False",
        "Succeeded": "True",
    }
    assert [t.reason for t in d.transitions] == ["Succeeded"]


def test_a_tracking_failure_is_a_false_condition_on_a_succeeded_job() -> None:
    def done(tracking: dict[str, Any]) -> Any:
        result = {"outcome": "succeeded", "message": "ok", "tracking": tracking}
        state = terminated(0, "Completed", json.dumps(result))
        return derive_status(
            ftj(), job(cond("Complete")), [pod(phase="Succeeded", state=state)], now=NOW
        ).status

    failed = done({"mlflowRunId": "r1", "error": "MLflow: ConnectionError: refused"})
    assert failed.phase == "Succeeded" and failed.tracking is not None
    assert failed.tracking.mlflow_run_id == "r1"
    tracking = next(c for c in failed.conditions if c.type == "TrackingHealthy")
    assert (tracking.status, tracking.reason) == ("False", "TrackingFailed")
    assert tracking.message == "MLflow: ConnectionError: refused"
    logged = done({"mlflowRunId": "r2", "tensorboard": "tensorboard"})
    assert {c.type: c.status for c in logged.conditions}["TrackingHealthy"] == "True"
    untracked = derive_status(
        ftj(), job(cond("Complete")), [pod(phase="Succeeded", state=terminated(0))], now=NOW
    ).status
    assert untracked.tracking is None
    assert "TrackingHealthy" not in {c.type for c in untracked.conditions}


def test_succeeded_without_result_falls_back_to_expected_model() -> None:
    d = derive_status(
        ftj(),
        job(cond("Complete")),
        [pod(phase="Succeeded", state=terminated(0, "Completed"))],
        now=NOW,
        expected_model=EXPECTED,
    )
    assert d.status.model == EXPECTED


def test_bad_input_fails_at_once_without_pod_failure_policy() -> None:
    result = json.dumps({"outcome": "bad_input", "message": "column 'text' not found"})
    p = pod(phase="Failed", state=terminated(42, "Error", result))
    d = derive_status(ftj(), job(active=0, failed=1), [p], now=NOW)
    assert d.status.phase == "Failed" and d.status.failure is not None
    assert d.status.failure.reason == "BadInput" and d.status.failure.exit_code == 42
    assert d.status.failure.message == "column 'text' not found"
    assert d.transitions[-1].type == "Warning"


def test_pod_failure_policy_job_failure_is_bad_input() -> None:
    p = pod(phase="Failed", state=terminated(42))
    d = derive_status(ftj(), job(cond("Failed", "PodFailurePolicy")), [p], now=NOW)
    assert d.status.failure is not None and d.status.failure.reason == "BadInput"


def test_oom_killed() -> None:
    p = pod(phase="Failed", state=terminated(137, "OOMKilled"))
    d = derive_status(ftj(), job(cond("Failed", "BackoffLimitExceeded")), [p], now=NOW)
    assert d.status.failure is not None and d.status.failure.reason == "OutOfMemory"
    assert d.status.failure.exit_code == 137


def test_cuda_oom_message_is_out_of_memory() -> None:
    result = json.dumps(
        {"outcome": "error", "message": "torch.OutOfMemoryError: CUDA out of memory"}
    )
    info = classify_pod_failure(pod(phase="Failed", state=terminated(1, "Error", result)))
    assert info is not None and info.reason == "OutOfMemory"


def test_deadline_exceeded() -> None:
    d = derive_status(
        ftj(deadlineSeconds=600), job(cond("Failed", "DeadlineExceeded")), [], now=NOW
    )
    assert d.status.failure is not None and d.status.failure.reason == "DeadlineExceeded"
    assert "600" in d.status.failure.message
    assert d.status.completion_time == "2026-01-02T03:00:00Z"


def test_retries_exhausted_on_retryable_code_and_unknown_crash() -> None:
    p75 = pod(phase="Failed", state=terminated(75))
    d = derive_status(ftj(), job(cond("Failed", "BackoffLimitExceeded")), [p75], now=NOW)
    assert d.status.failure is not None and d.status.failure.reason == "BackoffLimitExceeded"
    p1 = pod(phase="Failed", state=terminated(1, "Error", "Traceback: boom"))
    d = derive_status(ftj(), job(cond("Failed", "BackoffLimitExceeded")), [p1], now=NOW)
    assert d.status.failure is not None and d.status.failure.reason == "Unknown"
    assert d.status.failure.exit_code == 1 and "boom" in d.status.failure.message


def test_waiting_for_retry_between_attempts() -> None:
    p = pod(phase="Failed", state=terminated(75))
    d = derive_status(ftj(), job(failed=1), [p], now=NOW)
    assert d.status.phase == "Pending" and d.status.pending is not None
    assert d.status.pending.reason == "WaitingForRetry"


def test_a_vanished_pod_still_counts_as_an_attempt() -> None:
    first = derive_status(ftj(), job(active=1), [pod("j-1", "Running", state=RUNNING)], now=NOW)
    assert first.status.attempts == 1 and first.status.last_pod == "j-1"
    again = derive_status(
        ftj(first.status.to_k8s()), job(active=1), [pod("j-1", "Running", state=RUNNING)], now=NOW
    )
    assert again.status.attempts == 1
    # j-1 was force-deleted (no failure counted by the Job); j-2 runs the second attempt.
    later = "2026-01-02T03:05:00Z"
    second = derive_status(
        ftj(first.status.to_k8s()),
        job(active=1),
        [pod("j-2", "Running", state=RUNNING, created=later)],
        now=NOW,
    )
    assert second.status.attempts == 2 and second.status.last_pod == "j-2"


def test_image_pull_pending_then_failed_after_grace() -> None:
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    p = pod(state=waiting, node="n1")
    first = derive_status(ftj(), job(active=1), [p], now=NOW, image_pull_grace_seconds=300)
    assert first.status.pending is not None and first.status.pending.reason == "ImagePull"
    assert first.requeue_after == 300
    later = derive_status(
        ftj(first.status.to_k8s()),
        job(active=1),
        [p],
        now=NOW + timedelta(seconds=301),
        image_pull_grace_seconds=300,
    )
    assert later.status.phase == "Failed" and later.status.failure is not None
    assert later.status.failure.reason == "ImagePull"


def test_cancel_keeps_the_record() -> None:
    d = derive_status(
        ftj(cancel=True), job(active=1), [pod(phase="Running", state=RUNNING)], now=NOW
    )
    assert d.status.phase == "Cancelled" and d.status.failure is not None
    assert d.status.failure.reason == "Cancelled"
    assert {c.type: c.status for c in d.status.conditions}["Cancelled"] == "True"


def test_terminal_phases_never_revert() -> None:
    for phase in ("Succeeded", "Failed", "Cancelled"):
        prev = ftj({"phase": phase, "message": "done"})
        d = derive_status(prev, job(active=1), [pod(phase="Running", state=RUNNING)], now=NOW)
        assert d.status.phase == phase and d.transitions == []
        d = derive_status(prev, None, [], now=NOW, create_error=CreateError("x", permanent=True))
        assert d.status.phase == phase


def test_job_rejected_permanently_is_bad_input() -> None:
    d = derive_status(ftj(), None, [], now=NOW, create_error=CreateError("invalid", permanent=True))
    assert d.status.phase == "Failed" and d.status.failure is not None
    assert d.status.failure.reason == "BadInput"


def test_unchanged_inputs_give_an_empty_patch() -> None:
    p = pod(phase="Running", state=RUNNING)
    first = derive_status(ftj(), job(active=1), [p], now=NOW)
    again = derive_status(
        ftj(first.status.to_k8s()), job(active=1), [p], now=NOW + timedelta(minutes=5)
    )
    assert merge_patch(first.status.to_k8s(), again.status.to_k8s()) == {}
    assert again.transitions == []


def test_condition_messages_are_never_empty() -> None:
    # the v1.20 apiserver's merge patch turns "" inside a list into null (schema error)
    d = derive_status(ftj(), job(cond("Complete")), [], now=NOW, expected_model=EXPECTED)
    assert all(c.message for c in d.status.conditions)


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 1, "b": {"c": 2}}) == {
        "b": {"c": 2, "d": None}
    }
    assert merge_patch({"x": [1]}, {"x": [1], "y": 0}) == {"y": 0}
    assert merge_patch({"p": {"s": 1}}, {}) == {"p": None}
