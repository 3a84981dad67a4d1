"""The seed's flow, end to end, with the real trainer on the tiny model.

Through HTTP (`POST /api/finetune/start`, status until completed, `/api/finetune/models`)
and through `kubectl apply` of the sample FineTuneJob (manifests/samples); in both cases
the stored model directory loads with transformers (and peft for the LoRA adapter).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.stack import REPO, E2EStack, check_model_loads, parse_events

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

SAMPLE = REPO / "manifests" / "samples" / "tiny-finetunejob.yaml"


@pytest.mark.timeout(420)
def test_seed_flow_over_http(stack: E2EStack) -> None:
    """info, start (the seed's request on the sample dataset, kept short), status through
    running until completed, models, logs; the model loads (adapter, and merged copy)."""
    stack.start_operator()
    stack.start_api()
    info = stack.http.get("/api/finetune/info").json()
    assert info["available"] is True and "tiny" in info["supported_models"], info
    body = {
        # the seed's fields
        "model": "tiny",
        "dataset_url": "data/frigo_training.csv",
        "epochs": 1,
        "batch_size": 2,
        "learning_rate": 0.001,
        # kept short for a 2-core machine; the merged copy proves merge_and_unload
        "max_steps": 8,
        "max_seq_length": 64,
        "logging_steps": 1,
        "merge_adapter": True,
    }
    resp = stack.http.post("/api/finetune/start", json=body)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    model_name = resp.json()["config"]["output"]["model_name"]
    name = job_id.replace("_", "-")
    done = stack.wait_api_status(job_id, {"completed", "failed", "cancelled"}, 300, name=name)
    assert done["status"] == "completed", stack.diagnostics(name)
    assert done["progress"] == 1.0 and done["model_path"] == f"models/{model_name}", done
    assert done["step"] == done["total_steps"] == 8, done
    assert (done["metrics"] or {}).get("eval_loss_after") is not None, done
    assert "running" in stack.statuses_seen[job_id], stack.statuses_seen[job_id]
    # The CPU pre-flight ran the real trainer's --validate-only first; its report stays.
    preflight = stack.ftj_status(name)["preflight"]
    assert preflight["outcome"] == "Passed" and preflight["rows"] == 240, preflight
    assert preflight["totalSteps"] == 8 and preflight["device"] == "cpu", preflight
    assert preflight["parameters"] > 1_000_000 and preflight["etaSeconds"] > 0, preflight
    print(f"\npre-flight (real trainer, tiny model) ran {preflight['durationSeconds']:.0f}s")

    models = stack.models()
    assert models["total"] == 1, models
    entry = models["models"][0]
    assert (entry["name"], entry["base_model"], entry["latest"]) == (model_name, "tiny", True)
    assert entry["path"] == f"models/{model_name}"
    assert entry["size_mb"] >= 1, entry

    logs = stack.http.get(f"/api/finetune/logs/{job_id}")
    assert logs.status_code == 200 and '"event":"progress"' in logs.text, logs.text[-2000:]

    model_dir = stack.models_dir / "models" / model_name
    assert stack.model_dirs() == [model_name]
    loaded = check_model_loads(model_dir, stack.tiny_dir)
    assert {"adapter", "merged"} <= set(loaded), loaded


@pytest.mark.timeout(420)
def test_seed_flow_with_kubectl_apply(stack: E2EStack, tmp_path: Path) -> None:
    """`kubectl apply -f` of the sample FineTuneJob (its namespace swapped for the test's):
    Succeeded, listed by the API, the LoRA adapter loads on the base with peft."""
    stack.start_operator()
    stack.start_api()
    manifest = yaml.safe_load(SAMPLE.read_text())
    manifest["metadata"]["namespace"] = stack.namespace
    name = manifest["metadata"]["name"]
    path = tmp_path / "finetunejob.yaml"
    path.write_text(yaml.safe_dump(manifest))
    applied = stack.cluster.kubectl("apply", "-f", str(path), check=False)
    assert applied.returncode == 0, applied.stderr
    assert f"finetunejob.kubetune.io/{name} created" in applied.stdout, applied.stdout

    status = stack.wait_phase(name, ("Succeeded", "Failed", "Cancelled"), 300)
    assert status["phase"] == "Succeeded", stack.diagnostics(name)
    model_name = f"tiny-finetuned-{name}"  # the default name (no output.modelName)
    assert status["model"]["path"] == f"models/{model_name}", status
    assert status["model"]["uri"] == f"pvc://kubetune-models/models/{model_name}", status
    assert status["attempts"] == 1 and status["jobName"] == name, status
    total = manifest["spec"]["hyperparameters"]["maxSteps"]
    assert status["progress"]["fraction"] == 1.0, status
    steps = [
        int(e["step"])
        for text in stack.trainer_logs(name).values()
        for e in parse_events(text)
        if e["event"] == "progress"
    ]
    assert steps and max(steps) == total, steps

    printed = stack.cluster.kubectl("get", "ftj", name, "-n", stack.namespace, check=False)
    assert "Succeeded" in printed.stdout, printed.stdout + printed.stderr

    # the API lists models of FineTuneJobs made with kubectl too
    def listed() -> dict[str, Any] | None:
        models = stack.models()
        return models if models["total"] == 1 else None

    models = stack.wait(listed, 30, "the model in /api/finetune/models", name=name)
    entry = models["models"][0]
    assert (entry["name"], entry["base_model"], entry["path"]) == (
        model_name,
        "tiny",
        f"models/{model_name}",
    )
    model_dir = stack.models_dir / "models" / model_name
    stored = json.loads((model_dir / "kubetune-model.json").read_text())
    assert stored["format"] == "peft-lora" and stored["job"]["name"] == name, stored
    loaded = check_model_loads(model_dir, stack.tiny_dir)
    assert "adapter" in loaded, loaded
