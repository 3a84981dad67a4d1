"""Error answers in process (no cluster): a job deleted between the read and the write."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fastapi.testclient import TestClient
from kubetune_api.app import create_app
from kubetune_api.settings import Settings
from kubetune_api.store.errors import NotFoundError
from kubetune_api.views import record_from_obj

JOB_ID = "ft_20260101_000000_abc123"
NAME = "ft-20260101-000000-abc123"


class _VanishingJobs:
    """Finds the job in the cache; the apiserver no longer has it when cancelling."""

    async def find(self, namespace: str, name: str) -> Any:
        obj = {"metadata": {"name": name, "namespace": namespace}, "spec": {"model": "tiny"}}
        return record_from_obj(obj) if name == NAME else None

    def request_cancel(self, namespace: str, name: str) -> Any:
        raise NotFoundError(name)


def test_a_job_deleted_meanwhile_is_404_in_both_shapes() -> None:
    app = create_app(Settings(auth_disabled=True, namespace="team-a"))
    app.state.kubetune.store = SimpleNamespace(jobs=_VanishingJobs())
    client = TestClient(app)
    original = client.post(f"/api/finetune/cancel/{JOB_ID}")
    assert (original.status_code, original.json()) == (404, {"detail": "job not found"})
    openai = client.post(f"/v1/fine_tuning/jobs/{JOB_ID}/cancel")
    assert openai.status_code == 404
    assert openai.json()["error"]["code"] == "not_found"
