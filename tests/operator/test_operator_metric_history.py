"""A FineTuneJob's metric history on the real local cluster: the operator keeps the points the
(stand-in) trainer reports in the ConfigMap `<job>-metrics`, owned by the FineTuneJob; it
shows up within seconds, survives an operator restart mid-run and the deletion of the Job's
pods, and goes with the FineTuneJob."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubetune_crd import names
from kubetune_local.testing import wait_for
from operator_cluster_helpers import GROUP, PLURAL, VERSION, Ftj, manifest
from support.operator_proc import OperatorProcess

pytestmark = pytest.mark.cluster


def _record(core: client.CoreV1Api, namespace: str, job: str) -> tuple[Any, dict[str, Any]] | None:
    try:
        cm = core.read_namespaced_config_map(names.metrics_configmap_name(job), namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cm, json.loads(cm.data[names.METRICS_DATA_KEY])


def test_history_survives_operator_restart_and_pod_deletion(
    operator_proc: OperatorProcess,
    ftj_namespace: str,
    core: client.CoreV1Api,
    ftj_factory: Callable[[str], Ftj],
) -> None:
    ftj = ftj_factory("curve")
    steps = 20
    ftj.create(manifest("curve", f"data/fake_steps-{steps}_interval-1.csv"))

    def some_points() -> dict[str, Any] | None:
        found = _record(core, ftj_namespace, "curve")
        return found[1] if found and len(found[1]["train"]) >= 3 else None

    early = wait_for(some_points, 60, "the first points stored", interval=0.25)
    seen_at = time.time()
    newest = early["train"][-1]
    logged_at = datetime.fromisoformat(newest[-1].replace("Z", "+00:00")).timestamp()
    # visible within 10 s of the trainer logging it (times are to the second)
    assert seen_at - logged_at < 10, (newest, seen_at)
    assert ftj.phase() == "Running"
    before = {row[0] for row in early["train"]}

    operator_proc.restart()  # mid-run: the new process reads the record back and merges
    ftj.wait_phase("Succeeded", 90)

    def all_points() -> tuple[Any, dict[str, Any]] | None:
        found = _record(core, ftj_namespace, "curve")
        return found if found and found[1]["train"][-1][0] == steps else None

    cm, record = wait_for(all_points, 20, "the last point stored")
    train_steps = [row[0] for row in record["train"]]
    assert before <= set(train_steps), (before, train_steps)  # nothing from before is lost
    assert train_steps == sorted(set(train_steps))
    assert len(train_steps) > len(before)  # and points came after the restart
    assert all(row[1] == round(2.0 / row[0], 4) for row in record["train"])
    assert [row[:2] for row in record["eval"]] == [[0, 2.0], [steps, 1.0]]
    assert record["totalSteps"] == steps and record["thinned"] is False
    owner = cm.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid) == (
        "FineTuneJob",
        "curve",
        ftj.get()["metadata"]["uid"],
    )
    assert cm.metadata.labels[names.LABEL_FINETUNEJOB] == "curve"

    # the Job and its pods go (as the Job's TTL removes them): the history stays
    ftj.batch.delete_namespaced_job("curve", ftj_namespace, propagation_policy="Foreground")
    wait_for(lambda: not ftj.jobs() and not ftj.pods(), 60, "the Job and pods to go")
    found = _record(core, ftj_namespace, "curve")
    assert found is not None and found[1] == record

    # deleting the FineTuneJob removes it (owner reference, garbage collector)
    ftj.custom.delete_namespaced_custom_object(GROUP, VERSION, ftj_namespace, PLURAL, "curve")
    wait_for(lambda: _record(core, ftj_namespace, "curve") is None, 60, "the history to go")
