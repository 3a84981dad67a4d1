"""`kubetune metrics JOB` against a real API server (real HTTP, real cluster): the job's stored
metric history (a `<job>-metrics` ConfigMap written as the operator writes it) as a chart and
as `--json`, and the terminal chart's drawing rules."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from kubernetes import client
from kubetune_cli import charts
from kubetune_cli.main import EXIT_REJECTED, main
from kubetune_crd import names
from kubetune_crd.metric_history import MetricHistory, MetricPoint
from kubetune_crd.resource import API_VERSION, KIND

from api.api_proc import ApiProcess


def _store_history(core: client.CoreV1Api, namespace: str, job: dict[str, Any]) -> None:
    history = MetricHistory()
    history.add(
        [
            MetricPoint(step=s, loss=3 * math.exp(-s / 10) + 0.5, learning_rate=1e-4)
            for s in range(1, 41)
        ]
        + [MetricPoint(kind="eval", step=s, loss=3.0 - s / 20) for s in (0, 20, 40)],
        total_steps=40,
    )
    meta = job["metadata"]
    owner = client.V1OwnerReference(
        api_version=API_VERSION, kind=KIND, name=meta["name"], uid=meta["uid"], controller=True
    )
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(
            name=names.metrics_configmap_name(meta["name"]), owner_references=[owner]
        ),
        data={names.METRICS_DATA_KEY: history.encode()},
    )
    core.create_namespaced_config_map(namespace, body)


@pytest.mark.cluster
def test_cli_metrics(
    api: ApiProcess,
    custom: client.CustomObjectsApi,
    k8s_api: client.ApiClient,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start = ("start", "--model", "tiny", "--dataset", "data/frigo_training.csv")
    assert main(["--api-url", api.url, "--json", *start]) == 0
    job_id = json.loads(capsys.readouterr().out)["job_id"]
    name = job_id.replace("_", "-")

    # before any point: empty series, said in words
    assert main(["--api-url", api.url, "metrics", job_id]) == 0
    assert "no points yet" in capsys.readouterr().out

    job = custom.get_namespaced_custom_object(
        "kubetune.io", "v1alpha1", namespace, "finetunejobs", name
    )
    _store_history(client.CoreV1Api(k8s_api), namespace, job)

    assert main(["--api-url", api.url, "metrics", job_id, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert main(["--api-url", api.url, "--json", "metrics", job_id]) == 0
    assert json.loads(capsys.readouterr().out) == answer
    assert answer["job_id"] == job_id and answer["total_steps"] == 40
    assert [p["step"] for p in answer["train"]] == list(range(1, 41))
    assert answer["train"][0]["learning_rate"] == 1e-4
    assert [(p["step"], p["loss"]) for p in answer["eval"]] == [(0, 3.0), (20, 2.0), (40, 1.0)]

    assert main(["--api-url", api.url, "metrics", job_id, "--width", "40", "--height", "4"]) == 0
    human = capsys.readouterr().out.splitlines()
    assert f"job:      {job_id}" in human
    assert any(line.startswith("steps:    40 of 40  (40 train, 3 eval points") for line in human)
    chart = [line for line in human if "│" in line]
    assert len(chart) == 4
    assert chart[0].lstrip().startswith(f"{3 * math.exp(-1 / 10) + 0.5:.4g} │█")  # the top: step 1
    eval_line = next(line for line in human if line.startswith("eval loss"))
    assert "█▅▁" in eval_line and "min 1 @ step 40" in eval_line

    assert main(["--api-url", api.url, "metrics", "ft_20240101_000000_abcdef"]) == EXIT_REJECTED
    assert "HTTP 404" in capsys.readouterr().err


def test_sparkline_and_block_chart() -> None:
    assert charts.sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert charts.sparkline([2.0, 2.0]) == "▄▄"  # flat: the middle
    assert charts.sparkline([]) == ""
    assert len(charts.sparkline(list(range(1000)), 50)) == 50
    assert charts.fit([1, 3, 5, 7], 2) == [2, 6]
    rows = charts.block_chart([0, 1], width=10, height=2)
    assert rows == [" █", "▁█"]  # the low value fills one eighth of the bottom row
    rows = charts.block_chart([4, 3, 2, 1], width=4, height=3)
    assert rows == ["█", "██▁", "███▁"]
