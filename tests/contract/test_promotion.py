"""The promotion and evaluation spec (kubetune_crd.promotion): validation, the CRD schema, the
API request fields that fill it, and the pure promotion decision."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from kubetune_api.echo import start_config
from kubetune_api.request_fields import StartRequest
from kubetune_api.service import FieldError, build_spec, for_job
from kubetune_api.settings import Settings
from kubetune_api.validation import parse_dataset_url
from kubetune_crd import generate
from kubetune_crd.promotion import (
    ALIAS_PATTERN,
    DEFAULT_MAX_NEW_TOKENS,
    POLICIES,
    EvaluationSpec,
    PromotionSpec,
    decide,
    pointer_filename,
)
from kubetune_crd.spec import FineTuneJobSpec
from pydantic import ValidationError

BASE = {"model": "tiny", "dataset": {"url": "data/frigo.csv"}}
ORIGINAL = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}


# -- the spec ------------------------------------------------------------------------------------
def test_promotion_defaults_to_if_better_and_serialises_camel_case() -> None:
    spec = FineTuneJobSpec.model_validate(
        {
            **BASE,
            "promotion": {"alias": "frigo"},
            "evaluation": {"prompts": ["Frigo fait bruit fort"], "maxNewTokens": 12},
        }
    )
    assert spec.promotion == PromotionSpec(alias="frigo", policy="if-better")
    assert spec.evaluation is not None and spec.evaluation.max_new_tokens == 12
    stored = spec.to_k8s()
    assert stored["promotion"] == {"alias": "frigo", "policy": "if-better"}
    assert stored["evaluation"] == {"prompts": ["Frigo fait bruit fort"], "maxNewTokens": 12}
    assert EvaluationSpec().max_new_tokens == DEFAULT_MAX_NEW_TOKENS


def test_both_are_optional() -> None:
    spec = FineTuneJobSpec.model_validate(BASE)
    assert spec.promotion is None and spec.evaluation is None
    assert "promotion" not in spec.to_k8s() and "evaluation" not in spec.to_k8s()


@pytest.mark.parametrize(
    "alias",
    ["Frigo", "frigo_v2", "-frigo", "frigo-", "", "a" * 64, "fri go", "../etc", "frigo.json"],
)
def test_a_bad_alias_name_is_refused(alias: str) -> None:
    with pytest.raises(ValidationError) as info:
        FineTuneJobSpec.model_validate({**BASE, "promotion": {"alias": alias}})
    assert info.value.errors()[0]["loc"][:2] == ("promotion", "alias")


@pytest.mark.parametrize("alias", ["frigo", "a", "a" * 63, "frigo-v2", "0frigo"])
def test_good_alias_names(alias: str) -> None:
    assert PromotionSpec(alias=alias).alias == alias
    assert pointer_filename(alias) == f"{alias}.json"


@pytest.mark.parametrize(
    "evaluation",
    [
        {"prompts": ["q"] * 9},
        {"prompts": [""]},
        {"prompts": ["x" * 2001]},
        {"maxNewTokens": 0},
        {"maxNewTokens": 257},
        {"prompts": ["q"], "temperature": 1.0},
    ],
)
def test_bad_evaluation_is_refused(evaluation: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FineTuneJobSpec.model_validate({**BASE, "evaluation": evaluation})


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValidationError):
        PromotionSpec.model_validate({"alias": "frigo", "policy": "sometimes"})


def test_the_crd_schema_validates_alias_and_policy() -> None:
    crd = yaml.safe_load(generate.render())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    promotion = spec["properties"]["promotion"]
    assert promotion["required"] == ["alias"]
    assert promotion["properties"]["alias"]["pattern"] == ALIAS_PATTERN
    assert promotion["properties"]["alias"]["maxLength"] == 63
    assert promotion["properties"]["policy"]["enum"] == list(POLICIES)
    assert promotion["properties"]["policy"]["default"] == "if-better"
    evaluation = spec["properties"]["evaluation"]["properties"]
    assert evaluation["prompts"]["maxItems"] == 8
    assert evaluation["maxNewTokens"]["maximum"] == 256


# -- the API request fields ----------------------------------------------------------------------
def _spec(body: dict[str, Any]) -> tuple[Any, FineTuneJobSpec]:
    req = StartRequest.model_validate({**ORIGINAL, **body})
    parsed = parse_dataset_url(req.dataset_url, data_root="/var/lib/kubetune/datasets")
    return req, for_job(build_spec(req, parsed, Settings()), "ft_20240115_103045_abc123")


def test_request_fields_fill_promotion_and_evaluation() -> None:
    req, spec = _spec(
        {
            "promote_to": "frigo",
            "promotion_policy": "always",
            "evaluation_prompts": ["Frigo fait bruit fort"],
        }
    )
    assert spec.promotion == PromotionSpec(alias="frigo", policy="always")
    assert spec.evaluation == EvaluationSpec(prompts=["Frigo fait bruit fort"])
    echo = start_config(req.dataset_url, spec).model_dump()
    assert echo["promote_to"] == "frigo"
    assert echo["promotion_policy"] == "always"
    assert echo["evaluation_prompts"] == ["Frigo fait bruit fort"]


def test_without_them_nothing_is_stored_and_the_policy_defaults() -> None:
    req, spec = _spec({})
    assert spec.promotion is None and spec.evaluation is None
    echo = start_config(req.dataset_url, spec).model_dump()
    assert (echo["promote_to"], echo["promotion_policy"], echo["evaluation_prompts"]) == (
        None,
        None,
        None,
    )
    _, spec = _spec({"promote_to": "frigo"})
    assert spec.promotion is not None and spec.promotion.policy == "if-better"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"promote_to": "Frigo!"}, "promote_to"),
        ({"promote_to": "x" * 64}, "promote_to"),
        ({"promote_to": "frigo", "promotion_policy": "maybe"}, "promotion_policy"),
        ({"evaluation_prompts": ["q"] * 9}, "evaluation_prompts"),
        ({"evaluation_prompts": "one string"}, "evaluation_prompts"),
    ],
)
def test_bad_request_fields_are_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        StartRequest.model_validate({**ORIGINAL, **body})
    assert info.value.errors()[0]["loc"][0] == field


def test_a_policy_without_an_alias_names_promote_to() -> None:
    req = StartRequest.model_validate({**ORIGINAL, "promotion_policy": "always"})
    parsed = parse_dataset_url(req.dataset_url, data_root="/var/lib/kubetune/datasets")
    with pytest.raises(FieldError) as info:
        build_spec(req, parsed, Settings())
    assert info.value.field == "promote_to"


# -- the decision ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "challenger", "champion", "promote"),
    [
        ("always", 2.0, 1.0, True),
        ("always", None, 1.0, True),
        ("never", 0.5, 1.0, False),
        ("never", 0.5, None, False),
        ("if-better", 0.9, 1.0, True),
        ("if-better", 1.0, 1.0, False),  # a tie keeps the current model
        ("if-better", 1.1, 1.0, False),
        ("if-better", 1.1, None, True),  # no current model
        ("if-better", None, None, True),
        ("if-better", None, 1.0, False),
        ("if-better", math.nan, 1.0, False),
        ("if-better", math.inf, 1.0, False),
        ("if-better", 5.0, math.inf, True),  # the current model diverged
        ("if-better", 5.0, math.nan, True),
    ],
)
def test_decide(
    policy: Any, challenger: float | None, champion: float | None, promote: bool
) -> None:
    decision, reason = decide(policy, challenger, champion)
    assert decision is promote
    assert policy in reason
    assert "\n" not in reason


def test_decide_names_both_figures() -> None:
    assert decide("if-better", 0.81234, 0.9)[1] == (
        "if-better: challenger 0.8123 < current 0.9000 bits/byte"
    )
    assert "1.2000 >= current 0.9000" in decide("if-better", 1.2, 0.9)[1]


def test_a_current_model_that_could_not_be_evaluated_is_kept() -> None:
    assert decide("if-better", 0.5, None, has_champion=True)[0] is False
    assert decide("if-better", 0.5, None, has_champion=False)[0] is True
    assert decide("always", 0.5, None, has_champion=True)[0] is True


def test_decide_refuses_an_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown promotion policy"):
        decide("sometimes", 1.0, 2.0)  # type: ignore[arg-type]
