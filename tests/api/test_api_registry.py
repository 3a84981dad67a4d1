"""The model registry over HTTP with two tenants (real API, real cluster): OpenAI's
`/v1/models` through the `openai` client, promotion refused for another tenant's model, an
invalid alias or a missing model with nothing changed, and the CLI's `models` filters, `models
show` and `compare`.

The FineTunedModel records and the alias are written here as the operator writes them (the
operator's own writes are tested in tests/operator and end to end in tests/e2e/test_promotion.py).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from kubernetes import client
from kubetune_cli.main import EXIT_REJECTED, main
from kubetune_crd.names import parse_time
from kubetune_crd.registry import ALIAS_PLURAL, MODEL_PLURAL
from kubetune_local.testing import wait_for
from support.registry_records import finetuned_model_record

from api.api_proc import ApiProcess
from api.conftest import GROUP, VERSION

pytestmark = pytest.mark.cluster

SHA = "ab" * 32
FILES = [
    {"path": "adapter_config.json", "sha256": "01" * 32, "size": 712},
    {"path": "adapter_model.safetensors", "sha256": "02" * 32, "size": 3 * 1024 * 1024},
]


def _record(name: str, base: str, bpb: float, *, sha: str = SHA, minute: int = 0) -> dict[str, Any]:
    return finetuned_model_record(
        name,
        job=f"ft-{name}",
        metrics={
            "evalLossBefore": 3.8,
            "evalLossAfter": 2.5,
            "bitsPerByteBefore": 2.0,
            "bitsPerByteAfter": bpb,
        },
        base_model=f"/var/lib/kubetune/models/base/{base}",
        base_model_alias=base,
        size_bytes=3 * 1024 * 1024 + 712,
        created=f"2026-12-04T10:{minute:02d}:00Z",
        model_extra={"datasetSha256": sha, "files": FILES, "manifestSha256": "03" * 32},
        dataset_url="data/frigo_training.jsonl",
        dataset_sha256=sha,
        hyperparameters={"epochs": 2, "seed": 42},
        samples=[{"prompt": "Frigo fait bruit fort", "before": "?", "after": "Compresseur."}],
    )


def _create(custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, MODEL_PLURAL, body)


def _alias(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, ALIAS_PLURAL, name
        )
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def _seed(custom: client.CustomObjectsApi, namespace: str, other_namespace: str) -> None:
    """Tenant A: three models on the same data (two bases), one on other data, the alias
    `frigo` naming tiny-a. Tenant B: one model."""
    _create(custom, namespace, _record("tiny-a", "tiny", 1.2, minute=1))
    _create(custom, namespace, _record("tiny-b", "tiny", 0.9, minute=2))
    _create(custom, namespace, _record("gpt2-c", "gpt2", 1.0, minute=3))
    _create(custom, namespace, _record("tiny-d", "tiny", 0.5, sha="cd" * 32, minute=4))
    _create(custom, other_namespace, _record("b-model", "tiny", 0.1, minute=5))
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        ALIAS_PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelAlias",
            "metadata": {"name": "frigo"},
            "spec": {},
        },
    )
    current = {"model": "tiny-a", "record": "ft-tiny-a", "path": "models/tiny-a", "version": 1}
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, ALIAS_PLURAL, "frigo", {"status": {"current": current}}
    )


def test_openai_models_list_the_tenants_registry(
    tenant_api: ApiProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    other_namespace: str,
) -> None:
    _seed(custom, namespace, other_namespace)
    oa = openai.OpenAI(base_url=tenant_api.url + "/v1", api_key="key-a", max_retries=0)
    wait_for(lambda: len(oa.models.list().data) == 4)
    listed = oa.models.list()
    assert listed.object == "list"
    assert [m.id for m in listed.data] == ["tiny-d", "gpt2-c", "tiny-b", "tiny-a"]  # newest first
    assert {(m.object, m.owned_by) for m in listed.data} == {("model", namespace)}
    created = parse_time("2026-12-04T10:01:00Z")
    assert created is not None
    one = oa.models.retrieve("tiny-a")
    assert (one.id, one.created, one.owned_by) == ("tiny-a", int(created.timestamp()), namespace)

    ob = openai.OpenAI(base_url=tenant_api.url + "/v1", api_key="key-b", max_retries=0)
    assert [m.id for m in ob.models.list().data] == ["b-model"]
    with pytest.raises(openai.NotFoundError) as missing:
        ob.models.retrieve("tiny-a")  # another tenant's model: as if it did not exist
    assert missing.value.code == "model_not_found"

    with tenant_api.client("key-a") as a, tenant_api.client() as anon:
        for name in ("b-model", "no-such-model", "..%2Fetc"):
            answer = a.get(f"/v1/models/{name}")
            assert answer.status_code == 404, answer.text
            error = answer.json()["error"]
            assert (error["type"], error["param"], error["code"]) == (
                "invalid_request_error",
                "model",
                "model_not_found",
            ), error
            assert set(answer.json()) == {"error"}
        unknown_route = a.get("/v1/no-such-route")  # the router's own 404: OpenAI's shape too
        assert unknown_route.status_code == 404
        assert unknown_route.json()["error"]["code"] == "not_found"
        unauthenticated = anon.get("/v1/models")
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error"]["code"] == "invalid_api_key"


def _alias_state(custom: client.CustomObjectsApi, namespace: str) -> tuple[Any, ...]:
    obj = _alias(custom, namespace, "frigo")
    assert obj is not None
    return (obj["metadata"]["resourceVersion"], obj.get("spec"), obj.get("status"))


def test_promotion_refused_for_another_tenants_model_and_bad_input(
    tenant_api: ApiProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    other_namespace: str,
) -> None:
    _seed(custom, namespace, other_namespace)
    before = _alias_state(custom, namespace)
    with tenant_api.client("key-a") as a, tenant_api.client("key-b") as b:
        wait_for(lambda: a.get("/api/finetune/aliases/frigo").status_code == 200)
        assert a.get("/api/finetune/aliases/frigo").json()["model"] == "tiny-a"
        refused: list[tuple[httpx.Response, int]] = [
            # B names A's model, on B's alias of the same name (it would be created)...
            (b.post("/api/finetune/aliases/frigo/promote", json={"model": "tiny-b"}), 404),
            # ...and A names B's model on A's alias
            (a.post("/api/finetune/aliases/frigo/promote", json={"model": "b-model"}), 404),
            # B cannot see, hence not roll back, A's alias
            (b.post("/api/finetune/aliases/frigo/rollback"), 404),
            (b.get("/api/finetune/aliases/frigo"), 404),
            # invalid alias names, a missing model, a name no model can have
            (a.post("/api/finetune/aliases/Bad_Alias/promote", json={"model": "tiny-b"}), 422),
            (a.post(f"/api/finetune/aliases/{'x' * 64}/promote", json={"model": "tiny-b"}), 422),
            (a.post("/api/finetune/aliases/frigo/promote", json={"model": "no-such"}), 404),
            (a.post("/api/finetune/aliases/frigo/promote", json={"model": "../etc"}), 422),
            (a.post("/api/finetune/aliases/frigo/promote", json={}), 422),
        ]
        for answer, status in refused:
            assert answer.status_code == status, (answer.request.url, answer.text)
        # nothing changed: A's alias as it was, no alias for B, none of the bad name
        assert _alias_state(custom, namespace) == before
        assert _alias(custom, other_namespace, "frigo") is None
        aliases = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, ALIAS_PLURAL)
        assert [o["metadata"]["name"] for o in aliases["items"]] == ["frigo"]
        assert a.get("/api/finetune/aliases/frigo").json()["pending"] is None

        # the same request for A's own model is taken (the operator would carry it out)
        asked = a.post("/api/finetune/aliases/frigo/promote", json={"model": "tiny-b"})
        assert asked.status_code == 202, asked.text
        assert asked.json()["pending"]["model"] == "tiny-b"
        after = _alias(custom, namespace, "frigo")
        assert after is not None and after["spec"]["request"]["record"] == "ft-tiny-b"


def _cli_json(capsys: pytest.CaptureFixture[str], api: ApiProcess, *argv: str) -> Any:
    assert main(["--api-url", api.url, "--api-key", "key-a", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_models_filters_show_and_compare(
    tenant_api: ApiProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    other_namespace: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # tables wide enough for whole names
    _seed(custom, namespace, other_namespace)
    api = tenant_api
    wait_for(lambda: _cli_json(capsys, api, "models")["total"] == 4)

    def names(answer: dict[str, Any]) -> list[str]:
        return [m["name"] for m in answer["models"]]

    assert names(_cli_json(capsys, api, "models", "--base-model", "gpt2")) == ["gpt2-c"]
    assert names(_cli_json(capsys, api, "models", "--base-model", "tiny")) == [
        "tiny-d",
        "tiny-b",
        "tiny-a",
    ]
    assert names(_cli_json(capsys, api, "models", "--alias", "frigo")) == ["tiny-a"]
    assert names(_cli_json(capsys, api, "models", "--alias", "nope")) == []

    # compare: the same data (sha256, split, seed) only, best bits per byte first, any base
    ranked = _cli_json(capsys, api, "compare", "tiny-a")
    assert names(ranked) == ["tiny-b", "gpt2-c", "tiny-a"]
    assert [m["rank"] for m in ranked["models"]] == [1, 2, 3]
    assert [m["bits_per_byte"] for m in ranked["models"]] == [0.9, 1.0, 1.2]
    assert ranked["dataset"]["sha256"] == SHA
    assert _cli_json(capsys, api, "models", "compare", "gpt2-c") == ranked
    assert names(_cli_json(capsys, api, "compare", "tiny-d")) == ["tiny-d"]
    key = ["--api-url", api.url, "--api-key", "key-a"]
    assert main([*key, "compare", "tiny-a"]) == 0
    table = capsys.readouterr().out
    assert table.index("tiny-b") < table.index("gpt2-c") < table.index("tiny-a"), table
    assert "bits per byte" in table and SHA[:12] in table

    # a model's own page: lineage, metrics, files, answers
    page = _cli_json(capsys, api, "models", "show", "tiny-a")
    assert (page["job"], page["aliases"], page["base_model"]) == ("ft-tiny-a", ["frigo"], "tiny")
    assert page["dataset"]["sha256"] == SHA and page["metrics"]["bits_per_byte_after"] == 1.2
    assert page["files"] == FILES and page["manifest_sha256"] == "03" * 32
    assert main([*key, "models", "show", "tiny-a"]) == 0
    human = capsys.readouterr().out
    for line in (
        "job:             ft-tiny-a",
        "aliases:         frigo",
        "bits per byte:   2 -> 1.2",
        f"{'02' * 32}  3145728  adapter_model.safetensors",
        "  after:  Compresseur.",
    ):
        assert line in human, human

    # another tenant's model, or none: rejected (exit 2) with the API's reason
    assert main([*key, "models", "show", "b-model"]) == EXIT_REJECTED
    assert "not found" in capsys.readouterr().err
    assert main([*key, "compare", "b-model"]) == EXIT_REJECTED
    assert "not found" in capsys.readouterr().err
