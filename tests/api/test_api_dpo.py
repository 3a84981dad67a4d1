"""Preference tuning through both routes: the original API's `objective` / `dpo_beta` fields and
the OpenAI route's `method: {type: "dpo", dpo: {hyperparameters: {beta}}}` reach the stored
spec; a bad beta is a 422 naming the field. Pure tests and the in-process app (no cluster: a
request that passes validation reaches the missing store and is answered 503)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from kubetune_api.app import create_app
from kubetune_api.echo import start_config
from kubetune_api.openai_models import CreateJob, to_openai, to_start_request
from kubetune_api.request_fields import StartRequest
from kubetune_api.service import FieldError, ObjectMeta, build_object, build_spec, for_job
from kubetune_api.settings import Settings
from kubetune_api.validation import parse_dataset_url
from kubetune_api.views import record_from_obj
from kubetune_crd.method import DpoSpec

ROOT = "/var/lib/kubetune/datasets"
JOB_ID = "ft_20240115_103045_abc123"
ORIGINAL = {"model": "tiny", "dataset_url": "data/frigo_preference.jsonl"}
OPENAI = {"model": "tiny", "training_file": "data/frigo_preference.jsonl"}


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Settings(auth_disabled=True, namespace="team-a")))


def stored_spec(req: StartRequest) -> dict[str, Any]:
    parsed = parse_dataset_url(req.dataset_url, data_root=ROOT)
    spec = for_job(build_spec(req, parsed, Settings()), JOB_ID, None)
    return dict(build_object(JOB_ID, spec, ObjectMeta(request={}))["spec"])


def test_original_route_stores_dpo_and_echoes_it() -> None:
    req = StartRequest.model_validate(
        {**ORIGINAL, "objective": "dpo", "dpo_beta": 0.25, "method": "full", "chosen_column": "ok"}
    )
    spec = stored_spec(req)
    assert spec["method"]["objective"] == "dpo" and spec["method"]["type"] == "full"
    assert spec["method"]["dpo"] == {"beta": 0.25}
    assert (
        spec["dataset"]["chosenColumn"] == "ok" and spec["dataset"]["rejectedColumn"] == "rejected"
    )
    parsed = parse_dataset_url(req.dataset_url, data_root=ROOT)
    echo = start_config(req.dataset_url, build_spec(req, parsed, Settings())).model_dump()
    assert (echo["objective"], echo["dpo_beta"], echo["method"]) == ("dpo", 0.25, "full")
    supervised = start_config(
        ORIGINAL["dataset_url"],
        build_spec(StartRequest.model_validate(ORIGINAL), parsed, Settings()),
    ).model_dump()
    assert supervised["objective"] == "supervised" and supervised["dpo_beta"] is None


@pytest.mark.parametrize("beta", [0, -0.1, 10.5, "0.1"])
def test_original_route_refuses_a_bad_beta_naming_it(client: TestClient, beta: Any) -> None:
    resp = client.post(
        "/api/finetune/start", json={**ORIGINAL, "objective": "dpo", "dpo_beta": beta}
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["body", "dpo_beta"]
    bad_objective = client.post("/api/finetune/start", json={**ORIGINAL, "objective": "ppo"})
    assert bad_objective.status_code == 422
    assert bad_objective.json()["detail"][0]["loc"] == ["body", "objective"]


def test_original_route_accepts_dpo(client: TestClient) -> None:
    ok = client.post("/api/finetune/start", json={**ORIGINAL, "objective": "dpo", "dpo_beta": 0.5})
    assert ok.status_code == 503, ok.text  # valid: it reached the (missing) cluster


def test_openai_dpo_method_maps_to_the_objective_and_beta() -> None:
    body = CreateJob.model_validate(
        {
            **OPENAI,
            "method": {
                "type": "dpo",
                "dpo": {"hyperparameters": {"beta": 0.3, "n_epochs": 2}},
            },
        }
    )
    req = to_start_request(body)
    assert (req.objective, req.dpo_beta, req.epochs) == ("dpo", 0.3, 2)
    spec = stored_spec(req)
    assert spec["method"]["objective"] == "dpo" and spec["method"]["dpo"]["beta"] == 0.3
    auto = to_start_request(CreateJob.model_validate({**OPENAI, "method": {"type": "dpo"}}))
    assert auto.objective == "dpo" and auto.dpo_beta == DpoSpec().beta
    supervised = CreateJob.model_validate(
        {**OPENAI, "method": {"type": "supervised", "supervised": {"hyperparameters": {}}}}
    )
    assert to_start_request(supervised).objective == "supervised"
    with pytest.raises(FieldError) as err:
        to_start_request(
            CreateJob.model_validate({**OPENAI, "method": {"type": "dpo", "supervised": {}}})
        )
    assert err.value.field == "method.supervised"


@pytest.mark.parametrize("beta", [0, 11, "big"])
def test_openai_route_refuses_a_bad_beta_naming_it(client: TestClient, beta: Any) -> None:
    body = {**OPENAI, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": beta}}}}
    resp = client.post("/v1/fine_tuning/jobs", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["param"] == "method.dpo.hyperparameters.beta"


def test_openai_route_accepts_dpo(client: TestClient) -> None:
    body = {**OPENAI, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}}
    assert client.post("/v1/fine_tuning/jobs", json=body).status_code == 503  # valid


def test_a_dpo_job_reads_back_as_openai_dpo() -> None:
    req = StartRequest.model_validate({**ORIGINAL, "objective": "dpo", "dpo_beta": 0.4})
    obj = {
        "metadata": {"name": "ft-20240115-103045-abc123", "namespace": "team-a"},
        "spec": stored_spec(req),
    }
    job = to_openai(record_from_obj(obj))
    assert job.method.type == "dpo" and job.method.supervised is None
    assert job.method.dpo is not None and job.method.dpo["hyperparameters"]["beta"] == 0.4
    plain = {**obj, "spec": stored_spec(StartRequest.model_validate(ORIGINAL))}
    assert to_openai(record_from_obj(plain)).method.type == "supervised"


def test_cli_start_sends_the_objective_and_beta() -> None:
    from kubetune_cli.main import _parser, _start_body

    argv = ["start", "--model", "tiny", "--dataset", ORIGINAL["dataset_url"], "--objective"]
    args = _parser().parse_args([*argv, "dpo", "--dpo-beta", "0.2"])
    body = _start_body(args)
    assert (body["objective"], body["dpo_beta"]) == ("dpo", 0.2)
    assert StartRequest.model_validate(body).dpo_beta == 0.2
