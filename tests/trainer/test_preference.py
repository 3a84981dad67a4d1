"""Preference tuning (method.objective dpo): preference files are validated line by line, pairs
are tokenized like trl does, and a tiny DPO run (LoRA, CPU) makes the model prefer the chosen
answers of its own training pairs (measured before and after, independently of the trainer)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubetune_crd.spec import DatasetSpec
from kubetune_crd.trainer_contract import ExitCode
from kubetune_trainer.dataset import IGNORE
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.formats import MIN_ROWS, Row, parse_table
from kubetune_trainer.samples import sample_path

from trainer.conftest import TrainerRun, gang_env

Config = Callable[..., dict[str, Any]]
SPEC = DatasetSpec(url="data/x.jsonl")
DPO_LORA = {
    "type": "lora",
    "objective": "dpo",
    "dpo": {"beta": 0.1},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n").encode()


def pairs(n: int = MIN_ROWS) -> list[dict[str, Any]]:
    return [
        {"prompt": f"Question {i} :", "chosen": f" bonne réponse {i}", "rejected": f" non {i}"}
        for i in range(n)
    ]


def parse(data: bytes, name: str = "data/x.jsonl", spec: DatasetSpec = SPEC) -> Any:
    return parse_table(data, name, spec, preference=True)


# -- files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["frigo_preference.jsonl", "frigo_preference_chat.jsonl"])
def test_preference_samples_are_valid_pairs(name: str) -> None:
    table = parse(sample_path(name).read_bytes(), name)
    assert table.kind == "preference"
    assert len(table.rows) >= 100
    chat = "chat" in name
    assert all(row.chat == chat for row in table.rows)
    first = table.rows[0]
    if chat:
        assert first.messages[-1]["role"] == "user"
        assert first.chosen_messages != first.rejected_messages
    else:
        assert first.prompt.startswith("Question :") and first.chosen != first.rejected


def test_missing_rejected_column_is_named() -> None:
    data = jsonl([{"prompt": "q", "chosen": "a"}] * MIN_ROWS)
    with pytest.raises(
        BadInputError, match=r"missing 'rejected'; columns found: 'prompt', 'chosen'"
    ):
        parse(data)


def test_a_line_without_rejected_is_named() -> None:
    rows = pairs()
    del rows[3]["rejected"]
    with pytest.raises(BadInputError, match=r"line 4 has an empty 'rejected'"):
        parse(jsonl(rows))


def test_empty_strings_are_named_with_their_line() -> None:
    rows = pairs()
    rows[5]["chosen"] = "   "
    with pytest.raises(BadInputError, match=r"data/x.jsonl: line 6 has an empty 'chosen'"):
        parse(jsonl(rows))
    csv_data = b"prompt,chosen,rejected\n" + b"".join(
        b"q%d,a%d,%s\n" % (i, i, b"" if i == 2 else b"b") for i in range(MIN_ROWS)
    )
    with pytest.raises(BadInputError, match=r"x.csv: line 4 has an empty 'rejected'"):
        parse(csv_data, "x.csv")


def test_identical_answers_are_refused() -> None:
    rows = pairs()
    rows[7]["rejected"] = rows[7]["chosen"]
    with pytest.raises(BadInputError, match=r"line 8: 'chosen' and 'rejected' are the same"):
        parse(jsonl(rows))


def test_chat_pairs_are_checked_message_by_message() -> None:
    def chat(answer: str) -> dict[str, Any]:
        return {
            "prompt": [{"role": "user", "content": "Mon frigo chauffe."}],
            "chosen": [{"role": "assistant", "content": "Nettoyez le condenseur."}],
            "rejected": [{"role": "assistant", "content": answer}],
        }

    rows = [chat(f"Attendez {i} jours.") for i in range(MIN_ROWS)]
    table = parse(jsonl(rows))
    assert (
        table.rows[0].chat and table.rows[0].rejected_messages[0]["content"] == "Attendez 0 jours."
    )
    rows[2]["rejected"] = [{"role": "assistant", "content": ""}]
    with pytest.raises(
        BadInputError, match=r"line 3: 'rejected': message 0 has an empty 'content'"
    ):
        parse(jsonl(rows))
    rows[2]["rejected"] = [{"role": "user", "content": "x"}]
    with pytest.raises(BadInputError, match=r"line 3: 'rejected' has no assistant message"):
        parse(jsonl(rows))
    rows[2] = pairs(3)[2]
    with pytest.raises(BadInputError, match=r"line 3 mixes chat messages and plain strings"):
        parse(jsonl(rows))


def test_custom_columns_and_objective_mismatches() -> None:
    spec = DatasetSpec(url="x", prompt_column="q", chosen_column="good", rejected_column="bad")
    data = jsonl([{"q": "a?", "good": " oui", "bad": " non"}] * MIN_ROWS)
    assert parse(data, spec=spec).rows[0].chosen == " oui"
    supervised = jsonl([{"prompt": "q", "completion": "c"}] * MIN_ROWS)
    with pytest.raises(BadInputError, match=r"method.objective dpo needs the columns"):
        parse(supervised)
    with pytest.raises(BadInputError, match=r"train on it with method.objective dpo"):
        parse_table(jsonl(pairs()), "x.jsonl", SPEC)


# -- tokenization -------------------------------------------------------------------------
def test_pairs_share_the_prompt_and_learn_only_the_answers(tiny_model: Path) -> None:
    from kubetune_trainer.modeling import load_tokenizer
    from kubetune_trainer.preference import encode_pairs

    tokenizer = load_tokenizer(str(tiny_model))
    rows = [Row(1, prompt="Question : frigo ?\nRéponse :", chosen=" Le joint.", rejected=" Rien.")]
    encoded = encode_pairs(tokenizer, rows, 128)
    chosen, rejected = encoded.examples
    answer = [
        t for t, label in zip(chosen.input_ids, chosen.labels, strict=True) if label != IGNORE
    ]
    assert tokenizer.decode(answer) == " Le joint." + tokenizer.eos_token
    prompt_len = chosen.labels.index(next(label for label in chosen.labels if label != IGNORE))
    assert chosen.input_ids[:prompt_len] == rejected.input_ids[:prompt_len]
    assert tokenizer.decode(chosen.input_ids[:prompt_len]).endswith("Réponse :")

    chat = Row(
        1,
        messages=({"role": "user", "content": "frigo ?"},),
        chosen_messages=({"role": "assistant", "content": "Le joint."},),
        rejected_messages=({"role": "assistant", "content": "Rien."},),
    )
    chosen, _ = encode_pairs(tokenizer, [chat], 128).examples
    learned = tokenizer.decode(
        [t for t, lab in zip(chosen.input_ids, chosen.labels, strict=True) if lab != IGNORE]
    )
    assert "Le joint." in learned and "frigo" not in learned
    # A prompt filling maxSeqLength leaves nothing to compare: the pair is dropped.
    assert encode_pairs(tokenizer, rows, 4).dropped == 1


# -- a tiny run ---------------------------------------------------------------------------
def answer_logps(model: Any, tokenizer: Any, prompt: str, answer: str) -> float:
    """log p(answer + EOS | prompt), computed here with plain torch (not the trainer's code)."""
    import torch

    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + answer + tokenizer.eos_token)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logps = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(ids[1:])
    per_token = logps.gather(1, targets.unsqueeze(1)).squeeze(1)
    return float(per_token[len(prompt_ids) - 1 :].sum())


