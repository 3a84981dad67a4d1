"""The `openai` Python client against the OpenAI-compatible routes (real HTTP, real cluster)."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from kubernetes import client
from kubetune_local.testing import wait_for

from api.api_proc import ApiProcess
from api.conftest import list_jobs, patch_status, succeeded_status

pytestmark = pytest.mark.cluster


def test_openai_client_flow(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    oa = openai.OpenAI(base_url=api.url + "/v1", api_key="unused-auth-off", max_retries=0)
    job = oa.fine_tuning.jobs.create(
        model="tiny",
        training_file="data/frigo_training.jsonl",
        hyperparameters={"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 0.5},
        suffix="frigo",
        seed=7,
    )
    assert job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert job.model == "tiny" and job.training_file == "data/frigo_training.jsonl"
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 2
    assert job.seed == 7 and job.organization_id == namespace
    stored = list_jobs(custom, namespace)
    assert len(stored) == 1
    hp = stored[0]["spec"]["hyperparameters"]
    assert (hp["epochs"], hp["batchSize"], hp["learningRate"]) == (2, 2, 1e-5)

    # The same job through the original API's endpoint.
    import httpx

    original = httpx.get(f"{api.url}/api/finetune/status/{job.id}").json()
    assert original["job_id"] == job.id

    page = oa.fine_tuning.jobs.list(limit=10)
    assert [j.id for j in page.data] == [job.id]
    assert oa.fine_tuning.jobs.retrieve(job.id).id == job.id

    name = stored[0]["metadata"]["name"]
    patch_status(custom, namespace, name, {"phase": "Validating"})  # the CPU pre-flight
    status_url = f"{api.url}/api/finetune/status/{job.id}"
    wait_for(lambda: httpx.get(status_url).json()["phase"] == "Validating")
    assert oa.fine_tuning.jobs.retrieve(job.id).status == "validating_files"
    original = httpx.get(f"{api.url}/api/finetune/status/{job.id}").json()
    assert (original["status"], original["phase"]) == ("pending", "Validating")
    patch_status(custom, namespace, name, {"phase": "Pending", "pending": {"reason": "Queued"}})
    wait_for(lambda: oa.fine_tuning.jobs.retrieve(job.id).status == "queued")
    patch_status(
        custom,
        namespace,
        name,
        {
            "phase": "Running",
            "progress": {"fraction": 0.3, "step": 3, "totalSteps": 10, "loss": 2.5},
        },
    )
    wait_for(lambda: oa.fine_tuning.jobs.retrieve(job.id).status == "running")
    events = oa.fine_tuning.jobs.list_events(job.id)
    assert any(e.type == "metrics" for e in events.data)

    model_name = stored[0]["spec"]["output"]["modelName"]
    assert "frigo" in model_name
    patch_status(
        custom, namespace, name, succeeded_status(model_name, "tiny", 1024, "2024-01-15T10:30:45Z")
    )
    done = wait_for(lambda: (j := oa.fine_tuning.jobs.retrieve(job.id)).status == "succeeded" and j)
    assert done.fine_tuned_model == model_name and done.finished_at is not None
    checkpoints = oa.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.fine_tuned_model_checkpoint for c in checkpoints.data] == [f"models/{model_name}"]
    with pytest.raises(openai.ConflictError):
        oa.fine_tuning.jobs.cancel(job.id)


def test_openai_cancel_and_errors(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    oa = openai.OpenAI(base_url=api.url + "/v1", api_key="x", max_retries=0)
    job = oa.fine_tuning.jobs.create(model="tiny", training_file="data/frigo_training.csv")
    oa.fine_tuning.jobs.cancel(job.id)
    stored = list_jobs(custom, namespace)
    assert stored[0]["spec"]["cancel"] is True

    with pytest.raises(openai.NotFoundError):
        oa.fine_tuning.jobs.retrieve("ft_20200101_000000_abcdef")
    bad: list[dict[str, Any]] = [
        {"model": "nope", "training_file": "data/frigo_training.csv"},
        {"model": "tiny", "training_file": "https://169.254.169.254/x.csv"},
        {
            "model": "tiny",
            "training_file": "data/frigo_training.csv",
            "hyperparameters": {"n_epochs": 99},
        },
    ]
    for kwargs in bad:
        with pytest.raises(openai.UnprocessableEntityError) as info:
            oa.fine_tuning.jobs.create(**kwargs)
        assert info.value.body is not None
        assert info.value.body.get("param") or info.value.response.json()["error"]["param"]
    assert len(list_jobs(custom, namespace)) == 1
