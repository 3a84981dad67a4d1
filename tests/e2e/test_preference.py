"""A DPO job end to end: the original API's `objective: dpo` on the sample preference pairs,
run by the operator with the real trainer on the tiny model, reaches Succeeded with the reward
figures in its status, reads back as `method.type: dpo` on the OpenAI-compatible route, and
stores a LoRA adapter that loads."""

from __future__ import annotations

import json

import pytest

from e2e.stack import E2EStack, check_model_loads

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]


@pytest.mark.timeout(480)
def test_dpo_job_succeeds_with_its_reward_figures(stack: E2EStack) -> None:
    stack.start_operator()
    stack.start_api()
    body = {
        "model": "tiny",
        "dataset_url": "data/frigo_preference.jsonl",
        "objective": "dpo",
        "dpo_beta": 0.2,
        "batch_size": 2,
        "learning_rate": 0.005,
        # kept short for a 2-core machine
        "max_steps": 6,
        "max_seq_length": 96,
        "logging_steps": 1,
    }
    resp = stack.http.post("/api/finetune/start", json=body)
    assert resp.status_code == 202, resp.text
    config = resp.json()["config"]
    assert (config["objective"], config["dpo_beta"]) == ("dpo", 0.2), config
    job_id = resp.json()["job_id"]
    name = job_id.replace("_", "-")
    status = stack.wait_phase(name, ("Succeeded", "Failed", "Cancelled"), 420)
    assert status["phase"] == "Succeeded", stack.diagnostics(name)
    metrics = status["metrics"]
    assert metrics["evalRewardMarginBefore"] == pytest.approx(0.0, abs=1e-6), metrics
    assert metrics["evalRewardMarginAfter"] > metrics["evalRewardMarginBefore"], metrics
    assert metrics["evalRewardAccuracyAfter"] > 0.5, metrics

    answer = stack.http.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert answer["status"] == "succeeded" and answer["method"]["type"] == "dpo", answer
    model_name = answer["fine_tuned_model"]
    model_dir = stack.models_dir / "models" / model_name
    stored = json.loads((model_dir / "kubetune-model.json").read_text())
    assert stored["method"]["objective"] == "dpo" and stored["format"] == "peft-lora", stored
    assert "adapter" in check_model_loads(model_dir, stack.tiny_dir)