def preference_gaps(model: Any, tokenizer: Any, rows: list[dict[str, str]]) -> list[float]:
    """log p(chosen) - log p(rejected) of each pair."""
    return [
        answer_logps(model, tokenizer, r["prompt"], r["chosen"])
        - answer_logps(model, tokenizer, r["prompt"], r["rejected"])
        for r in rows
    ]


def test_tiny_lora_dpo_run_raises_the_chosen_over_rejected_margin(
    make_config: Config, run_trainer: Callable[..., TrainerRun], data_root: Path, tmp_path: Path
) -> None:
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lines = sample_path("frigo_preference.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    (data_root / "data" / "pairs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = [json.loads(line) for line in lines]
    config = make_config(
        dataset={"url": "data/pairs.jsonl", "validationSplit": 0.1},
        method=DPO_LORA,
        hyperparameters={"maxSteps": 12, "learningRate": 5e-3, "maxSeqLength": 128},
    )
    base_path = config["baseModel"]
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    before = preference_gaps(AutoModelForCausalLM.from_pretrained(base_path), tokenizer, rows)

    run = run_trainer(config)
    assert run.proc.returncode == 0, run.stderr()
    # trl imports datasets only now: it is quiet all the same (no progress bars).
    assert "%|" not in run.stderr() and "it/s" not in run.stderr()
    result = run.result()
    metrics = result["metrics"]
    assert metrics["evalRewardMarginBefore"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["evalRewardMarginAfter"] > metrics["evalRewardMarginBefore"]
    assert metrics["evalRewardAccuracyAfter"] > 0.5
    assert metrics["evalLossAfter"] < metrics["evalLossBefore"] == pytest.approx(0.6931, abs=1e-3)
    assert metrics.get("perplexityAfter") is None and metrics.get("bitsPerByteAfter") is None
    assert "reward margin 0.0000 -> " in result["message"]
    assert result["model"]["format"] == "peft-lora"
    progress = run.progress()
    assert [p["step"] for p in progress] == list(range(1, 13))

    model_dir = tmp_path / "models" / "tiny-ft"
    manifest = json.loads((model_dir / "kubetune-model.json").read_text())
    assert manifest["method"]["objective"] == "dpo"
    assert manifest["method"]["dpo"] == {"beta": 0.1}
    trained = AutoPeftModelForCausalLM.from_pretrained(model_dir)
    after = preference_gaps(trained, tokenizer, rows)
    # The implicit reward margin of a pair is beta x (gap after - gap before).
    margins = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(margins) / len(margins) > 1.0
    assert sum(m > 0 for m in margins) >= 0.9 * len(margins)


def test_full_dpo_on_chat_pairs_uses_a_frozen_reference(
    make_config: Config, run_trainer: Callable[..., TrainerRun], data_root: Path, tmp_path: Path
) -> None:
    lines = sample_path("frigo_preference_chat.jsonl").read_text(encoding="utf-8").splitlines()
    (data_root / "data" / "chat.jsonl").write_text("\n".join(lines[:30]) + "\n", encoding="utf-8")
    config = make_config(
        dataset={"url": "data/chat.jsonl", "validationSplit": 0.2},
        method={"type": "full", "objective": "dpo", "dpo": {"beta": 0.2}},
        hyperparameters={"maxSteps": 6, "learningRate": 5e-4, "maxSeqLength": 160},
    )
    run = run_trainer(config)
    assert run.proc.returncode == 0, run.stderr()
    metrics = run.result()["metrics"]
    assert metrics["evalRewardMarginBefore"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["evalRewardMarginAfter"] > 0.0
    assert metrics["trainRows"] == 24 and metrics["evalRows"] == 6
    assert (tmp_path / "models" / "tiny-ft" / "model.safetensors").is_file()


def test_dpo_resumes_after_sigterm_with_the_uninterrupted_losses(
    make_config: Config, start_trainer: Callable[..., TrainerRun], data_root: Path, tmp_path: Path
) -> None:
    lines = sample_path("frigo_preference.jsonl").read_text(encoding="utf-8").splitlines()
    (data_root / "data" / "pairs.jsonl").write_text("\n".join(lines[:24]) + "\n", "utf-8")
    hp = {"maxSteps": 10, "batchSize": 2, "learningRate": 5e-3, "maxSeqLength": 96, "seed": 3}

    def config(root: Path) -> dict[str, Any]:
        return make_config(
            dataset={"url": "data/pairs.jsonl"},
            method=DPO_LORA,
            hyperparameters=hp,
            checkpoint={"everySteps": 0},
            root=root,
        )

    reference = start_trainer(config(tmp_path / "ref"), tag="ref")
    assert reference.wait() == 0, reference.stderr()
    expected = {p["step"]: p["loss"] for p in reference.progress()}
    assert sorted(expected) == list(range(1, 11))

    interrupted = config(tmp_path / "cut")
    first = start_trainer(interrupted, tag="term")
    first.wait_for_step(3)
    first.kill(signal.SIGTERM)
    assert first.wait(120) == ExitCode.PREEMPTED
    stopped = max(p["step"] for p in first.progress())
    second = start_trainer(interrupted, tag="resumed")
    assert second.wait() == 0, second.stderr()
    got = {p["step"]: p["loss"] for p in second.progress()}
    assert sorted(got) == list(range(stopped + 1, 11))
    assert got == {step: expected[step] for step in got}  # bit-for-bit
    metrics, ref_metrics = second.result()["metrics"], reference.result()["metrics"]
    for key in ("evalRewardMarginBefore", "evalRewardAccuracyBefore", "evalRewardMarginAfter"):
        assert metrics[key] == ref_metrics[key], key


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "method"),
    [("ddp", DPO_LORA), ("fsdp", {"type": "full", "objective": "dpo", "dpo": {"beta": 0.1}})],
)
def test_two_ranks_of_dpo_match_one_process_with_twice_the_batch(
    make_config: Config,
    start_trainer: Callable[..., TrainerRun],
    data_root: Path,
    tmp_path: Path,
    strategy: str,
    method: dict[str, Any],
) -> None:
    """The pair loss is a mean over the step's pairs on all ranks: 2 ranks x 1 pair train on
    what 1 process x 2 pairs does (same tolerance as tests/trainer/test_distributed.py); for
    full fine-tuning the frozen reference is sharded with FSDP like the policy."""
    lines = sample_path("frigo_preference.jsonl").read_text(encoding="utf-8").splitlines()
    (data_root / "data" / "pairs.jsonl").write_text("\n".join(lines[:20]) + "\n", "utf-8")
    hp = {"maxSteps": 4, "learningRate": 2e-3, "maxSeqLength": 96, "seed": 5}

    def run(batch: int, env: dict[str, str] | None, root: Path) -> dict[str, Any]:
        config = make_config(
            dataset={"url": "data/pairs.jsonl"},
            method=method,
            hyperparameters={**hp, "batchSize": batch},
            distributed={"strategy": strategy},
            root=root,
        )
        trainer = start_trainer(config, env=env, tag=root.name)
        assert trainer.wait() == 0, trainer.stderr()
        return {"losses": {p["step"]: p["loss"] for p in trainer.progress()}, **trainer.result()}

    one = run(2, None, tmp_path / "one")
    two = run(1, gang_env(2), tmp_path / "two")
    assert f"on 2 processes ({strategy})" in two["message"]
    assert sorted(two["losses"]) == sorted(one["losses"]) == [1, 2, 3, 4]
    for step, loss in one["losses"].items():
        assert two["losses"][step] == pytest.approx(loss, rel=1e-5), step
    for key in ("evalLossAfter", "evalRewardMarginAfter", "evalRewardAccuracyAfter"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-4), key


def test_bad_preference_file_fails_the_run_with_the_line(
    make_config: Config, run_trainer: Callable[..., TrainerRun], data_root: Path
) -> None:
    rows = pairs(12)
    rows[9]["rejected"] = ""
    (data_root / "data" / "bad.jsonl").write_bytes(jsonl(rows))
    run = run_trainer(make_config(dataset={"url": "data/bad.jsonl"}, method=DPO_LORA))
    assert run.proc.returncode == ExitCode.BAD_INPUT
    result = run.result()
    assert result["outcome"] == "bad_input"
    assert "data/bad.jsonl: line 10 has an empty 'rejected'" in result["message"]
