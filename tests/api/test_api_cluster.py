"""The API over real HTTP against the real local cluster (kube-apiserver + etcd).

Statuses the operator would write are patched on the status subresource here, so these
tests do not depend on the operator; `test_api_operator.py` runs the flows with it.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubetune_local.testing import wait_for

from api.api_proc import ApiProcess
from api.conftest import key_entry, list_jobs, patch_status, succeeded_status

pytestmark = pytest.mark.cluster

ORIGINAL = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}


def start(api: ApiProcess, body: dict[str, Any], **headers: str) -> httpx.Response:
    with api.client() as http:
        return http.post("/api/finetune/start", json=body, headers=headers)


def test_original_flow_shapes(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    with api.client() as http:
        info = http.get("/api/finetune/info").json()
        assert info["available"] is True
        assert {"phi", "phi2", "mistral", "neural", "gpt2", "tiny"} <= set(info["supported_models"])
        assert info["supported_formats"] == ["csv", "jsonl"]
        assert "start" in info["endpoints"]
        assert info["parameters"]["epochs"]["minimum"] == 1
        assert info["parameters"]["epochs"]["maximum"] == 20

        # The original API's curl sends no Content-Type (form-urlencoded): accepted as JSON.
        resp = http.post(
            "/api/finetune/start",
            content=json.dumps(ORIGINAL),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert list(body) == ["status", "job_id", "message", "config"]
        assert body["status"] == "started"
        assert body["message"] == "Fine-tuning lancé pour tiny"
        job_id = body["job_id"]
        assert job_id.startswith("ft_") and len(job_id) == len("ft_20240115_103045_abc123")
        assert {k: body["config"][k] for k in ("model", "dataset", "epochs", "batch_size")} == {
            "model": "tiny",
            "dataset": "data/frigo_training.csv",
            "epochs": 3,
            "batch_size": 4,
        }
        assert body["config"]["learning_rate"] == 2e-5
        # No GPU count asked: the operator's default decides, so the echo cannot say.
        assert body["config"]["resources"]["gpus"] is None
        assert body["config"]["effective_batch_size"] is None

        # Stored before the 202: the resource is there, named after the id.
        name = job_id.replace("_", "-")
        stored = custom.get_namespaced_custom_object(
            "kubetune.io", "v1alpha1", namespace, "finetunejobs", name
        )
        assert stored["spec"]["model"] == "tiny"
        assert stored["spec"]["hyperparameters"]["epochs"] == 3
        assert "gpus" not in stored["spec"].get("resources", {})

        status = http.get(f"/api/finetune/status/{job_id}").json()
        assert list(status)[:4] == ["job_id", "status", "progress", "model_path"]
        assert (status["job_id"], status["status"], status["progress"]) == (job_id, "pending", 0.0)

        patch_status(
            custom,
            namespace,
            name,
            {
                "phase": "Running",
                "worldSize": 2,
                "effectiveBatchSize": 8,
                "progress": {
                    "fraction": 0.5,
                    "step": 15,
                    "totalSteps": 30,
                    "loss": 1.7,
                    "etaSeconds": 12.0,
                },
            },
        )
        running = wait_for(
            lambda: (
                (s := http.get(f"/api/finetune/status/{job_id}").json())["status"] == "running"
                and s
            )
        )
        assert (running["progress"], running["step"], running["loss"]) == (0.5, 15, 1.7)
        assert running["eta_seconds"] == 12.0
        assert (running["world_size"], running["effective_batch_size"]) == (2, 8)
        listed = http.get("/api/finetune/jobs").json()["jobs"]
        assert [(j["job_id"], j["world_size"]) for j in listed] == [(job_id, 2)]

        model_name = body["config"]["output"]["model_name"]
        patch_status(
            custom,
            namespace,
            name,
            succeeded_status(model_name, "tiny", 25 * 1024 * 1024, "2024-01-15T10:30:45Z"),
        )
        done = wait_for(
            lambda: (
                (s := http.get(f"/api/finetune/status/{job_id}").json())["status"] == "completed"
                and s
            )
        )
        assert done["progress"] == 1.0
        assert done["model_path"] == f"models/{model_name}"

        models = http.get("/api/finetune/models").json()
        assert models == {
            "models": [
                {
                    "name": model_name,
                    "base_model": "tiny",
                    "created": "2024-01-15T10:30:45",
                    "size_mb": 25,
                    "latest": True,
                    "path": f"models/{model_name}",
                    "job_id": job_id,
                    "metrics": {
                        "train_loss": 1.25,
                        "eval_loss_before": 2.0,
                        "eval_loss_after": 1.5,
                    },
                }
            ],
            "total": 1,
        }


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("missing model", {"dataset_url": "data/frigo_training.csv"}, "model"),
    ("missing dataset", {"model": "tiny"}, "dataset_url"),
    ("unknown field", {**ORIGINAL, "epoch": 3}, "epoch"),
    ("wrong type", {**ORIGINAL, "epochs": "three"}, "epochs"),
    ("string number", {**ORIGINAL, "batch_size": "4"}, "batch_size"),
    ("epochs low", {**ORIGINAL, "epochs": 0}, "epochs"),
    ("epochs high", {**ORIGINAL, "epochs": 21}, "epochs"),
    ("batch high", {**ORIGINAL, "batch_size": 17}, "batch_size"),
    ("lr zero", {**ORIGINAL, "learning_rate": 0}, "learning_rate"),
    ("lr negative", {**ORIGINAL, "learning_rate": -1e-5}, "learning_rate"),
    ("unknown model", {**ORIGINAL, "model": "gpt-17"}, "model"),
    ("unsupported format", {**ORIGINAL, "dataset_url": "data/frigo.parquet"}, "dataset_url"),
    ("bad explicit format", {**ORIGINAL, "dataset_format": "parquet"}, "dataset_format"),
    ("http scheme", {**ORIGINAL, "dataset_url": "http://example.com/a.csv"}, "dataset_url"),
    ("file scheme", {**ORIGINAL, "dataset_url": "file:///etc/passwd.csv"}, "dataset_url"),
    ("dotdot", {**ORIGINAL, "dataset_url": "data/../../etc/x.csv"}, "dataset_url"),
    (
        "encoded dotdot",
        {**ORIGINAL, "dataset_url": "https://example.com/%2e%2e/x.csv"},
        "dataset_url",
    ),
    ("absolute outside", {**ORIGINAL, "dataset_url": "/etc/passwd.csv"}, "dataset_url"),
    ("loopback", {**ORIGINAL, "dataset_url": "https://127.0.0.1/a.csv"}, "dataset_url"),
    ("localhost", {**ORIGINAL, "dataset_url": "https://localhost/a.csv"}, "dataset_url"),
    ("private", {**ORIGINAL, "dataset_url": "https://10.0.0.8/a.csv"}, "dataset_url"),
    ("private 192", {**ORIGINAL, "dataset_url": "https://192.168.1.1/a.csv"}, "dataset_url"),
    ("link-local", {**ORIGINAL, "dataset_url": "https://169.254.1.1/a.csv"}, "dataset_url"),
    ("metadata", {**ORIGINAL, "dataset_url": "https://169.254.169.254/latest.csv"}, "dataset_url"),
    ("ipv6 loopback", {**ORIGINAL, "dataset_url": "https://[::1]/a.csv"}, "dataset_url"),
    ("decimal ip", {**ORIGINAL, "dataset_url": "https://2130706433/a.csv"}, "dataset_url"),
    (
        "unresolvable",
        {**ORIGINAL, "dataset_url": "https://no-such-host.invalid/a.csv"},
        "dataset_url",
    ),
    ("missing file", {**ORIGINAL, "dataset_url": "data/missing.csv"}, "dataset_url"),
    ("bad lora", {**ORIGINAL, "lora": {"r": 0}}, "lora"),
    ("bad method", {**ORIGINAL, "method": "rlhf"}, "method"),
    ("not an object", ["tiny"], "body"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_BODIES, ids=[c for c, _, _ in BAD_BODIES])
def test_bad_input_is_422_naming_the_field_and_creates_nothing(
    shared_api: ApiProcess,
    custom: client.CustomObjectsApi,
    shared_namespace: str,
    case: str,
    body: Any,
    field: str,
) -> None:
    resp = start(shared_api, body)
    assert resp.status_code == 422, resp.text
    locs = [e["loc"] for e in resp.json()["detail"]]
    assert any(field in [str(p) for p in loc] for loc in locs), (case, locs)
    assert list_jobs(custom, shared_namespace) == []


def test_malformed_json_and_oversized_bodies(
    shared_api: ApiProcess, custom: client.CustomObjectsApi, shared_namespace: str
) -> None:
    with shared_api.client() as http:
        resp = http.post(
            "/api/finetune/start",
            content=b'{"model": "tiny",',
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code in (400, 422)
        huge = {**ORIGINAL, "text_column": "x" * (70 * 1024)}
        resp = http.post("/api/finetune/start", json=huge)
        assert resp.status_code == 413
    assert list_jobs(custom, shared_namespace) == []


def test_unknown_job_is_404(shared_api: ApiProcess) -> None:
    with shared_api.client() as http:
        for path in (
            "/api/finetune/status/ft_20200101_000000_abcdef",
            "/api/finetune/status/not_a_job!",
            "/api/finetune/events/ft_20200101_000000_x",
            "/api/finetune/logs/ft_20200101_000000_abcdef",
        ):
            assert http.get(path).status_code == 404, path
        assert http.post("/api/finetune/cancel/ft_20200101_000000_abcdef").status_code == 404


def test_cancel_sets_spec_cancel(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    job_id = start(api, ORIGINAL).json()["job_id"]
    name = job_id.replace("_", "-")
    with api.client() as http:
        resp = http.post(f"/api/finetune/cancel/{job_id}")
        assert resp.status_code == 202
        assert resp.json()["job_id"] == job_id
        stored = custom.get_namespaced_custom_object(
            "kubetune.io", "v1alpha1", namespace, "finetunejobs", name
        )
        assert stored["spec"]["cancel"] is True
        patch_status(custom, namespace, name, {"phase": "Cancelled"})
        wait_for(lambda: http.get(f"/api/finetune/status/{job_id}").json()["status"] == "cancelled")
        assert http.post(f"/api/finetune/cancel/{job_id}").status_code == 409


def test_jobs_list_filters_and_pages(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    ids = [start(api, {**ORIGINAL, "epochs": n}).json()["job_id"] for n in (1, 2, 3)]
    patch_status(custom, namespace, ids[0].replace("_", "-"), {"phase": "Running"})
    with api.client() as http:
        wait_for(lambda: http.get("/api/finetune/jobs?status=running").json()["total"] == 1)
        everything = http.get("/api/finetune/jobs").json()
        assert everything["total"] == 3
        assert {j["job_id"] for j in everything["jobs"]} == set(ids)
        page = http.get("/api/finetune/jobs?limit=2&offset=2").json()
        assert (len(page["jobs"]), page["total"]) == (1, 3)
        assert http.get("/api/finetune/jobs?model=phi").json()["total"] == 0
        assert http.get("/api/finetune/jobs?status=bogus").status_code == 422


def test_events_and_logs_without_a_pod(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    job_id = start(api, ORIGINAL).json()["job_id"]
    name = job_id.replace("_", "-")
    patch_status(
        custom,
        namespace,
        name,
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "Running",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes available",
                    "lastTransitionTime": "2024-01-15T10:30:45Z",
                }
            ],
        },
    )
    with api.client() as http:
        events = wait_for(lambda: http.get(f"/api/finetune/events/{job_id}").json()["events"])
        assert events[0]["message"] == "0/1 nodes available"
        resp = http.get(f"/api/finetune/logs/{job_id}")
        assert resp.status_code == 409


def test_ops_endpoints(api: ApiProcess) -> None:
    with api.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").status_code == 200
        assert http.get("/docs").status_code == 200
        assert "/api/finetune/start" in http.get("/openapi.json").json()["paths"]
        start(api, ORIGINAL)
        metrics = http.get("/metrics").text
        assert (
            'kubetune_api_requests_total{method="POST",route="/api/finetune/start",status="202"}'
            in metrics
        )
        assert 'kubetune_api_jobs{phase="Pending"} 1.0' in metrics
        assert "kubetune_api_request_duration_seconds_bucket" in metrics


# -- idempotency ---------------------------------------------------------------------------
def test_idempotency_key(api: ApiProcess, custom: client.CustomObjectsApi, namespace: str) -> None:
    first = start(api, ORIGINAL, **{"Idempotency-Key": "order-42"})
    again = start(api, ORIGINAL, **{"Idempotency-Key": "order-42"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    other = start(api, {**ORIGINAL, "epochs": 5}, **{"Idempotency-Key": "order-42"})
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert len(list_jobs(custom, namespace)) == 1
    # Survives a restart: recorded on the resource and the claim.
    api.restart()
    replay = start(api, ORIGINAL, **{"Idempotency-Key": "order-42"})
    assert replay.status_code == 202 and replay.json()["job_id"] == first.json()["job_id"]
    bad = start(api, ORIGINAL, **{"Idempotency-Key": "has space"})
    assert bad.status_code == 422
    assert len(list_jobs(custom, namespace)) == 1


def test_concurrent_identical_requests_create_one_resource(
    start_api: Callable[..., ApiProcess],
    namespace: str,
    data_root: Path,
    custom: client.CustomObjectsApi,
) -> None:
    settings = {"AUTH_DISABLED": True, "NAMESPACE": namespace, "DATA_ROOT": str(data_root)}
    # Two replicas, so the race goes through the apiserver, not one process's memory.
    apis = [start_api(**settings), start_api(**settings)]
    for round_ in range(3):
        key = f"race-{round_}"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            headers = {"Idempotency-Key": key}
            answers = list(
                pool.map(lambda i, h=headers: start(apis[i % 2], ORIGINAL, **h), range(8))
            )
        assert {a.status_code for a in answers} == {202}
        assert len({a.json()["job_id"] for a in answers}) == 1
    assert len(list_jobs(custom, namespace)) == 3


def test_restart_loses_nothing(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    ids = [start(api, ORIGINAL).json()["job_id"] for _ in range(3)]
    patch_status(custom, namespace, ids[0].replace("_", "-"), {"phase": "Running"})
    api.kill()  # SIGKILL: nothing flushed on the way out
    api.start()
    with api.client() as http:
        listed = {j["job_id"]: j["status"] for j in http.get("/api/finetune/jobs").json()["jobs"]}
        assert set(listed) == set(ids)
        assert listed[ids[0]] == "running"
        for job_id in ids:
            assert http.get(f"/api/finetune/status/{job_id}").status_code == 200


def test_cache_follows_external_changes(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    """Objects created and deleted with kubectl show up and vanish (watch, not per-request)."""
    body = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "from-kubectl"},
        "spec": {"model": "tiny", "dataset": {"url": "data/frigo_training.csv"}},
    }
    custom.create_namespaced_custom_object(
        "kubetune.io", "v1alpha1", namespace, "finetunejobs", body
    )
    with api.client() as http:
        wait_for(lambda: http.get("/api/finetune/status/from-kubectl").status_code == 200)
        custom.delete_namespaced_custom_object(
            "kubetune.io", "v1alpha1", namespace, "finetunejobs", "from-kubectl"
        )
        wait_for(lambda: http.get("/api/finetune/status/from-kubectl").status_code == 404)


# -- authentication and tenants --------------------------------------------------------------
def test_auth_and_tenant_isolation(
    tenant_api: ApiProcess,
    cluster: Any,
    namespace: str,
    other_namespace: str,
    custom: client.CustomObjectsApi,
    k8s_api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(k8s_api)
    api = tenant_api
    with (
        api.client() as anon,
        api.client("key-a") as a,
        api.client("key-b") as b,
        api.client("wrong") as wrong,
    ):
        assert anon.get("/api/finetune/info").status_code == 401
        assert wrong.post("/api/finetune/start", json=ORIGINAL).status_code == 401
        assert anon.get("/api/finetune/info").headers["www-authenticate"] == "Bearer"
        assert anon.get("/healthz").status_code == 200

        job_a = a.post("/api/finetune/start", json=ORIGINAL).json()["job_id"]
        job_b = b.post("/api/finetune/start", json=ORIGINAL).json()["job_id"]
        assert [j["metadata"]["name"] for j in list_jobs(custom, namespace)] == [
            job_a.replace("_", "-")
        ]
        assert [j["metadata"]["name"] for j in list_jobs(custom, other_namespace)] == [
            job_b.replace("_", "-")
        ]

        wait_for(lambda: a.get(f"/api/finetune/status/{job_a}").status_code == 200)
        assert b.get(f"/api/finetune/status/{job_a}").status_code == 404
        assert a.get(f"/api/finetune/status/{job_b}").status_code == 404
        assert b.post(f"/api/finetune/cancel/{job_a}").status_code == 404
        assert b.get(f"/v1/fine_tuning/jobs/{job_a}").status_code == 404
        assert [j["job_id"] for j in a.get("/api/finetune/jobs").json()["jobs"]] == [job_a]

        # Same Idempotency-Key in two tenants: two jobs.
        ka = a.post("/api/finetune/start", json=ORIGINAL, headers={"Idempotency-Key": "k"}).json()
        kb = b.post("/api/finetune/start", json=ORIGINAL, headers={"Idempotency-Key": "k"}).json()
        assert ka["job_id"] != kb["job_id"]

        # Revoking a key takes effect without a restart.
        core.patch_namespaced_secret(
            "kubetune-api-keys", namespace, {"data": {key_entry("key-b"): None}}
        )
        wait_for(lambda: b.get("/api/finetune/info").status_code == 401, timeout=15)
