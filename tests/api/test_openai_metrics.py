"""OpenAI's `fine_tuning.job.metrics` events and checkpoint metrics from a job's history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubetune_api.metric_series import EvalPoint, MetricSeries, TrainPoint
from kubetune_api.openai_models import final_checkpoints, openai_events
from kubetune_api.schemas import JobEventEntry
from kubetune_api.views import JobRecord, record_from_obj


def _record(status: dict[str, Any]) -> JobRecord:
    meta = {"name": "ft-20240101-000000-abcdef", "namespace": "ns"}
    return record_from_obj({"metadata": meta, "spec": {"model": "tiny"}, "status": status})


def _series() -> MetricSeries:
    return MetricSeries(
        train=[
            TrainPoint(step=s, loss=3.0 - s / 10, time=f"2024-01-01T00:00:{s:02d}Z")
            for s in range(1, 11)
        ],
        eval=[
            EvalPoint(step=0, loss=3.5, time="2024-01-01T00:00:00Z"),
            EvalPoint(step=5, loss=2.75, time="2024-01-01T00:00:05Z"),
            EvalPoint(step=10, loss=2.25, time="2024-01-01T00:00:10Z"),
        ],
        total_steps=10,
    )


def test_one_metrics_event_per_step_newest_first_with_valid_loss() -> None:
    rec = _record({"phase": "Running", "progress": {"step": 10, "totalSteps": 10, "loss": 2.0}})
    started = JobEventEntry(
        time=None, type="Normal", reason="Running", message="pod started", object="x"
    )
    rows = [(datetime(2023, 12, 31, tzinfo=UTC), started)]
    events = openai_events(rec, rows, _series())
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics if e.data] == list(range(10, -1, -1))
    by_step = {e.data["step"]: e for e in metrics if e.data}
    assert by_step[5].data == {"step": 5, "total_steps": 10, "train_loss": 2.5, "valid_loss": 2.75}
    assert by_step[5].message == "Step 5/10: training loss=2.5000, validation loss=2.7500"
    assert by_step[4].data == {"step": 4, "total_steps": 10, "train_loss": 2.6}
    assert by_step[0].data == {"step": 0, "total_steps": 10, "valid_loss": 3.5}
    assert by_step[3].created_at == int(datetime(2024, 1, 1, 0, 0, 3, tzinfo=UTC).timestamp())
    assert events[-1].message == "Running: pod started"  # the oldest, listed last
    assert len({e.id for e in events}) == len(events)
    # ids stay the same while points are added (the `after` cursor keeps working)
    more = _series()
    more.train.append(TrainPoint(step=11, loss=1.0))
    again = {e.id for e in openai_events(rec, rows, more)}
    assert {e.id for e in events} < again


def test_without_a_history_the_latest_progress_is_the_metrics_event() -> None:
    rec = _record({"phase": "Running", "progress": {"step": 3, "totalSteps": 10, "loss": 2.5}})
    events = openai_events(rec, [], MetricSeries())
    assert [(e.type, e.data) for e in events] == [
        ("metrics", {"step": 3, "train_loss": 2.5, "total_steps": 10})
    ]


def test_checkpoint_metrics_are_the_losses_at_its_step() -> None:
    status = {
        "phase": "Succeeded",
        "progress": {"fraction": 1.0, "step": 10, "totalSteps": 10, "loss": 2.0},
        "model": {"name": "m", "path": "models/m", "uri": "pvc://c/models/m", "baseModel": "b"},
        "metrics": {"trainLoss": 2.4, "evalLossAfter": 2.2},
    }
    [checkpoint] = final_checkpoints(_record(status), _series())
    assert checkpoint.step_number == 10
    assert checkpoint.metrics.model_dump() == {
        "step": 10.0,
        "train_loss": 2.0,
        "valid_loss": 2.25,
        "full_valid_loss": 2.2,
    }
    [bare] = final_checkpoints(_record(status))  # no history: the status's losses
    assert (bare.metrics.train_loss, bare.metrics.valid_loss) == (2.4, 2.2)
    assert final_checkpoints(_record({"phase": "Running"}), _series()) == []
