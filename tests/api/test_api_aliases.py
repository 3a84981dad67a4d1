"""`GET /api/finetune/aliases` and the models list's figures against the real cluster: the
tenant's aliases only (another tenant's are not listed), each with its current model and last
decision; a model whose job was deleted keeps its figures (read from its registry record).

The registry objects are written here as the operator writes them (records with a spec,
aliases with a status through the status subresource): no operator runs in these tests.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubetune_crd.resource import GROUP, VERSION
from support.registry_records import finetuned_model_record

from api.api_proc import ApiProcess
from api.conftest import TENANT_KEYS

pytestmark = pytest.mark.cluster


def create_alias(
    custom: client.CustomObjectsApi, namespace: str, alias: str, status: dict[str, Any]
) -> None:
    """A ModelAlias with the status the operator would have written."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelAlias",
        "metadata": {"name": alias},
        "spec": {},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelaliases", body)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "modelaliases", alias, {"status": status}
    )


def promoted(alias: str, model: str, version: int) -> dict[str, Any]:
    return {
        "current": {"model": model, "path": f"models/{model}", "version": version},
        "history": [
            {"alias": alias, "policy": "always", "promoted": True, "model": model,
             "version": version, "time": "2026-12-04T10:05:00Z"},
            {"alias": alias, "policy": "if-better", "promoted": False, "model": "worse",
             "reason": "not better", "challengerBitsPerByte": 2.5, "championBitsPerByte": 1.5},
        ],
    }  # fmt: skip


def test_aliases_list_is_the_tenants_with_their_last_decision(
    tenant_api: ApiProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    other_namespace: str,
) -> None:
    create_alias(custom, namespace, "frigo", promoted("frigo", "frigo-a", 2))
    create_alias(custom, namespace, "canary", {})
    create_alias(custom, other_namespace, "theirs", promoted("theirs", "their-model", 1))
    key_a, key_b = TENANT_KEYS
    with tenant_api.client(key_a) as http:
        listed = http.get("/api/finetune/aliases")
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["total"] == 2
        assert [a["alias"] for a in body["aliases"]] == ["canary", "frigo"]
        canary, frigo = body["aliases"]
        assert (canary["model"], canary["last_decision"]) == (None, None)
        assert (frigo["model"], frigo["path"], frigo["version"]) == ("frigo-a", "models/frigo-a", 2)
        last = frigo["last_decision"]
        assert (last["model"], last["promoted"], last["reason"]) == ("worse", False, "not better")
        assert last["champion_bits_per_byte"] == 1.5
        assert "history" not in frigo
        # the summary agrees with the alias's own page
        one = http.get("/api/finetune/aliases/frigo").json()
        assert {k: one[k] for k in frigo} == frigo and len(one["history"]) == 2
        assert http.get("/api/finetune/aliases/theirs").status_code == 404
    with tenant_api.client(key_b) as http:
        theirs = http.get("/api/finetune/aliases").json()
        assert [a["alias"] for a in theirs["aliases"]] == ["theirs"]
    with tenant_api.client() as http:
        assert http.get("/api/finetune/aliases").status_code == 401
    with tenant_api.client("not-a-key") as http:
        assert http.get("/api/finetune/aliases").status_code == 401


def test_a_model_whose_job_is_gone_keeps_its_figures(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    metrics = {"evalLossBefore": 2.5, "evalLossAfter": 1.25, "bitsPerByteAfter": 0.75}
    record = finetuned_model_record(
        "frigo-a", job="ft-20261204-100000-abcdef", metrics=metrics, size_bytes=5 * 1024 * 1024
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "finetunedmodels", record)
    with api.client() as http:
        assert http.get("/api/finetune/jobs").json()["total"] == 0  # no job left
        [entry] = http.get("/api/finetune/models").json()["models"]
    original = {k: entry[k] for k in ("name", "base_model", "size_mb", "latest", "path")}
    assert original == {
        "name": "frigo-a",
        "base_model": "tiny",
        "size_mb": 5,
        "latest": True,
        "path": "models/frigo-a",
    }
    assert entry["job_id"] == "ft_20261204_100000_abcdef"
    assert entry["metrics"] == {
        "eval_loss_before": 2.5,
        "eval_loss_after": 1.25,
        "bits_per_byte_after": 0.75,
    }
