"""hf:// models and datasets at the API: accepted, checked with the contract's parser (422
naming the field), the token Secret stored as a reference and echoed by name only."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from kubetune_api.app import create_app
from kubetune_api.echo import start_config
from kubetune_api.request_fields import StartRequest
from kubetune_api.service import FieldError, build_spec, check_dataset, check_model, for_job
from kubetune_api.settings import Settings
from kubetune_api.validation import parse_dataset_url
from kubetune_crd.catalog import load_catalog

ROOT = "/var/lib/kubetune/datasets"
HUB = {
    "model": "hf://kubetune/tiny@main",
    "dataset_url": "hf://datasets/kubetune/frigo@v1/data/train.jsonl",
    "hub_token_secret": "hf-token",
}


def _no_dns(host: str) -> list[str]:
    raise AssertionError(f"an hf:// dataset needs no DNS lookup at the API ({host})")


def test_hub_model_and_dataset_reach_the_spec_and_the_echo() -> None:
    check_model(HUB["model"], load_catalog(), Settings())
    req = StartRequest.model_validate(HUB)
    parsed = check_dataset(req.dataset_url, req.dataset_format, Settings(), _no_dns)
    assert (parsed.kind, parsed.format) == ("hub", "jsonl")
    spec = for_job(build_spec(req, parsed, Settings()), "ft_20240115_103045_abc123")
    assert spec.model == HUB["model"] and spec.dataset.url == HUB["dataset_url"]
    assert spec.hub is not None and spec.hub.token_secret_ref is not None
    assert spec.hub.token_secret_ref.name == "hf-token"
    assert spec.output is not None and spec.output.model_name == (
        "tiny-main-finetuned-20240115_103045-abc123"
    )
    echo = start_config(req.dataset_url, spec).model_dump()
    assert echo["hub_token_secret"] == "hf-token"  # the Secret's name, never a token
    # No path: the trainer picks the repo's train split file, its format decided then.
    assert parse_dataset_url("hf://datasets/kubetune/frigo", data_root=ROOT).format == "auto"


@pytest.mark.parametrize(
    ("model", "settings", "why"),
    [
        ("hf://kubetune", Settings(), "not a valid Hub reference"),
        ("hf://a/b/c", Settings(), "not a valid Hub reference"),
        ("hf://datasets/a/b", Settings(), "names a dataset repo"),
        ("hf://kubetune/tiny", Settings(allow_hub_models=False), "unknown model"),
    ],
)
def test_bad_or_disallowed_hub_models_name_the_field(
    model: str, settings: Settings, why: str
) -> None:
    with pytest.raises(FieldError, match=why) as info:
        check_model(model, load_catalog(), settings)
    assert info.value.field == "model"


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Settings(auth_disabled=True, namespace="team-a")))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**HUB, "model": "hf://a/b/c"}, "model"),
        ({**HUB, "model": "hf:/a/b"}, "model"),
        ({**HUB, "hub_token_secret": "Not_A_Name"}, "hub_token_secret"),
    ],
)
def test_routes_answer_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    resp = client.post("/api/finetune/start", json=body)
    assert resp.status_code == 422, resp.text
    assert field in str(resp.json()["detail"])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("hf://datasets/a/b/../c.csv", "'..'"),
        ("hf://datasets/a/b/c.parquet", "unsupported dataset format"),
        ("hf://a/b", "names a model repo"),
        ("hf://datasets/a", "not a valid Hub reference"),
    ],
)
def test_bad_hub_datasets_name_the_field(url: str, why: str) -> None:
    with pytest.raises(FieldError, match=why) as info:
        check_dataset(url, "auto", Settings(), _no_dns)
    assert info.value.field == "dataset_url"


def test_a_valid_hub_request_passes_validation(client: TestClient) -> None:
    assert client.post("/api/finetune/start", json=HUB).status_code == 503  # no store: valid
