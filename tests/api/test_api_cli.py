"""The `kubetune` CLI against a real API server (real HTTP, real cluster): every command."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubetune_cli.main import EXIT_REJECTED, main
from kubetune_local.testing import wait_for

from api.api_proc import ApiProcess
from api.conftest import patch_status

pytestmark = pytest.mark.cluster


def _json(capsys: pytest.CaptureFixture[str], api: ApiProcess, *argv: str) -> Any:
    assert main(["--api-url", api.url, "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_commands(
    api: ApiProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # tables wide enough for whole job ids
    assert "tiny" in _json(capsys, api, "info")["supported_models"]
    args = ("start", "--model", "tiny", "--dataset", "data/frigo_training.csv", "--epochs", "2")
    started = _json(capsys, api, *args)
    job_id = str(started["job_id"])
    assert started["config"]["epochs"] == 2

    patch_status(custom, namespace, job_id.replace("_", "-"), {"phase": "Running", "worldSize": 2})
    with api.client() as http:  # the API's cache follows the watch
        wait_for(lambda: http.get(f"/api/finetune/status/{job_id}").json()["status"] == "running")
    assert main(["--api-url", api.url, "status", job_id]) == 0
    human = capsys.readouterr().out
    assert f"job:      {job_id}" in human and "world:    2" in human
    listed = _json(capsys, api, "jobs")
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]
    assert main(["--api-url", api.url, "jobs"]) == 0
    assert job_id in capsys.readouterr().out
    assert _json(capsys, api, "models") == {"models": [], "total": 0}
    assert _json(capsys, api, "cancel", job_id)["status"] == "running"

    assert main(["--api-url", api.url, "start", "--model", "nope", "--dataset", "x.csv"]) == (
        EXIT_REJECTED
    )
    assert "unknown model" in capsys.readouterr().err
