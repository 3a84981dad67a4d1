"""Faults answered cleanly, in process (no cluster): an apiserver that refuses connections
(a real closed port), a cache past its staleness bound, an unexpected error, and the
translation of real transport failures. The real outage is `test_api_outage.py`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from fastapi.testclient import TestClient
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubetune_api.app import create_app
from kubetune_api.settings import Settings
from kubetune_api.store.errors import StoreUnavailableError, raise_for, transport_cause
from kubetune_api.store.finetunejobs import FineTuneJobs
from kubetune_api.views import record_from_obj
from kubetune_local.cluster import free_ports
from kubetune_local.testing import wait_for

JOB_ID = "ft_20260101_000000_abc123"
NAME = "ft-20260101-000000-abc123"
ORIGINAL = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}
OPENAI = {"model": "tiny", "training_file": "data/frigo_training.jsonl"}
UNREACHABLE = "the Kubernetes API server is unreachable: connection refused"


@pytest.fixture
def dead_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig naming a 127.0.0.1 port nothing listens on (connections are refused)."""
    (port,) = free_ports(1)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}},
        ],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def refused(dead_kubeconfig: Path) -> Iterator[TestClient]:
    """The API, started (lifespan: informer and all) against an apiserver that is down."""
    settings = Settings(
        auth_disabled=True,
        namespace="team-a",
        kubeconfig=str(dead_kubeconfig),
        cache_sync_timeout_seconds=0.5,
        retry_after_seconds=7,
    )
    with TestClient(create_app(settings)) as http:
        yield http


def _unavailable(resp: Any, reason: str = "ApiServerUnavailable") -> dict[str, Any]:
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["retry-after"] == "7"
    body: dict[str, Any] = resp.json()
    return body


def test_writes_are_503_naming_the_cause_when_the_apiserver_refuses(refused: TestClient) -> None:
    body = _unavailable(refused.post("/api/finetune/start", json=ORIGINAL))
    assert body == {"detail": UNREACHABLE, "reason": "ApiServerUnavailable"}

    error = _unavailable(refused.post("/v1/fine_tuning/jobs", json=OPENAI))["error"]
    assert error == {
        "message": UNREACHABLE,
        "type": "server_error",
        "param": None,
        "code": "api_server_unavailable",
    }


def test_reads_before_the_first_list_are_503_not_empty(refused: TestClient) -> None:
    """Never listed: an empty cache would be a lie (no jobs, 404); it says why instead."""
    for path in ("/api/finetune/jobs", "/api/finetune/models", f"/api/finetune/status/{JOB_ID}"):
        body = _unavailable(refused.get(path), "CacheNotSynced")
        assert body["reason"] == "CacheNotSynced"
        assert body["detail"].startswith("the job cache is not listed yet")
    cancel = _unavailable(refused.post(f"/api/finetune/cancel/{JOB_ID}"))
    assert cancel["reason"] == "CacheNotSynced"
    for path in ("/v1/fine_tuning/jobs", "/v1/models", "/v1/models/tiny-ft"):
        error = _unavailable(refused.get(path))["error"]
        assert (error["type"], error["code"]) == ("server_error", "cache_not_synced"), path
    error = _unavailable(refused.post(f"/v1/fine_tuning/jobs/{JOB_ID}/cancel"))["error"]
    assert error["code"] == "cache_not_synced"
    assert "x-kubetune-cache-age" not in refused.get("/api/finetune/jobs").headers


def test_readyz_names_the_cause_and_healthz_stays_up(refused: TestClient) -> None:
    def named() -> Any:
        resp = refused.get("/readyz")
        return resp if resp.json().get("reason") == "ApiServerUnavailable" else None

    resp = wait_for(named, timeout=15, what="/readyz naming the unreachable apiserver")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "not ready"
    assert body["detail"] == UNREACHABLE
    assert (body["apiserver_reachable"], body["cache_synced"]) == (False, False)
    assert body["cache_age_seconds"] is None
    assert refused.get("/healthz").json() == {"status": "ok"}
    assert refused.get("/api/finetune/info").json()["available"] is False


def test_without_loaded_api_keys_callers_get_503_not_401(dead_kubeconfig: Path) -> None:
    """Auth on and the keys Secret unreadable: the caller's key is not the problem."""
    settings = Settings(
        namespace="team-a",
        kubeconfig=str(dead_kubeconfig),
        cache_sync_timeout_seconds=0.5,
        retry_after_seconds=7,
    )
    with TestClient(create_app(settings)) as http:
        headers = {"Authorization": "Bearer some-key"}
        body = _unavailable(http.post("/api/finetune/start", json=ORIGINAL, headers=headers))
        assert body == {"detail": "the API keys are not loaded yet", "reason": "ApiKeysNotLoaded"}
        error = _unavailable(http.get("/v1/fine_tuning/jobs", headers=headers))["error"]
        assert error["code"] == "api_keys_not_loaded"
        assert http.get("/readyz").json()["api_keys_loaded"] is False


