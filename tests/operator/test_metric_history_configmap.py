"""The metric history ConfigMap the operator writes (pure builder)."""

from __future__ import annotations

import json

from kubetune_crd import names
from kubetune_crd.metric_history import MetricHistory, MetricPoint
from kubetune_operator.metric_history_writer import configmap_path, history_configmap


def test_history_configmap_is_owned_labelled_and_holds_the_record() -> None:
    history = MetricHistory()
    history.add([MetricPoint(step=1, loss=2.0), MetricPoint(kind="eval", step=1, loss=2.5)], 9)
    owner = {"metadata": {"name": "ft-a", "namespace": "team", "uid": "u-1"}}
    cm = history_configmap(owner, history, None)
    meta = cm["metadata"]
    assert (meta["name"], meta["namespace"]) == ("ft-a-metrics", "team")
    assert "resourceVersion" not in meta
    assert meta["labels"] == {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_FINETUNEJOB: "ft-a",
        names.LABEL_COMPONENT: names.COMPONENT_METRICS,
    }
    [ref] = meta["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "FineTuneJob",
        "ft-a",
        "u-1",
        True,
    )
    record = json.loads(cm["data"][names.METRICS_DATA_KEY])
    assert record["train"] == [[1, 2.0]] and record["eval"] == [[1, 2.5]]
    assert record["totalSteps"] == 9
    assert history_configmap(owner, history, "42")["metadata"]["resourceVersion"] == "42"
    assert (
        configmap_path("team", "ft-a-metrics") == "/api/v1/namespaces/team/configmaps/ft-a-metrics"
    )
