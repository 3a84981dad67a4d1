"""Many clients at once: nothing lost, nothing duplicated, one resource per Idempotency-Key.

Only the API and the apiserver are under test, so no operator runs: the FineTuneJobs stay
unscheduled records (a 2-core machine cannot run 250 trainers) and the namespace, with
everything in it, is deleted afterwards by the `namespace` fixture.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from kubetune_crd.names import ANNOTATION_IDEMPOTENCY_KEY, ANNOTATION_JOB_ID, LABEL_IDEMPOTENCY

from e2e.stack import E2EStack

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

CLIENTS = 20
BODY = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}


def run_clients(url: str, plan: list[list[str | None]]) -> list[list[tuple[str | None, int, str]]]:
    """Client i sends one start request per entry of plan[i] (an Idempotency-Key or None),
    in order, on its own connection; all clients start together. Per client:
    (key, HTTP status, job id or the error body)."""
    barrier = threading.Barrier(len(plan))

    def client(keys: list[str | None]) -> list[tuple[str | None, int, str]]:
        out = []
        with httpx.Client(base_url=url, timeout=120) as http:
            barrier.wait(timeout=60)
            for key in keys:
                headers = {"Idempotency-Key": key} if key else {}
                try:
                    resp = http.post("/api/finetune/start", json=BODY, headers=headers)
                except httpx.HTTPError as exc:
                    out.append((key, 0, f"{type(exc).__name__}: {exc}"))
                    continue
                ok = resp.status_code == 202
                out.append((key, resp.status_code, resp.json()["job_id"] if ok else resp.text))
        return out

    with ThreadPoolExecutor(len(plan)) as pool:
        return list(pool.map(client, plan))


@pytest.mark.timeout(300)
def test_200_concurrent_starts_then_repeated_idempotency_keys(stack: E2EStack) -> None:
    api = stack.start_api()

    # 200 requests, 20 clients x 10, no keys: 200 resources, 0 lost, 0 duplicated
    started = time.monotonic()
    answers = [a for per in run_clients(api.url, [[None] * 10] * CLIENTS) for a in per]
    took = time.monotonic() - started
    errors = [a for a in answers if a[1] != 202]
    assert not errors, f"{len(errors)} of {len(answers)} failed, e.g. {errors[:3]}"
    ids = [a[2] for a in answers]
    assert len(ids) == 200 and len(set(ids)) == 200, f"{len(set(ids))} distinct ids"
    stored = [o["metadata"]["annotations"][ANNOTATION_JOB_ID] for o in stack.ftjs()]
    assert len(stored) == 200, f"{len(stored)} FineTuneJobs stored for 200 answered requests"
    assert set(stored) == set(ids), {
        "answered, not stored": sorted(set(ids) - set(stored))[:5],
        "stored, not answered": sorted(set(stored) - set(ids))[:5],
    }
    print(f"200 starts from {CLIENTS} clients in {took:.1f}s")

    # the API's own view (its watch-fed cache) agrees
    def listed() -> bool:
        resp = stack.http.get("/api/finetune/jobs", params={"limit": 1})
        return bool(resp.json()["total"] == 200)

    stack.wait(listed, 30, "GET /api/finetune/jobs to count 200 jobs")

    # 50 keys, each sent 4 times at the same moment by 4 different clients: client c sends
    # key (c + 20 p) // 4 at its p-th request, so a key's 4 copies race each other
    keys = [f"e2e-key-{i:02d}" for i in range(50)]
    sends = [k for k in keys for _ in range(4)]
    plan: list[list[str | None]] = [list(sends[c::CLIENTS]) for c in range(CLIENTS)]
    answers = [a for per in run_clients(api.url, plan) for a in per]
    errors = [a for a in answers if a[1] != 202]
    assert not errors, f"{len(errors)} of {len(answers)} failed, e.g. {errors[:3]}"
    by_key: dict[str, set[str]] = defaultdict(set)
    for key, _, job_id in answers:
        assert key is not None
        by_key[key].add(job_id)
    assert len(answers) == 200 and sorted(by_key) == keys
    split = {k: sorted(v) for k, v in by_key.items() if len(v) != 1}
    assert not split, f"keys answered with more than one job id: {split}"
    key_ids = {next(iter(v)) for v in by_key.values()}
    assert len(key_ids) == 50 and not key_ids & set(ids)

    objects = stack.ftjs()
    assert len(objects) == 250, f"{len(objects)} FineTuneJobs, want 200 + 50"
    keyed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for obj in objects:
        meta = obj["metadata"]
        if LABEL_IDEMPOTENCY in (meta.get("labels") or {}):
            keyed[meta["annotations"][ANNOTATION_IDEMPOTENCY_KEY]].append(obj)
    assert sorted(keyed) == keys, f"{len(keyed)} keys stored"
    assert all(len(v) == 1 for v in keyed.values()), "a key with several FineTuneJobs"
    assert {v[0]["metadata"]["annotations"][ANNOTATION_JOB_ID] for v in keyed.values()} == key_ids
    claims = stack.core.list_namespaced_config_map(
        stack.namespace, label_selector="kubetune.io/idempotency=claim"
    ).items
    assert len(claims) == 50, f"{len(claims)} idempotency claims"

    # a key replayed later still answers its job (and creates nothing)
    with httpx.Client(base_url=api.url, timeout=60) as http:
        again = http.post("/api/finetune/start", json=BODY, headers={"Idempotency-Key": keys[0]})
    assert again.status_code == 202 and again.json()["job_id"] in by_key[keys[0]], again.text
    assert len(stack.ftjs()) == 250
