"""The request table at work: request model, spec and `config` echo all follow the contract.

Pure tests, plus the routes' validation answers through the in-process app (no cluster: a
request that passes validation reaches the missing store and is answered 503).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from kubetune_api.app import create_app
from kubetune_api.echo import start_config
from kubetune_api.request_fields import FIELDS, StartRequest, constraints
from kubetune_api.service import (
    FieldError,
    ObjectMeta,
    build_object,
    build_spec,
    check_model,
    check_tracking,
    for_job,
)
from kubetune_api.settings import Settings
from kubetune_api.validation import ParsedDataset, parse_dataset_url
from kubetune_crd.catalog import load_catalog
from kubetune_crd.spec import DatasetSpec, FineTuneJobSpec, HyperparametersSpec
from pydantic import ValidationError
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

ROOT = "/var/lib/kubetune/datasets"
JOB_ID = "ft_20240115_103045_abc123"
ORIGINAL = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}


def _spec(body: dict[str, Any], job_id: str = JOB_ID, suffix: str | None = None) -> Any:
    req = StartRequest.model_validate({**ORIGINAL, **body})
    parsed = parse_dataset_url(req.dataset_url, data_root=ROOT)
    return req, for_job(build_spec(req, parsed, Settings()), job_id, suffix)


# -- request schema and spec -----------------------------------------------------------------
def test_original_defaults_are_the_spec_defaults() -> None:
    req = StartRequest.model_validate({"model": "phi", "dataset_url": "data/frigo_training.csv"})
    assert (req.epochs, req.batch_size, req.learning_rate) == (3, 4, 2e-5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataset_url": "data/a.csv"}, "model"),
        ({"model": "phi"}, "dataset_url"),
        ({"model": "phi", "dataset_url": "data/a.csv", "epochs": 0}, "epochs"),
        ({"model": "phi", "dataset_url": "data/a.csv", "epochs": 21}, "epochs"),
        ({"model": "phi", "dataset_url": "data/a.csv", "epochs": "3"}, "epochs"),
        ({"model": "phi", "dataset_url": "data/a.csv", "batch_size": 17}, "batch_size"),
        ({"model": "phi", "dataset_url": "data/a.csv", "learning_rate": 0}, "learning_rate"),
        ({"model": "phi", "dataset_url": "data/a.csv", "surprise": 1}, "surprise"),
        ({"model": "phi", "dataset_url": "data/a.csv", "method": "dpo"}, "method"),
        ({"model": "phi", "dataset_url": "data/a.csv", "lora": {"r": 0}}, "lora"),
        ({"model": "phi", "dataset_url": "data/a.csv", "lora": {"rank": 8}}, "lora"),
        ({"model": 5, "dataset_url": "data/a.csv"}, "model"),
        ({**ORIGINAL, "tracking": {"mlflow": {"trackingUri": "ftp://mlflow"}}}, "tracking"),
        ({**ORIGINAL, "tracking": {"mlflow": {"trackingUri": "http://u:p@m"}}}, "tracking"),
        ({**ORIGINAL, "tracking": {"wandb": {}}}, "tracking"),
        ({**ORIGINAL, "eval_steps": 0}, "eval_steps"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        StartRequest.model_validate(body)
    assert info.value.errors()[0]["loc"][0] == field


def test_unknown_models_are_refused_unless_allowed() -> None:
    catalog = load_catalog()
    check_model("tiny", catalog, Settings())
    with pytest.raises(FieldError, match="unknown model"):
        check_model("gpt-17", catalog, Settings())
    check_model("org/some-model", catalog, Settings(allow_uncataloged_models=True))


def test_spec_and_config_fill_every_default() -> None:
    settings = Settings()
    req = StartRequest.model_validate(
        {"model": "tiny", "dataset_url": "data/frigo_training.csv", "lora": {"r": 8}}
    )
    parsed = parse_dataset_url(req.dataset_url, data_root=ROOT)
    spec = for_job(build_spec(req, parsed, settings), "ft_20240115_103045_abc123")
    assert spec.output is not None and spec.output.pvc is not None
    assert spec.output.model_name == "tiny-finetuned-20240115_103045-abc123"
    assert spec.output.pvc.claim_name == "kubetune-models"
    assert spec.method.lora.r == 8
    config = start_config(req.dataset_url, spec).model_dump()
    assert list(config)[:5] == ["model", "dataset", "epochs", "batch_size", "learning_rate"]
    assert config["dataset"] == "data/frigo_training.csv"
    assert config["output"]["path"] == "models/tiny-finetuned-20240115_103045-abc123"


def test_the_default_model_name_is_the_original_api_s() -> None:
    _, spec = _spec({})
    assert spec.output.model_name == "tiny-finetuned-20240115_103045-abc123"
    _, spec = _spec({}, suffix="frigo")
    assert spec.output.model_name == "tiny-finetuned-frigo-20240115_103045-abc123"
    _, spec = _spec({"model_name": "mine"}, suffix="frigo")
    assert spec.output.model_name == "mine"


# -- one table: request, spec and echo follow the contract --------------------------------------
def _other_value(info: FieldInfo) -> Any:
    """A valid value of a contract field that is not its default."""
    default = info.get_default(call_default_factory=True)
    if info.annotation is bool:
        return not default
    bounds = constraints(info)
    low = bounds.get("ge", bounds.get("gt", 0))
    if "int" in str(info.annotation):
        return low if low != default else low + 1
    high = bounds.get("le", low + 2)
    value = (low + high) / 2
    return value if value != default else (low + value) / 2


@pytest.mark.parametrize("name", list(HyperparametersSpec.model_fields))
def test_every_hyperparameter_flows_from_request_to_spec_and_echo(name: str) -> None:
    """A hyperparameter added to the contract needs no API edit: this covers it too."""
    contract = HyperparametersSpec.model_fields[name]
    field = StartRequest.model_fields[name]
    assert field.get_default() == contract.get_default(call_default_factory=True)
    assert constraints(field) == constraints(contract)
    assert field.description == contract.description
    value = _other_value(contract)
    req, spec = _spec({name: value})
    assert getattr(spec.hyperparameters, name) == value
    stored = build_object(JOB_ID, spec, ObjectMeta(request={}))["spec"]
    assert stored["hyperparameters"][to_camel(name)] == value
    assert start_config(req.dataset_url, spec).model_dump()[name] == value


def test_every_request_field_is_echoed() -> None:
    _, spec = _spec({})
    echo = start_config(ORIGINAL["dataset_url"], spec).model_dump()
    for field in FIELDS:
        assert field.in_output or field.echo_name in echo, field.name
    names = ["model", "dataset", "epochs", "batch_size", "learning_rate"]
    assert list(echo)[:5] == names
    assert echo["output"]["path"] == "models/tiny-finetuned-20240115_103045-abc123"
    for group in ("scheduling", "checkpoint", "distributed"):
        assert echo[group] == getattr(spec, group).model_dump()
    assert (echo["gradient_checkpointing"], echo["logging_steps"]) == (False, 10)


def test_s3_output_is_echoed_with_its_uri() -> None:
    body = {
        "output_s3_uri": "s3://bucket/models",
        "output_s3_region": "eu-west-1",
        "output_s3_credentials_secret": "s3-creds",
    }
    req, spec = _spec(body)
    assert spec.output.pvc is None and spec.output.s3.credentials_secret_ref.name == "s3-creds"
    output = start_config(req.dataset_url, spec).model_dump()["output"]
    assert output == {
        "model_name": "tiny-finetuned-20240115_103045-abc123",
        "path": None,
        "uri": "s3://bucket/models/tiny-finetuned-20240115_103045-abc123",
        "region": "eu-west-1",
        "credentials_secret": "s3-creds",
    }


def test_spec_errors_name_the_request_field() -> None:
    """What only the spec refuses (here a stored URL outside its pattern) names the field."""
    req = StartRequest.model_validate(ORIGINAL)
    unstorable = ParsedDataset(url="https://exa mple.com/a.csv", kind="https", format="csv")
    with pytest.raises(FieldError) as info:
        build_spec(req, unstorable, Settings())
    assert info.value.field == "dataset_url"
    assert info.value.message.startswith("dataset.url: ")


# -- one GPU default: the operator's ------------------------------------------------------------
@pytest.mark.parametrize("body", [{}, {"resources": {"cpu": "2"}}, {"resources": {"nodes": 2}}])
def test_unset_gpus_stay_unset_in_the_stored_object(body: dict[str, Any]) -> None:
    req, spec = _spec(body)
    stored = build_object(JOB_ID, spec, ObjectMeta(request={}))["spec"]
    assert "gpus" not in stored["resources"]
    echo = start_config(req.dataset_url, spec).model_dump()
    assert echo["resources"]["gpus"] is None
    assert echo["effective_batch_size"] is None  # the operator decides the GPU count


def test_asked_gpus_are_stored_and_set_the_effective_batch() -> None:
    body = {"resources": {"gpus": 2, "nodes": 3}, "batch_size": 4}
    req, spec = _spec({**body, "gradient_accumulation_steps": 2})
    assert build_object(JOB_ID, spec, ObjectMeta(request={}))["spec"]["resources"]["gpus"] == 2
    assert start_config(req.dataset_url, spec).model_dump()["effective_batch_size"] == 4 * 2 * 6
    req, spec = _spec({"resources": {"gpus": 0, "nodes": 2}, "batch_size": 4})
    stored = build_object(JOB_ID, spec, ObjectMeta(request={}))["spec"]
    assert stored["resources"]["gpus"] == 0
    assert start_config(req.dataset_url, spec).model_dump()["effective_batch_size"] == 4 * 2


# -- both routes validate with the contract's ranges ---------------------------------------------
@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Settings(auth_disabled=True, namespace="team-a")))


def _range(name: str) -> tuple[int, int]:
    bounds = constraints(HyperparametersSpec.model_fields[name])
    return bounds["ge"], bounds["le"]


def test_openai_epochs_out_of_the_contract_range_are_422(client: TestClient) -> None:
    low, high = _range("epochs")
    for epochs in (low - 1, high + 1):
        resp = client.post(
            "/v1/fine_tuning/jobs",
            json={**_openai_body(), "hyperparameters": {"n_epochs": epochs}},
        )
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["param"] == "hyperparameters.n_epochs"
    inside = {**_openai_body(), "hyperparameters": {"n_epochs": high}}
    assert client.post("/v1/fine_tuning/jobs", json=inside).status_code == 503  # valid


def test_openai_seed_and_batch_follow_the_contract(client: TestClient) -> None:
    seed_high = _range("seed")[1]
    resp = client.post("/v1/fine_tuning/jobs", json={**_openai_body(), "seed": seed_high + 1})
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "seed"
    batch = {"batch_size": _range("batch_size")[1] + 1}
    resp = client.post("/v1/fine_tuning/jobs", json={**_openai_body(), "hyperparameters": batch})
    assert resp.status_code == 422
    assert resp.json()["error"]["param"] == "hyperparameters.batch_size"


def test_original_epochs_out_of_the_contract_range_are_422(client: TestClient) -> None:
    low, high = _range("epochs")
    for epochs in (low - 1, high + 1):
        resp = client.post("/api/finetune/start", json={**ORIGINAL, "epochs": epochs})
        assert resp.status_code == 422
        assert resp.json()["detail"][0]["loc"] == ["body", "epochs"]
    ok = client.post("/api/finetune/start", json={**ORIGINAL, "epochs": high})
    assert ok.status_code == 503


def _openai_body() -> dict[str, Any]:
    return {"model": "tiny", "training_file": "data/frigo_training.jsonl"}


def test_model_and_dataset_bounds_are_the_contract_s() -> None:
    model = constraints(FineTuneJobSpec.model_fields["model"])
    assert constraints(StartRequest.model_fields["model"]) == model
    url = constraints(DatasetSpec.model_fields["url"], pattern=False)
    assert constraints(StartRequest.model_fields["dataset_url"]) == url


def test_tracking_reaches_the_spec_and_never_a_metadata_address() -> None:
    tracking = {
        "mlflow": {"trackingUri": "http://mlflow.mlops.svc:5000", "experiment": "frigo"},
        "tensorboard": True,
    }
    _, spec = _spec({"tracking": tracking, "eval_steps": 50})
    assert spec.tracking.mlflow.experiment == "frigo" and spec.tracking.tensorboard
    assert spec.hyperparameters.eval_steps == 50
    in_cluster = {"mlflow.mlops.svc": ["10.96.0.12"], "metadata.internal": ["169.254.169.254"]}
    check_tracking(spec, Settings(), lambda host: in_cluster[host])  # private is fine
    for uri in (
        "http://169.254.169.254/latest",
        "http://[fd00:ec2::254]:80",
        "http://[::ffff:169.254.169.254]",  # IPv4-mapped: the same metadata address
        "http://metadata.internal",
    ):
        bad = spec.model_copy(deep=True)
        assert bad.tracking is not None and bad.tracking.mlflow is not None
        bad.tracking.mlflow.tracking_uri = uri
        with pytest.raises(FieldError) as info:
            check_tracking(bad, Settings(), lambda host: in_cluster[host])
        assert info.value.field == "tracking" and "not allowed" in info.value.message


# -- method qlora: accepted with a GPU, refused naming the field without ------------------------
def test_qlora_is_an_adapter_method_through_spec_and_echo() -> None:
    req, spec = _spec({"method": "qlora", "lora": {"r": 8}, "resources": {"gpus": 1}})
    assert spec.method.type == "qlora" and spec.method.adapter
    echo = start_config(req.dataset_url, spec).model_dump()
    assert echo["method"] == "qlora" and echo["lora"]["r"] == 8  # adapter settings echoed
    _, unset = _spec({"method": "qlora"})  # unset gpus: the operator's default decides
    assert unset.resources.gpus is None


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"method": "qlora", "resources": {"gpus": 0}}, "method", "needs a GPU"),
        ({"method": "qlora", "distributed": {"strategy": "fsdp"}}, "distributed", "not fsdp"),
    ],
)
def test_qlora_without_a_gpu_or_under_fsdp_names_the_field(
    body: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(FieldError) as info:
        _spec(body)
    assert info.value.field == field and words in info.value.message
    assert "lora" in info.value.message
