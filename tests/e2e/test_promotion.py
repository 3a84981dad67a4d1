"""The model registry and promotion loop, end to end with the real trainer on the tiny model.

Job A asks to be promoted to `frigo` (if-better: the alias has no model yet) and to answer
two prompts before and after training; job B, trained with a learning rate that wrecks the
model, is compared with A on B's own held-out split and is not promoted. The alias keeps A
and both decisions with their figures; the pointer file on the models volume names A; A's
record outlives its FineTuneJob; the comparison ranks A first. A person then promotes B and
rolls back to A through the API: the operator's publish Job moves the pointer each time.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from kubetune_cli.main import main as cli
from kubetune_crd.alias_pointer import read_pointer
from kubetune_crd.names import MODEL_MANIFEST

from e2e.stack import E2EStack, ftj_name, short_job

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

PROMPTS = ["How cold is the frigo?", "What does the frigo keep?"]


def _run(stack: E2EStack, **overrides: object) -> tuple[str, dict[str, object]]:
    body = short_job(max_steps=12, promote_to="frigo", promotion_policy="if-better", **overrides)
    job_id = stack.start_job(body)
    done = stack.wait_api_status(job_id, {"completed", "failed", "cancelled"}, 360)
    assert done["status"] == "completed", stack.diagnostics(ftj_name(job_id))
    return job_id, done


def _alias(stack: E2EStack) -> dict[str, Any]:
    resp = stack.http.get("/api/finetune/aliases/frigo")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _settled(stack: E2EStack, decisions: int) -> dict[str, Any]:
    """The alias once the operator decided its pending request."""

    def done() -> dict[str, Any] | None:
        alias = _alias(stack)
        return alias if alias["pending"] is None and len(alias["history"]) == decisions else None

    return dict(stack.wait(done, 120, f"alias frigo to hold {decisions} decisions"))


def _pointer(stack: E2EStack) -> tuple[str, int]:
    pointer = read_pointer(stack.models_dir / "aliases" / "frigo.json")
    assert pointer is not None
    return pointer.model, pointer.version


@pytest.mark.timeout(900)
def test_promote_keep_the_better_model_and_outlive_the_job(
    stack: E2EStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.start_operator()
    stack.start_api()

    a_id, a = _run(stack, learning_rate=0.002, evaluation_prompts=PROMPTS)
    a_model = str(a["model_path"]).rsplit("/", 1)[-1]
    metrics = a["metrics"]
    assert isinstance(metrics, dict), a
    assert metrics["bits_per_byte_after"] < metrics["bits_per_byte_before"], metrics
    samples = a["samples"]
    assert isinstance(samples, list) and [s["prompt"] for s in samples] == PROMPTS, a
    assert all(s["before"] is not None and s["after"] is not None for s in samples), samples
    won = a["promotion"]
    assert isinstance(won, dict) and won["promoted"] is True, a
    assert (won["alias"], won["model"], won["version"]) == ("frigo", a_model, 1), won

    alias = stack.http.get("/api/finetune/aliases/frigo").json()
    assert (alias["model"], alias["version"], len(alias["history"])) == (a_model, 1, 1), alias
    pointer = read_pointer(stack.models_dir / "aliases" / "frigo.json")
    assert pointer is not None and (pointer.model, pointer.version) == (a_model, 1), pointer

    b_id, b = _run(stack, learning_rate=1.0)
    b_model = str(b["model_path"]).rsplit("/", 1)[-1]
    lost = b["promotion"]
    assert isinstance(lost, dict) and lost["promoted"] is False, b
    assert lost["previous"] == a_model and lost["champion_bits_per_byte"] is not None, lost
    assert "if-better" in lost["reason"], lost

    alias = stack.http.get("/api/finetune/aliases/frigo").json()
    assert alias["model"] == a_model, alias
    assert [(h["model"], h["promoted"]) for h in alias["history"]] == [
        (a_model, True),
        (b_model, False),
    ], alias
    assert alias["history"][1]["challenger_bits_per_byte"] is not None, alias
    pointer = read_pointer(stack.models_dir / "aliases" / "frigo.json")
    assert pointer is not None and (pointer.model, pointer.version) == (a_model, 1), pointer
    only = stack.http.get("/api/finetune/models", params={"alias": "frigo"}).json()
    assert [m["name"] for m in only["models"]] == [a_model], only

    ranked = stack.http.get("/api/finetune/models/compare", params={"model": b_model}).json()
    assert [m["name"] for m in ranked["models"]] == [a_model, b_model], ranked

    # A's FineTuneJob goes; its record, its page and the alias stay
    stack.cluster.kubectl("delete", "ftj", ftj_name(a_id), "-n", stack.namespace, "--wait=true")
    stack.wait(
        lambda: stack.ftj(ftj_name(a_id)) is None, 60, "FineTuneJob A deleted", ftj_name(a_id)
    )
    assert a_model in [m["name"] for m in stack.models()["models"]]
    page = stack.http.get(f"/api/finetune/models/{a_model}").json()
    assert page["aliases"] == ["frigo"] and page["job"] == ftj_name(a_id), page
    assert [s["prompt"] for s in page["samples"]] == PROMPTS, page
    manifest = stack.models_dir / "models" / a_model / MODEL_MANIFEST  # its files, as the record
    assert page["files"] == json.loads(manifest.read_text())["files"], page
    assert page["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest(), page
    assert json.loads((stack.models_dir / "aliases" / "frigo.json").read_text())["model"] == a_model

    # a person promotes B, then rolls back: the pointer follows each time (A's job is gone)
    history = len(alias["history"])
    bad = [
        stack.http.post("/api/finetune/aliases/Bad_Alias/promote", json={"model": b_model}),
        stack.http.post("/api/finetune/aliases/frigo/promote", json={"model": "no-such-model"}),
        stack.http.post("/api/finetune/aliases/frigo/promote", json={"model": "../etc"}),
        stack.http.post("/api/finetune/aliases/nope/rollback"),
    ]
    assert [r.status_code for r in bad] == [422, 404, 422, 404], [r.text for r in bad]
    assert len(_alias(stack)["history"]) == history  # nothing changed
    asked = stack.http.post("/api/finetune/aliases/frigo/promote", json={"model": b_model})
    assert asked.status_code == 202 and asked.json()["pending"]["model"] == b_model, asked.text
    again = stack.http.post("/api/finetune/aliases/frigo/rollback")
    assert again.status_code == 409 and "pending" in again.text, again.text  # one at a time
    promoted = _settled(stack, history + 1)
    assert (promoted["model"], promoted["version"]) == (b_model, 2), promoted
    assert promoted["history"][-1]["policy"] == "manual", promoted
    assert _pointer(stack) == (b_model, 2)
    assert stack.http.post("/api/finetune/aliases/frigo/rollback").status_code == 202
    back = _settled(stack, history + 2)
    assert (back["model"], back["version"]) == (a_model, 3), back
    assert back["history"][-1]["reason"].startswith("rollback"), back
    assert _pointer(stack) == (a_model, 3)

    # the CLI: a rollback from A goes back to B (the model named before), and waits for it
    url = stack.api.url if stack.api else ""
    assert cli(["--api-url", url, "--json", "alias", "rollback", "frigo", "--wait"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["model"], shown["version"], shown["pending"]) == (b_model, 4, None), shown
    assert _pointer(stack) == (b_model, 4)
    assert cli(["--api-url", url, "alias", "show", "frigo"]) == 0
    human = capsys.readouterr().out
    assert f"model:    {b_model}" in human and "promoted" in human, human
    assert cli(["--api-url", url, "alias", "promote", "frigo", "no-such-model"]) == 2
    assert "not found" in capsys.readouterr().err

    assert stack.http.get("/api/finetune/aliases/nope").status_code == 404
    assert stack.http.get("/api/finetune/aliases/Not_A_Label").status_code == 404
    assert stack.http.get("/api/finetune/models/..%2Fetc").status_code == 404
    assert b_id != a_id
