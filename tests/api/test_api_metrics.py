"""`GET /api/finetune/metrics/{job_id}` through real HTTP on the local cluster.

Tenancy and 404s as `/api/finetune/status`, empty series before any pod, and the curve of a
run of the stand-in trainer (tests/support/fake_trainer.py: loss 2/step, 1000 tokens/s),
read from the job's metric history (the operator's `<job>-metrics` ConfigMap) while it runs,
after it ended, and after its Job and pods are gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubetune_local.testing import wait_for
from kubetune_local.workspace import create_claims
from support.operator_proc import OperatorProcess

from api.api_proc import ApiProcess

pytestmark = pytest.mark.cluster

ORIGINAL = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}
EMPTY: dict[str, Any] = {"train": [], "eval": [], "total_steps": None, "downsampled": False}


def test_metrics_tenancy_404s_and_empty_series(
    tenant_api: ApiProcess,
    namespace: str,
    other_namespace: str,
) -> None:
    api = tenant_api
    with api.client() as anon, api.client("key-a") as a, api.client("key-b") as b:
        job = a.post("/api/finetune/start", json=ORIGINAL).json()["job_id"]
        wait_for(lambda: a.get(f"/api/finetune/status/{job}").status_code == 200)
        # no operator here: no pod, no line yet
        resp = a.get(f"/api/finetune/metrics/{job}")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"job_id": job, **EMPTY}

        assert anon.get(f"/api/finetune/metrics/{job}").status_code == 401
        assert (
            a.get(f"/api/finetune/metrics/{job}", headers={"Authorization": "Bearer x"}).status_code
            == 401
        )
        for client_, job_id in (
            (b, job),  # another tenant's job
            (a, "ft_20240101_000000_abcdef"),  # well formed, unknown
            (a, "NOT_A_JOB"),
            (a, "ft-20240101-000000-abcdef"),  # the name form is never an id
            (a, "x" * 300),
        ):
            status = client_.get(f"/api/finetune/status/{job_id}")
            metrics = client_.get(f"/api/finetune/metrics/{job_id}")
            assert (metrics.status_code, metrics.json()) == (status.status_code, status.json())
            assert metrics.status_code == 404


@pytest.fixture
def operator(cluster: Any, crd: None, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    create_claims(cluster.kubeconfig, namespace)
    settings = {"NAMESPACES": [namespace], "TRAINER_DEFAULT_GPUS": "0"}
    with OperatorProcess(
        cluster.kubeconfig, settings=settings, log_path=tmp_path / "operator.log"
    ) as op:
        yield op


def test_metrics_of_a_run_grow_while_it_trains_and_outlive_its_pods(
    start_api: Callable[..., ApiProcess],
    operator: OperatorProcess,
    namespace: str,
    k8s_api: client.ApiClient,
) -> None:
    api = start_api(AUTH_DISABLED=True, NAMESPACE=namespace)
    steps = 16
    body = {"model": "tiny", "dataset_url": f"data/fake_steps-{steps}_interval-0.5.csv"}
    with api.client() as http:
        job = http.post("/api/finetune/start", json=body).json()["job_id"]

        def partial() -> dict[str, Any] | None:
            data: dict[str, Any] = http.get(f"/api/finetune/metrics/{job}").json()
            return data if 0 < len(data["train"]) < steps else None

        seen = wait_for(partial, timeout=120, what="some but not all points", interval=0.3)

        def finished() -> dict[str, Any] | None:
            st: dict[str, Any] = http.get(f"/api/finetune/status/{job}").json()
            return st if st["status"] in ("completed", "failed", "cancelled") else None

        done = wait_for(finished, timeout=120, what="the run to end", interval=0.5)
        assert done["status"] == "completed", (done, operator.log()[-3000:])

        def complete() -> dict[str, Any] | None:
            data: dict[str, Any] = http.get(f"/api/finetune/metrics/{job}").json()
            return data if len(data["train"]) == steps and len(data["eval"]) == 2 else None

        data = wait_for(complete, timeout=10, what="every point stored", interval=0.3)
        # the Job and its pods go (as its TTL would remove them): the curve stays
        name = job.replace("_", "-")
        client.BatchV1Api(k8s_api).delete_namespaced_job(
            name, namespace, propagation_policy="Foreground"
        )
        core = client.CoreV1Api(k8s_api)
        selector = f"kubetune.io/finetunejob={name}"
        wait_for(
            lambda: not core.list_namespaced_pod(namespace, label_selector=selector).items,
            timeout=60,
            what="the pods to go",
        )
        assert http.get(f"/api/finetune/metrics/{job}").json() == data
        # the OpenAI-compatible view of the same history: one metrics event per step
        events = http.get(f"/v1/fine_tuning/jobs/{job}/events", params={"limit": 100}).json()
        metrics = [e["data"] for e in events["data"] if e["type"] == "metrics"]
        assert [m["step"] for m in metrics] == list(range(steps, -1, -1))
        assert metrics[0] == {
            "step": steps,
            "total_steps": steps,
            "train_loss": round(2.0 / steps, 4),
            "valid_loss": 1.0,
        }
        checkpoints = http.get(f"/v1/fine_tuning/jobs/{job}/checkpoints").json()["data"]
        assert [c["metrics"] for c in checkpoints] == [
            {
                "step": steps,
                "train_loss": round(2.0 / steps, 4),
                "valid_loss": 1.0,
                "full_valid_loss": 1.0,
            }
        ]
    assert len(data["train"]) == steps > len(seen["train"])
    assert data["train"][: len(seen["train"])] == seen["train"]
    assert [p["step"] for p in data["train"]] == list(range(1, steps + 1))
    assert [p["loss"] for p in data["train"]] == [round(2.0 / s, 4) for s in range(1, steps + 1)]
    assert {p["tokens_per_second"] for p in data["train"]} == {1000.0}
    assert all(p["time"] and p["learning_rate"] is None for p in data["train"])
    assert data["total_steps"] == steps and data["downsampled"] is False
    assert data["job_id"] == job
    # the trainer's eval points: before training (step 0) and after the last step
    assert [(p["step"], p["loss"]) for p in data["eval"]] == [(0, 2.0), (steps, 1.0)]
