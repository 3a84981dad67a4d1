"""The Idempotency-Key create flow, on fake stores with the apiserver's create-or-409 semantics
(the real apiserver's behaviour is tested in test_api_cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest
from kubetune_api import idempotency
from kubetune_api.store.errors import ConflictError
from kubetune_api.views import JobRecord, record_from_obj
from kubetune_crd.names import LABEL_IDEMPOTENCY


class FakeJobs:
    """FineTuneJobs with create-or-409 semantics, like the apiserver."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def create(self, namespace: str, body: dict[str, Any]) -> JobRecord:
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ConflictError(name)
        obj = {
            **body,
            "metadata": {
                **body["metadata"],
                "namespace": namespace,
                "uid": name,
                "resourceVersion": "1",
            },
        }
        self.objects[name] = obj
        return record_from_obj(obj)

    def get_direct(self, namespace: str, name: str) -> JobRecord | None:
        obj = self.objects.get(name)
        return record_from_obj(obj) if obj else None

    def by_idempotency(self, namespace: str, key_hash: str) -> JobRecord | None:
        for obj in self.objects.values():
            if obj["metadata"].get("labels", {}).get(LABEL_IDEMPOTENCY) == key_hash:
                return record_from_obj(obj)
        return None


class FakeClaims:
    """Claim ConfigMaps with create-or-409 semantics, like the apiserver."""

    def __init__(self) -> None:
        self.claims: dict[str, dict[str, str]] = {}
        self.owned: list[str] = []

    def create(
        self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]
    ) -> None:
        if name in self.claims:
            raise ConflictError(name)
        self.claims[name] = data

    def read(self, namespace: str, name: str) -> dict[str, str]:
        return self.claims[name]

    def own(self, namespace: str, name: str, owner: JobRecord) -> None:
        self.owned.append(name)


def _builder(info: idempotency.IdempotencyInfo | None) -> Any:
    def build(job_id: str) -> dict[str, Any]:
        labels = {LABEL_IDEMPOTENCY: info.key_hash} if info else {}
        annotations = {"kubetune.io/request-hash": info.request_hash} if info else {}
        return {
            "metadata": {
                "name": job_id.replace("_", "-"),
                "labels": labels,
                "annotations": {"kubetune.io/job-id": job_id, **annotations},
            },
            "spec": {"model": "tiny"},
        }

    return build


def test_same_key_same_body_gives_the_same_job() -> None:
    jobs, claims = FakeJobs(), FakeClaims()
    info = idempotency.IdempotencyInfo.build(
        "team-a", "k1", idempotency.request_hash("original", {"a": 1})
    )
    first = idempotency.create_job(jobs, claims, "team-a", _builder(info), info)
    again = idempotency.create_job(jobs, claims, "team-a", _builder(info), info)
    assert first.job_id == again.job_id and again.replayed and not first.replayed
    assert len(jobs.objects) == 1 and claims.owned == [info.claim]


def test_same_key_other_body_is_refused() -> None:
    jobs, claims = FakeJobs(), FakeClaims()
    info = idempotency.IdempotencyInfo.build(
        "team-a", "k1", idempotency.request_hash("original", {"a": 1})
    )
    idempotency.create_job(jobs, claims, "team-a", _builder(info), info)
    other = idempotency.IdempotencyInfo.build(
        "team-a", "k1", idempotency.request_hash("original", {"a": 2})
    )
    with pytest.raises(idempotency.IdempotencyMismatchError):
        idempotency.create_job(jobs, claims, "team-a", _builder(other), other)


def test_a_claim_without_its_job_is_completed_by_the_retry() -> None:
    """The API died after the claim and before the FineTuneJob: the retry creates it."""
    jobs, claims = FakeJobs(), FakeClaims()
    info = idempotency.IdempotencyInfo.build("team-a", "k1", "h")
    claims.claims[info.claim] = {"jobId": "ft_20240115_103045_abc123", "requestHash": "h"}
    done = idempotency.create_job(jobs, claims, "team-a", _builder(info), info)
    assert done.job_id == "ft_20240115_103045_abc123"
    assert "ft-20240115-103045-abc123" in jobs.objects


def test_keys_are_per_tenant() -> None:
    assert idempotency.claim_name("team-a", "k") != idempotency.claim_name("team-b", "k")
    assert len(idempotency.claim_name("t", "k" * 255)) <= 63
    assert idempotency.valid_key("abc-123_XYZ")
    assert not idempotency.valid_key("has space") and not idempotency.valid_key("")


def test_id_collisions_draw_a_new_id() -> None:
    jobs, claims = FakeJobs(), FakeClaims()
    ids = iter(
        ["ft_20240115_103045_aaaaaa", "ft_20240115_103045_aaaaaa", "ft_20240115_103045_bbbbbb"]
    )
    build = _builder(None)
    idempotency.create_job(jobs, claims, "ns", build, None, make_id=lambda: next(ids))
    second = idempotency.create_job(jobs, claims, "ns", build, None, make_id=lambda: next(ids))
    assert second.job_id == "ft_20240115_103045_bbbbbb"
