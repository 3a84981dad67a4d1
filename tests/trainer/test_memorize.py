"""60 steps on one repeated sentence make the tiny model reproduce it (the whole path works:
data, packing, loss, optimizer, save, reload, generate)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.conftest import TrainerRun

Config = Callable[..., dict[str, Any]]

SENTENCE = "Le compresseur ne démarre plus : remplacez le relais de démarrage et le klixon."


def test_sixty_steps_on_one_sentence_reproduce_it(
    make_config: Config, run_trainer: Callable[..., TrainerRun], data_root: Path, tmp_path: Path
) -> None:
    import csv

    with (data_root / "data" / "one.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([[SENTENCE]] * 40)
    config = make_config(
        dataset={"url": "data/one.csv"},
        hyperparameters={
            "maxSteps": 60,
            "learningRate": 3e-3,
            "batchSize": 2,
            "maxSeqLength": 64,
            "loggingSteps": 20,
        },
    )
    run = run_trainer(config)
    assert run.proc.returncode == 0, run.stderr()
    assert run.result()["metrics"]["evalLossAfter"] < 0.1

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tmp_path / "models" / "tiny-ft"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = "Le compresseur"
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=40, do_sample=False, eos_token_id=tokenizer.eos_token_id
        )
    text = tokenizer.decode(out[0], skip_special_tokens=True)
    assert text == SENTENCE
