"""The original API's flow through real HTTP with the operator running on the local cluster.

Both tests use the stand-in trainer (tests/support/fake_trainer.py, driven by the dataset's
file name). The same flow with the real trainer on the tiny model lives in tests/e2e/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubetune_local.testing import wait_for
from kubetune_local.workspace import create_claims
from support.operator_proc import OperatorProcess

from api.api_proc import ApiProcess

pytestmark = pytest.mark.cluster


@pytest.fixture
def claims(cluster: Any, crd: None, namespace: str) -> str:
    create_claims(cluster.kubeconfig, namespace)
    return namespace


def _operator(cluster: Any, namespace: str, tmp_path: Path, **settings: Any) -> OperatorProcess:
    """The operator decides the GPU count of jobs that name none: 0 here (the stand-in trainer
    needs none), as a CPU-only cluster would set it."""
    defaults = {
        "NAMESPACES": [namespace],
        "TTL_SECONDS_AFTER_FINISHED": "600",
        "TRAINER_DEFAULT_GPUS": "0",
    }
    return OperatorProcess(
        cluster.kubeconfig, settings={**defaults, **settings}, log_path=tmp_path / "operator.log"
    )


@pytest.fixture
def operator(cluster: Any, claims: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with _operator(cluster, claims, tmp_path) as op:
        yield op


def _wait_status(http: httpx.Client, job_id: str, want: set[str], timeout: float) -> dict[str, Any]:
    seen: list[str] = []

    def check() -> dict[str, Any] | None:
        status: dict[str, Any] = http.get(f"/api/finetune/status/{job_id}").json()
        if not seen or seen[-1] != status["status"]:
            seen.append(status["status"])
        return status if status["status"] in want else None

    try:
        result: dict[str, Any] = wait_for(check, timeout=timeout, interval=0.3)
    except AssertionError:
        raise AssertionError(f"{job_id}: statuses seen {seen}, wanted {want}") from None
    return result


def test_original_flow_with_operator(
    start_api: Callable[..., ApiProcess], operator: OperatorProcess, namespace: str
) -> None:
    api = start_api(AUTH_DISABLED=True, NAMESPACE=namespace)
    with api.client() as http:
        assert http.get("/api/finetune/info").json()["available"] is True
        resp = http.post(
            "/api/finetune/start",
            json={"model": "tiny", "dataset_url": "data/fake_steps-3_interval-0.2.csv"},
        )
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job_id"]
        model_name = resp.json()["config"]["output"]["model_name"]
        done = _wait_status(http, job_id, {"completed", "failed"}, timeout=120)
        assert done["status"] == "completed", (done, operator.log()[-3000:])
        assert done["progress"] == 1.0
        assert done["model_path"] == f"models/{model_name}"
        models = http.get("/api/finetune/models").json()
        assert models["total"] == 1
        entry = models["models"][0]
        assert (entry["name"], entry["base_model"], entry["latest"]) == (model_name, "tiny", True)
        assert entry["path"] == f"models/{model_name}"

        logs = http.get(f"/api/finetune/logs/{job_id}")
        assert logs.status_code == 200
        assert '"event": "start"' in logs.text
        events = http.get(f"/api/finetune/events/{job_id}").json()["events"]
        assert events


def test_cancel_with_operator(
    start_api: Callable[..., ApiProcess], operator: OperatorProcess, namespace: str
) -> None:
    api = start_api(AUTH_DISABLED=True, NAMESPACE=namespace)
    with api.client() as http:
        job_id = http.post(
            "/api/finetune/start",
            json={"model": "tiny", "dataset_url": "data/fake_steps-200_interval-0.5.csv"},
        ).json()["job_id"]
        _wait_status(http, job_id, {"running"}, timeout=90)
        # follow streams the log while the trainer runs
        with http.stream(
            "GET", f"/api/finetune/logs/{job_id}", params={"follow": "true"}, timeout=30
        ) as stream:
            first = next(stream.iter_lines())
            assert "start" in first or "progress" in first
        assert http.post(f"/api/finetune/cancel/{job_id}").status_code == 202
        final = _wait_status(http, job_id, {"cancelled", "failed", "completed"}, timeout=90)
        assert final["status"] == "cancelled"
