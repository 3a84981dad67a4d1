"""Bits per byte, the champion on the challenger's held-out split, and the before/after answers
(kubetune_trainer.evaluation), with real trainer runs of two tiny models that tokenize the
same text differently: a Llama-shaped one (4096 tokens, chat template) and a GPT-2-shaped one
(512 tokens, `<|endoftext|>`, no template)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubetune_crd.names import MODEL_MANIFEST
from kubetune_crd.promotion import decide
from kubetune_crd.status import Metrics, Sample
from kubetune_crd.trainer_contract import TrainerResult
from kubetune_trainer.dataset import Example
from kubetune_trainer.evaluation import (
    SAMPLES_BUDGET_BYTES,
    HeldOutText,
    answer,
    bits_per_byte,
    fit_samples,
    held_out_text,
)

from trainer.conftest import TrainerRun

PROMPTS = ["Frigo fait bruit fort", "Mon congélateur ne refroidit plus. Que faire ?"]
MAX_NEW = 8


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kubetune_trainer.tiny_model import build_tiny_gpt2

    # Few merges: its tokens are about a byte, so even an untrained model's loss per token
    # (ln 300) is below what a Llama token (about 3 bytes) costs a partly trained one.
    return build_tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "tiny-gpt2", vocab_size=300)


# -- pure ---------------------------------------------------------------------------------------
def test_bits_per_byte_is_summed_nll_over_ln2_over_bytes() -> None:
    # 100 tokens at 2 nats each spell 400 bytes: 200 nats = 288.539 bits -> 0.7213 bits/byte.
    assert bits_per_byte(2.0, HeldOutText(100, 400)) == pytest.approx(200 / math.log(2) / 400)
    assert bits_per_byte(None, HeldOutText(100, 400)) is None
    assert bits_per_byte(2.0, HeldOutText(0, 0)) is None
    assert bits_per_byte(math.nan, HeldOutText(10, 10)) == math.inf  # diverged


def test_held_out_bytes_are_the_scored_text(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt, completion = "Question : frigo ?\nRéponse :", " Cause probable : le thermostat."
    ids = tok(prompt + completion)["input_ids"]
    n_prompt = len(tok(prompt)["input_ids"])
    labels = [-100] * n_prompt + ids[n_prompt:]
    text = held_out_text(tok, [Example(ids, labels)])
    assert text.scored_tokens == len(ids) - n_prompt
    scored = tok.decode(ids[n_prompt:])
    assert text.text_bytes == len(scored.encode("utf-8"))
    assert completion.strip() in scored  # the completion's bytes, accents counted as 2


def test_fit_samples_keeps_the_termination_message_under_4_kib() -> None:
    items = [Sample(prompt="é" * 2000, before="b" * 2000, after="a" * 2000) for _ in range(8)]
    fitted = fit_samples(items)
    assert len(fitted) == 8
    body = json.dumps([s.to_k8s() for s in fitted], ensure_ascii=False).encode()
    assert len(body) <= SAMPLES_BUDGET_BYTES
    assert all(s.prompt.endswith("…") and s.after and s.after.endswith("…") for s in fitted)
    result = TrainerResult(
        outcome="succeeded", message="m" * 300, metrics=Metrics(), samples=fitted
    )
    assert len(result.model_dump_json(by_alias=True, exclude_none=True).encode()) < 4096
    short = [Sample(prompt="q", before="b", after="a")]
    assert fit_samples(short) == short


# -- trainer runs -------------------------------------------------------------------------------
def _train(
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    base: Path,
    name: str,
    method: str,
    steps: int,
    lr: float,
    evaluation: dict[str, Any] | None = None,
    **extra: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    config = make_config(
        method={"type": method},
        hyperparameters={
            "maxSteps": steps,
            "learningRate": lr,
            "batchSize": 8,
            "maxSeqLength": 1024,
        },
        name=name,
        job=f"job-{name}",
        baseModel=str(base),
        baseModelAlias=None,
        **extra,
    )
    if evaluation is not None:
        config["spec"]["evaluation"] = evaluation
    run = run_trainer(config)
    assert run.proc.returncode == 0, run.stderr()[-3000:]
    result = run.result()
    manifest = json.loads((Path(config["outputDir"]) / name / MODEL_MANIFEST).read_text())
    return result, manifest


def _naive_bits_per_byte(model_dir: Path, base: Path | None, data_root: Path) -> float:
    """The definition, computed another way: each held-out row on its own through the model's
    own loss (labels on the completion), NLL summed, over the completion text's UTF-8 bytes
    (plus the end-of-text token, which the trainer scores and which spells no bytes)."""
    import torch
    from kubetune_crd.spec import DatasetSpec
    from kubetune_trainer.dataset import split_rows
    from kubetune_trainer.formats import load_table
    from transformers import AutoModelForCausalLM, AutoTokenizer

    table = load_table(
        data_root / "data/frigo_training.csv",
        "data/frigo_training.csv",
        DatasetSpec(url="data/frigo_training.csv"),
    )
    _, held = split_rows(table.rows, 0.1, 42)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if base is not None:
        from peft import PeftModel

        model: Any = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base), model_dir
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    nats, size = 0.0, 0
    with torch.no_grad():
        for row in held:
            n_prompt = len(tok(row.prompt)["input_ids"])
            ids = tok(row.prompt + row.completion)["input_ids"] + [tok.eos_token_id]
            labels = [-100] * n_prompt + ids[n_prompt:]
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            nats += float(out.loss) * (len(ids) - n_prompt)
            size += len(tok.decode(ids[n_prompt:], skip_special_tokens=True).encode("utf-8"))
    return nats / math.log(2) / size


@pytest.mark.slow
def test_models_with_different_tokenizers_rank_by_bits_per_byte(
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    tiny_model: Path,
    tiny_gpt2: Path,
    data_root: Path,
    tmp_path: Path,
) -> None:
    """The GPT-2-shaped model (barely trained) and the Llama-shaped one (trained) on the same
    data: the byte-level-ish GPT-2 tokens are short, so its loss per token looks good; per
    byte of the same held-out text the trained Llama predicts better. The trainer's figure is
    the definition computed another way, and a champion evaluated by a challenger with
    another tokenizer gets the figure its own run reported (same text, same split)."""
    gpt2, gpt2_manifest = _train(make_config, run_trainer, tiny_gpt2, "g", "full", 1, 1e-5)
    llama, llama_manifest = _train(
        make_config,
        run_trainer,
        tiny_model,
        "l",
        "lora",
        8,
        3e-3,
        champion={"name": "g", "path": str(tmp_path / "models" / "g"), "format": "safetensors"},
    )
    gm, lm = gpt2["metrics"], llama["metrics"]
    for metrics in (gm, lm):
        assert metrics["bitsPerByteBefore"] > 0 and metrics["bitsPerByteAfter"] > 0
    # Both score the same held-out text (the tokenizers decode it back to the same bytes).
    assert abs(gm["evalBytes"] - lm["evalBytes"]) <= 0.02 * lm["evalBytes"]
    assert lm["bitsPerByteAfter"] < gm["bitsPerByteAfter"]
    assert lm["evalLossAfter"] > gm["evalLossAfter"]  # what eval loss alone would rank wrong
    # The champion (GPT-2) scored by the Llama challenger on the challenger's split.
    assert lm["championBitsPerByte"] == pytest.approx(gm["bitsPerByteAfter"], rel=1e-3)
    assert decide("if-better", lm["bitsPerByteAfter"], lm["championBitsPerByte"])[0] is True
    assert llama_manifest["metrics"]["championBitsPerByte"] == lm["championBitsPerByte"]
    assert gpt2_manifest["evaluation"] == {"validationSplit": 0.1, "seed": 42, "evalRows": 24}
    naive_g = _naive_bits_per_byte(tmp_path / "models" / "g", None, data_root)
    naive_l = _naive_bits_per_byte(tmp_path / "models" / "l", tiny_model, data_root)
    assert gm["bitsPerByteAfter"] == pytest.approx(naive_g, rel=0.02)
    assert lm["bitsPerByteAfter"] == pytest.approx(naive_l, rel=0.02)


@pytest.mark.slow
def test_prompts_are_answered_before_and_after_and_the_champion_is_scored(
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    evaluation = {"prompts": PROMPTS, "maxNewTokens": MAX_NEW}

    first, first_manifest = _train(
        make_config, run_trainer, tiny_model, "a", "lora", 4, 1e-3, evaluation=evaluation
    )
    # LoRA: the base answers are the base model's own greedy answers.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    base_answers = answer(
        AutoModelForCausalLM.from_pretrained(tiny_model), tok, PROMPTS, MAX_NEW, 1024
    )
    samples = first["samples"]
    assert [s["prompt"] for s in samples] == PROMPTS
    assert [s["before"] for s in samples] == base_answers
    # The answers after are the stored model's own, and at most MAX_NEW tokens long.
    from peft import PeftModel

    trained = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model), tmp_path / "models" / "a"
    )
    assert [s["after"] for s in samples] == answer(trained, tok, PROMPTS, MAX_NEW, 1024)
    longest = max(len(tok.decode([i])) for i in range(len(tok)))
    assert all(0 < len(s["after"]) <= MAX_NEW * longest for s in samples)
    assert first_manifest["samples"] == samples
    # A second model on the same data, the first as champion: its figure is the first's own.
    second, _ = _train(
        make_config,
        run_trainer,
        tiny_model,
        "b",
        "full",
        2,
        1e-4,
        evaluation=evaluation,
        champion={"name": "a", "path": str(tmp_path / "models" / "a"), "format": "peft-lora"},
    )
    m1, m2 = first["metrics"], second["metrics"]
    assert m2["championBitsPerByte"] == pytest.approx(m1["bitsPerByteAfter"], rel=1e-4)
    assert m2["evalBytes"] == m1["evalBytes"]
    # Full fine-tuning answers "before" with the base model before training.
    assert [s["before"] for s in second["samples"]] == base_answers
    # A champion that cannot be loaded is reported, the run succeeds.
    third, _ = _train(
        make_config,
        run_trainer,
        tiny_model,
        "c",
        "lora",
        1,
        1e-4,
        champion={"name": "gone", "path": str(tmp_path / "nowhere"), "format": "peft-lora"},
    )
    assert "championBitsPerByte" not in third["metrics"]
    assert "current model gone could not be evaluated" in third["message"]
