"""A tracked fine-tune end to end: the API's `tracking` field, the operator, a trainer pod,
and a real MLflow server on 127.0.0.1; the run's id and TrackingHealthy reach the status, the
eval every `eval_steps` reaches MLflow and `GET /api/finetune/metrics`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubetune_crd import names
from support.mlflow_server import mlflow_server

from e2e.stack import E2EStack, ftj_name, short_job

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

STEPS = 4


@pytest.mark.timeout(480)
def test_a_tracked_job_logs_to_mlflow_and_says_so_in_its_status(
    stack: E2EStack, tmp_path: Path
) -> None:
    with mlflow_server(tmp_path / "mlflow") as uri:
        stack.start_operator()
        stack.start_api()
        tracking = {"mlflow": {"trackingUri": uri, "experiment": "e2e"}, "tensorboard": True}
        body = short_job(max_steps=STEPS, eval_steps=2, tracking=tracking)
        job = stack.start_job(body)
        done = stack.wait_api_status(job, {"completed", "failed", "cancelled"}, 360)
        assert done["status"] == "completed", stack.diagnostics(ftj_name(job))
        status = stack.ftj_status(ftj_name(job))
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["TrackingHealthy"]["status"] == "True", conditions
        run_id = status["tracking"]["mlflowRunId"]

        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["kubetune.model-uri"] == status["model"]["uri"]
        assert run.data.tags["kubetune.job"] == ftj_name(job)
        evals = [m.step for m in client.get_metric_history(run_id, "eval_loss")]
        assert sorted(evals) == [0, 2, STEPS]
        steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
        assert sorted(steps) == list(range(1, STEPS + 1))

    series = stack.http.get(f"/api/finetune/metrics/{job}").json()
    assert [p["step"] for p in series["eval"]] == [0, 2, STEPS], series
    # served from the job's stored history, which the real trainer's reports filled
    cm = stack.core.read_namespaced_config_map(
        names.metrics_configmap_name(ftj_name(job)), stack.namespace
    )
    record = json.loads(cm.data[names.METRICS_DATA_KEY])
    assert [row[0] for row in record["eval"]] == [0, 2, STEPS]
    assert [row[0] for row in record["train"]] == [p["step"] for p in series["train"]]
