"""The cached status read's hot path, in process (no cluster): auth, tenant isolation, the access
log line, the request metrics, the JSON log format and API key lookup."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kubetune_api.app import create_app
from kubetune_api.auth import KeyRing, hash_key
from kubetune_api.main import JsonFormatter
from kubetune_api.metrics import Metrics
from kubetune_api.settings import Settings

JOB_ID = "ft_20260101_000000_abc123"
NAME = "ft-20260101-000000-abc123"
STATUS_JSON = b'{"job_id":"ft_20260101_000000_abc123","status":"running","progress":0.5}'


class _Jobs:
    """The FineTuneJobs surface the status route and `/metrics` use."""

    informers: list[Any] = []

    def __init__(self, jobs: dict[tuple[str, str], Any]) -> None:
        self.jobs = jobs
        self.cache = self

    async def find(self, namespace: str, name: str) -> Any:
        return self.jobs.get((namespace, name))

    def all(self) -> list[Any]:
        return [SimpleNamespace(phase="Running")] * len(self.jobs)

    def synced(self) -> bool:
        return True

    def watch_restarts(self) -> int:
        return 0

    def relists(self) -> int:
        return 1

    def cache_age(self) -> float:
        return 0.0


def _client(settings: Settings, keys: dict[str, str] | None = None) -> Iterator[TestClient]:
    app = create_app(settings)
    state = app.state.kubetune
    jobs = _Jobs({("team-a", NAME): SimpleNamespace(status_json=STATUS_JSON)})
    state.store = SimpleNamespace(jobs=jobs)
    if keys is not None:
        ring = KeyRing(lambda: None, refresh_seconds=3600)
        ring._keys = {hash_key(key): ns for key, ns in keys.items()}
        ring.loaded.set()
        state.keyring = ring
    yield TestClient(app)  # not entered: no lifespan, nothing connects to a cluster


@pytest.fixture
def open_client() -> Iterator[TestClient]:
    yield from _client(Settings(auth_disabled=True, namespace="team-a"))


@pytest.fixture
def auth_client() -> Iterator[TestClient]:
    yield from _client(
        Settings(auth_disabled=False, namespace="default"),
        keys={"key-a": "team-a", "key-b": "team-b"},
    )


def test_status_returns_the_cached_json_as_is(open_client: TestClient) -> None:
    resp = open_client.get(f"/api/finetune/status/{JOB_ID}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.content == STATUS_JSON
    assert open_client.get("/api/finetune/status/ft_20260101_000000_nope00").status_code == 404
    assert open_client.get("/api/finetune/status/not_an_id!").status_code == 404


def test_status_needs_a_key_and_sees_only_its_tenant(auth_client: TestClient) -> None:
    url = f"/api/finetune/status/{JOB_ID}"
    missing = auth_client.get(url)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert auth_client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert auth_client.get(url, headers={"Authorization": "Basic key-a"}).status_code == 401
    ok = auth_client.get(url, headers={"Authorization": "Bearer key-a"})
    assert ok.status_code == 200 and ok.content == STATUS_JSON
    other = auth_client.get(url, headers={"Authorization": "Bearer key-b"})
    assert other.status_code == 404  # another tenant's job does not exist for it


def test_status_is_documented_with_its_model(open_client: TestClient) -> None:
    op = open_client.get("/openapi.json").json()["paths"]["/api/finetune/status/{job_id}"]["get"]
    assert [p["name"] for p in op["parameters"]] == ["job_id"]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/JobStatus"}


def test_every_request_is_logged_and_counted(
    auth_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"/api/finetune/status/{JOB_ID}"
    with caplog.at_level(logging.INFO, logger="kubetune_api"):
        for _ in range(3):
            auth_client.get(url, headers={"Authorization": "Bearer key-a"})
        auth_client.get(url)
    lines = [r for r in caplog.records if r.name == "kubetune_api" and r.msg == "request"]
    assert [vars(r)["status"] for r in lines] == [200, 200, 200, 401]
    first = lines[0]
    assert first.levelno == logging.INFO
    assert vars(first)["method"] == "GET"
    assert vars(first)["path"] == url
    assert vars(first)["route"] == "/api/finetune/status/{job_id}"
    assert vars(first)["tenant"] == "team-a"
    assert isinstance(vars(first)["duration_ms"], float)
    assert vars(lines[-1])["tenant"] is None
    text = auth_client.get("/metrics").text
    route = 'route="/api/finetune/status/{job_id}"'
    assert f'kubetune_api_requests_total{{method="GET",{route},status="200"}} 3.0' in text
    assert f'kubetune_api_requests_total{{method="GET",{route},status="401"}} 1.0' in text
    assert f'kubetune_api_request_duration_seconds_count{{method="GET",{route}}} 4.0' in text


def test_access_log_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    for client in _client(Settings(auth_disabled=True, namespace="team-a", access_log=False)):
        with caplog.at_level(logging.INFO, logger="kubetune_api"):
            assert client.get(f"/api/finetune/status/{JOB_ID}").status_code == 200
    assert not [r for r in caplog.records if r.msg == "request"]


def test_metrics_children_are_reused() -> None:
    metrics = Metrics(lambda: None)
    for _ in range(2):
        metrics.observe("GET", "/x", 200, 0.002)
    metrics.observe("GET", "/x", 404, 0.5)
    assert metrics.requests.labels("GET", "/x", "200")._value.get() == 2
    assert metrics.requests.labels("GET", "/x", "404")._value.get() == 1
    assert len(metrics._children) == 2


def test_json_formatter_writes_one_object_per_record() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "kubetune_api", logging.INFO, __file__, 1, "hello %s", ("you",), None
    )
    record.created = 1_700_000_000.25
    record.msecs = 250.0
    record.__dict__.update({"status": 200, "when": object(), "_private": 1})
    entry = json.loads(formatter.format(record))
    assert entry["time"] == "2023-11-14T22:13:20.250+00:00"
    assert entry["level"] == "info" and entry["logger"] == "kubetune_api"
    assert entry["message"] == "hello you" and entry["status"] == 200
    assert entry["when"].startswith("<object")  # anything not JSON is written as str()
    assert "_private" not in entry and "args" not in entry
    record.created += 1
    assert json.loads(formatter.format(record))["time"] == "2023-11-14T22:13:21.250+00:00"


def test_key_lookup_keeps_no_raw_key_and_revocation_applies_at_once() -> None:
    ring = KeyRing(lambda: None, refresh_seconds=3600)
    ring._keys = {hash_key("key-a"): "team-a"}
    tenant = ring.lookup("key-a")
    assert tenant is not None and tenant.namespace == "team-a"
    assert tenant.key_hash == hash_key("key-a")
    assert ring.lookup("key-a") == tenant
    ring._keys = {}
    assert ring.lookup("key-a") is None
    assert "key-a" not in repr(vars(ring))
