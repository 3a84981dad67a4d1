"""A real apiserver outage: the session cluster's kube-apiserver is killed (SIGKILL) and kept
down for 30 s, then its supervisor starts it again on the same address with the same data
(`kubetune_local.testing.ComponentOutage`), with an API server running throughout.

During the outage writes answer 503 + Retry-After naming the cause (OpenAI's error shape on
/v1, read by the real `openai` client), cached reads carry their age and are refused past
the API's staleness bound, /readyz is 503 with the cause while /healthz stays 200. After it,
the API recovers by itself: its informer lists again, /readyz is 200 again, the cache
follows changes and writes succeed. Also: the informer relists on a real `410 Gone`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from kubernetes import client
from kubetune_api.store.informer import Informer
from kubetune_api.store.job_cache import JobCache
from kubetune_local.testing import ComponentOutage, wait_for

from api.api_proc import ApiProcess
from api.conftest import GROUP, PLURAL, VERSION, patch_status

pytestmark = pytest.mark.cluster

ORIGINAL = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}
OUTAGE_SECONDS = 30
STALENESS_SECONDS = 10
"""The API's bound in this test: cached reads are refused 10 s into the outage."""
RETRY_AFTER = "3"
UNREACHABLE = "the Kubernetes API server is unreachable: "


def _ftj(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {"model": "tiny", "dataset": {"url": "data/frigo_training.csv"}},
    }


def test_the_informer_relists_on_410_gone(
    cluster: Any, crd: None, namespace: str, custom: client.CustomObjectsApi
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _ftj("before"))
    cache = JobCache()
    informer = Informer(custom, cache, namespace, watch_timeout=10)
    informer.resource_version = "1"  # long compacted: resuming from it is answered 410 Gone
    informer.start()
    try:
        wait_for(informer.synced.is_set, timeout=30, what="the informer to list after 410")
        assert informer.gone >= 1 and informer.relists == 1
        assert cache.get(namespace, "before") is not None
        assert informer.connected and informer.age() == 0.0
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _ftj("after"))
        wait_for(lambda: cache.get(namespace, "after"), timeout=30, what="the watch after relist")
    finally:
        informer.stop()


def _metric(http: httpx.Client, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", http.get("/metrics").text, re.MULTILINE)
    assert found, f"metric {name} missing"
    return float(found.group(1))


def _unavailable(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["retry-after"] == RETRY_AFTER
    body: dict[str, Any] = resp.json()
    return body


def _writes_are_refused(http: httpx.Client, api: ApiProcess, job_id: str) -> None:
    for path, body in (
        ("/api/finetune/start", ORIGINAL),
        (f"/api/finetune/cancel/{job_id}", None),
    ):
        answer = _unavailable(http.post(path, json=body))
        assert answer["reason"] == "ApiServerUnavailable"
        assert answer["detail"].startswith(UNREACHABLE)

    oa = openai.OpenAI(base_url=api.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        oa.fine_tuning.jobs.create(model="tiny", training_file="data/frigo_training.csv")
    assert info.value.status_code == 503
    assert info.value.code == "api_server_unavailable"
    assert info.value.type == "server_error"
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"].startswith(UNREACHABLE)
    assert info.value.response.headers["retry-after"] == RETRY_AFTER
    error = _unavailable(http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel"))["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "api_server_unavailable"


def _get_when(
    http: httpx.Client, path: str, ok: Callable[[httpx.Response], bool]
) -> Callable[[], httpx.Response | None]:
    """For `wait_for`: GET `path`, the answer once `ok` accepts it."""

    def check() -> httpx.Response | None:
        resp = http.get(path)
        return resp if ok(resp) else None

    return check


def _reads_age_then_are_refused(http: httpx.Client, job_id: str) -> None:
    path = f"/api/finetune/status/{job_id}"
    aged = wait_for(
        _get_when(
            http,
            path,
            lambda r: r.status_code == 200 and int(r.headers["x-kubetune-cache-age"]) >= 2,
        ),
        timeout=STALENESS_SECONDS,
        what="a cached read saying its age",
    )
    assert aged.json()["job_id"] == job_id
    stale = wait_for(
        _get_when(http, path, lambda r: r.status_code == 503),
        timeout=STALENESS_SECONDS + 5,
        what="cached reads refused past the bound",
    )
    assert _unavailable(stale)["reason"] == "CacheStale"
    assert int(stale.headers["x-kubetune-cache-age"]) >= STALENESS_SECONDS
    error = _unavailable(http.get("/v1/fine_tuning/jobs"))["error"]
    assert error["code"] == "cache_stale"


def _not_ready_while_down(http: httpx.Client) -> None:
    ready = wait_for(
        _get_when(http, "/readyz", lambda r: r.status_code == 503),
        timeout=15,
        what="/readyz to report the outage",
    )
    body = ready.json()
    assert body["reason"] == "ApiServerUnavailable"
    assert body["detail"].startswith(UNREACHABLE)
    assert body["apiserver_reachable"] is False
    assert http.get("/healthz").json() == {"status": "ok"}


@pytest.mark.slow  # a 30 s outage, then an apiserver restart: 40-60 s, more when loaded
def test_an_apiserver_outage_is_answered_cleanly_and_recovered_from(
    start_api: Any,
    cluster: Any,
    namespace: str,
    data_root: Path,
    custom: client.CustomObjectsApi,
) -> None:
    api = start_api(
        AUTH_DISABLED=True,
        NAMESPACE=namespace,
        DATA_ROOT=str(data_root),
        CACHE_MAX_STALENESS_SECONDS=STALENESS_SECONDS,
        RETRY_AFTER_SECONDS=RETRY_AFTER,
    )
    outage = ComponentOutage(cluster, "apiserver")
    with api.client() as http:
        job_id = http.post("/api/finetune/start", json=ORIGINAL).json()["job_id"]
        before = http.get(f"/api/finetune/status/{job_id}")
        assert (before.status_code, before.headers["x-kubetune-cache-age"]) == (200, "0")
        relists = _metric(http, "kubetune_api_cache_relists")

        outage.stop()
        try:
            _writes_are_refused(http, api, job_id)
            _not_ready_while_down(http)
            _reads_age_then_are_refused(http, job_id)
            assert outage.down_for() < OUTAGE_SECONDS, "the checks took the whole outage"
            time.sleep(OUTAGE_SECONDS - outage.down_for())  # the outage's planned length
        finally:
            outage.start()

        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=30, what="readiness")
        assert _metric(http, "kubetune_api_cache_relists") > relists  # listed again
        assert _metric(http, "kubetune_api_watch_restarts") >= 1
        fresh = http.get(f"/api/finetune/status/{job_id}")
        assert (fresh.status_code, fresh.headers["x-kubetune-cache-age"]) == (200, "0")

        patch_status(custom, namespace, job_id.replace("_", "-"), {"phase": "Running"})
        wait_for(
            lambda: http.get(f"/api/finetune/status/{job_id}").json()["status"] == "running",
            what="the cache to follow changes after the outage",
        )
        created = http.post("/api/finetune/start", json=ORIGINAL)
        assert created.status_code == 202, created.text
        new_id = created.json()["job_id"]
        assert http.get(f"/api/finetune/status/{new_id}").status_code == 200
        assert http.post(f"/api/finetune/cancel/{job_id}").status_code == 202
