"""Experiment tracking from a real trainer run: a real MLflow server and TensorBoard files.

The MLflow server (tests/support/mlflow_server.py) runs from its own virtualenv on 127.0.0.1;
what arrived is read back with MLflow's own client, the event files with TensorBoard's reader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.mlflow_server import free_port, mlflow_server

from trainer.conftest import TrainerRun

Config = Callable[..., dict[str, Any]]
Run = Callable[..., TrainerRun]
STEPS = 6


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


def test_a_run_logs_params_curves_and_its_model_to_mlflow_and_tensorboard(
    make_config: Config, run_trainer: Run, tracking_uri: str, tmp_path: Path
) -> None:
    config = make_config(
        hyperparameters={"maxSteps": STEPS, "loggingSteps": 1, "evalSteps": 2},
        method={"type": "lora", "lora": {"r": 4, "alpha": 8}},
    )
    config["spec"]["tracking"] = {
        "mlflow": {"trackingUri": tracking_uri, "experiment": "frigo"},
        "tensorboard": True,
    }
    run = run_trainer(config)
    assert run.proc.returncode == 0, run.stderr()
    result = run.result()
    report = result["tracking"]
    assert "error" not in report, report
    train = {p["step"]: p["loss"] for p in run.progress()}
    evals = {e["step"]: e["evalLoss"] for e in run.lines() if e.get("event") == "eval"}
    assert sorted(train) == list(range(1, STEPS + 1))
    assert sorted(evals) == [0, 2, 4, STEPS]  # before, every 2 steps, after
    assert evals[0] == pytest.approx(result["metrics"]["evalLossBefore"])
    assert evals[STEPS] == pytest.approx(result["metrics"]["evalLossAfter"])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    logged = client.get_run(report["mlflowRunId"])
    assert logged.info.status == "FINISHED"
    assert logged.info.experiment_id == report["mlflowExperimentId"]
    assert client.get_experiment(logged.info.experiment_id).name == "frigo"
    params = logged.data.params
    assert (params["method"], params["lora_r"], params["max_steps"]) == ("lora", "4", str(STEPS))
    assert params["learning_rate"] == str(config["spec"]["hyperparameters"]["learningRate"])
    assert logged.data.tags["kubetune.model-uri"] == result["model"]["uri"]
    assert logged.data.tags["kubetune.job-uid"] == config["uid"]
    history = client.get_metric_history(logged.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))  # one point a step
    assert {m.step: m.value for m in history} == pytest.approx(train)
    eval_history = client.get_metric_history(logged.info.run_id, "eval_loss")
    assert {m.step: m.value for m in eval_history} == pytest.approx(evals)
    assert logged.data.metrics["eval_loss_after"] == pytest.approx(evals[STEPS])
    assert len(client.get_metric_history(logged.info.run_id, "learning_rate")) == STEPS

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = tmp_path / "models" / "tiny-ft" / "tensorboard"
    assert report["tensorboard"] == "tensorboard" and events.is_dir()
    board = EventAccumulator(str(events))
    board.Reload()
    tb_train = {e.step: e.value for e in board.Scalars("train/loss")}
    assert tb_train == pytest.approx(train, rel=1e-6)
    assert sorted(e.step for e in board.Scalars("eval/loss")) == [0, 2, 4, STEPS]
    assert "final/bits_per_byte_after" in board.Tags()["scalars"]


def test_an_unreachable_tracking_server_never_fails_training(
    make_config: Config, run_trainer: Run
) -> None:
    secret = "s3cret-tracking-password"
    config = make_config(hyperparameters={"maxSteps": 3})
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config["spec"]["tracking"] = {"mlflow": {"trackingUri": closed}}
    env = {
        "MLFLOW_TRACKING_USERNAME": "kubetune",
        "MLFLOW_TRACKING_PASSWORD": secret,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    run = run_trainer(config, env=env)
    assert run.proc.returncode == 0, run.stderr()
    result = run.result()
    assert result["outcome"] == "succeeded" and result["model"]["uri"]
    assert result["tracking"]["error"].startswith("MLflow: "), result["tracking"]
    assert "tracking stopped (MLflow: " in result["message"]
    everything = run.stdout_path.read_text() + run.stderr() + run.termination.read_text()
    assert secret not in everything