# -- the staleness bound -----------------------------------------------------------------------
@pytest.fixture
def cached(dead_kubeconfig: Path) -> Iterator[tuple[TestClient, FineTuneJobs]]:
    """A real FineTuneJobs holding one job, its informer not started (its state is set by the
    test: this is the bound's logic, the outage test shows the informer's side)."""
    api_client = k8s.ApiClient(_config(dead_kubeconfig))
    jobs = FineTuneJobs(k8s.CustomObjectsApi(api_client), scopes=["team-a"], max_staleness=60)
    obj = {"metadata": {"name": NAME, "namespace": "team-a", "uid": "u1"}, "spec": {}}
    jobs.cache.upsert(record_from_obj(obj))
    app = create_app(Settings(auth_disabled=True, namespace="team-a", retry_after_seconds=7))
    app.state.kubetune.store = SimpleNamespace(jobs=jobs)
    yield TestClient(app), jobs  # not entered: nothing connects
    api_client.close()


def _config(kubeconfig: Path) -> k8s.Configuration:
    from kubernetes import config

    configuration = k8s.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return configuration


def test_cached_reads_say_their_age_and_are_refused_past_the_bound(
    cached: tuple[TestClient, FineTuneJobs],
) -> None:
    http, jobs = cached
    (informer,) = jobs.informers
    informer.connected, informer.last_heard = True, time.monotonic() - 300
    resp = http.get(f"/api/finetune/status/{JOB_ID}")
    assert resp.status_code == 200
    assert resp.headers["x-kubetune-cache-age"] == "0"  # watch open: as current as it gets

    informer.connected, informer.last_error = False, "connection refused"
    informer.last_heard = time.monotonic() - 42
    resp = http.get(f"/api/finetune/status/{JOB_ID}")
    assert resp.status_code == 200
    assert resp.headers["x-kubetune-cache-age"] == "42"
    assert http.get("/v1/fine_tuning/jobs").headers["x-kubetune-cache-age"] == "42"

    informer.last_heard = time.monotonic() - 61
    resp = http.get(f"/api/finetune/status/{JOB_ID}")
    body = _unavailable(resp, "CacheStale")
    assert body == {
        "detail": "the job cache may be 61 s stale (past the 60 s bound): the Kubernetes API "
        "server is unreachable: connection refused",
        "reason": "CacheStale",
    }
    assert resp.headers["x-kubetune-cache-age"] == "61"
    error = _unavailable(http.get(f"/v1/fine_tuning/jobs/{JOB_ID}"))["error"]
    assert error["code"] == "cache_stale"


# -- the last resort -----------------------------------------------------------------------------
class _BrokenJobs:
    read_mode = "cache"

    async def find(self, namespace: str, name: str) -> Any:
        raise RuntimeError("bearer s3cr3t-token leaked in an error message")

    def cache_age(self) -> float:
        return 0.0


def test_unexpected_errors_are_json_500_with_a_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(Settings(auth_disabled=True, namespace="team-a"))
    app.state.kubetune.store = SimpleNamespace(jobs=_BrokenJobs())
    http = TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="kubetune_api"):
        resp = http.get(f"/api/finetune/status/{JOB_ID}")
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    request_id = body["request_id"]
    assert body == {
        "detail": f"internal error (request id {request_id})",
        "reason": "InternalError",
        "request_id": request_id,
    }
    assert resp.headers["x-request-id"] == request_id
    assert "s3cr3t" not in resp.text and "Traceback" not in resp.text
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log

    resp = http.get(f"/v1/fine_tuning/jobs/{JOB_ID}")
    assert resp.status_code == 500
    error = resp.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert error["param"] is None
    assert resp.headers["x-request-id"] in error["message"]
    assert "s3cr3t" not in resp.text


# -- what transport failures and apiserver statuses become ----------------------------------------
def _failure(url: str, timeout: float = 2.0) -> BaseException:
    pool = urllib3.PoolManager(retries=urllib3.Retry(0))
    try:
        pool.request("GET", url, timeout=timeout)
    except urllib3.exceptions.HTTPError as exc:
        return exc
    raise AssertionError(f"GET {url} did not fail")


@pytest.fixture
def silent_server() -> Iterator[tuple[int, threading.Event]]:
    """A TCP server that accepts and then either says nothing or hangs up (set `hang_up`)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    hang_up = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if hang_up.is_set():
                conn.close()
            else:
                held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], hang_up
    server.close()
    for conn in held:
        conn.close()


def test_transport_failures_are_named_without_the_address(
    silent_server: tuple[int, threading.Event],
) -> None:
    port, hang_up = silent_server
    (closed,) = free_ports(1)
    assert transport_cause(_failure(f"http://127.0.0.1:{closed}/")) == "connection refused"
    assert transport_cause(_failure(f"http://127.0.0.1:{port}/", 0.3)) == "no answer in time"
    hang_up.set()
    assert transport_cause(_failure(f"http://127.0.0.1:{port}/")) == "connection lost"


@pytest.mark.parametrize(
    ("status", "reason", "retry"),
    [
        (503, "ApiServerUnavailable", True),
        (500, "ApiServerUnavailable", True),
        (429, "ApiServerUnavailable", True),
        (403, "ApiServerForbidden", False),
        (422, "ApiServerRejected", False),
    ],
)
def test_apiserver_statuses_become_503_reasons(status: int, reason: str, retry: bool) -> None:
    with pytest.raises(StoreUnavailableError) as info:
        raise_for(ApiException(status=status, reason="Whatever"))
    assert (info.value.reason, info.value.retry, info.value.status) == (reason, retry, status)
    if retry:
        assert info.value.detail == (
            f"the Kubernetes API server is unavailable: it answered {status} Whatever"
        )
