"""hf:// references in the contract: what the CRD pattern and the shared parser accept."""

from __future__ import annotations

import re

import pytest
from kubetune_crd.hub import HubRef, HubRefError, parse_hub_ref
from kubetune_crd.spec import DATASET_URL, MODEL_REF, FineTuneJobSpec
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("hf://org/name", HubRef("model", "org/name")),
        ("hf://Org-1/name.v2@main", HubRef("model", "Org-1/name.v2", "main")),
        ("hf://org/name@refs%2Fpr%2F1", HubRef("model", "org/name", "refs/pr/1")),
        ("hf://datasets/org/data", HubRef("dataset", "org/data")),
        (
            "hf://datasets/org/data@v1/data/train.jsonl",
            HubRef("dataset", "org/data", "v1", "data/train.jsonl"),
        ),
    ],
)
def test_valid_references_parse(ref: str, parsed: HubRef) -> None:
    assert parse_hub_ref(ref) == parsed
    pattern = DATASET_URL if parsed.repo_type == "dataset" else MODEL_REF
    assert re.match(pattern, ref)


@pytest.mark.parametrize(
    "ref",
    [
        "hf://name",  # org/name required
        "hf://org/name/extra",
        "hf://org/name@",
        "hf://org/name@a b",
        "hf:/org/name",
        "hf://datasets/org/data/../secret.csv",
        "hf://datasets/org/data/./x.csv",
    ],
)
def test_malformed_references_are_refused(ref: str) -> None:
    with pytest.raises(HubRefError):
        parse_hub_ref(ref)


def test_spec_refuses_a_dataset_repo_as_model_and_bad_hub_urls() -> None:
    with pytest.raises(ValidationError, match="model"):
        FineTuneJobSpec.model_validate({"model": "hf://a/b/c", "dataset": {"url": "d.csv"}})
    with pytest.raises(ValidationError, match=r"'\.' or '\.\.'"):
        FineTuneJobSpec.model_validate(
            {"model": "tiny", "dataset": {"url": "hf://datasets/a/b/../c.csv"}}
        )
    spec = FineTuneJobSpec.model_validate(
        {
            "model": "hf://org/name@main",
            "dataset": {"url": "hf://datasets/org/data"},
            "hub": {"tokenSecretRef": {"name": "hf-token"}},
        }
    )
    assert spec.hub is not None and spec.hub.token_secret_ref is not None
    # A malformed hf:// reference cannot pass as a plain id or path (the CRD refuses it).
    for bad in ("hf://a/b/c", "hf:/a/b", "hf:a"):
        assert not re.match(MODEL_REF, bad)
    for plain in ("h", "hf", "hfx", "org/m@rev:x", "microsoft/phi-2"):
        assert re.match(MODEL_REF, plain)
