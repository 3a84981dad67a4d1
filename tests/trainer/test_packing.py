"""Tokenisation with loss masks, packing, and that a packed row's loss equals the loss of its
examples run one by one (position-id restarts give a block-diagonal attention mask)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from kubetune_trainer.dataset import IGNORE, Example, encode_rows, split_rows
from kubetune_trainer.formats import Row
from kubetune_trainer.packing import best_fit_bins, collate, pack


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from kubetune_trainer.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model))


def test_best_fit_bins_respect_the_limit_and_use_every_example() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(500)]
    bins = best_fit_bins(lengths, 128)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    # Nearly full: best-fit wastes little.
    assert sum(lengths) / (128 * len(bins)) > 0.9


def test_seeded_best_fit_is_reproducible_and_still_fills_rows() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(500)]
    bins = best_fit_bins(lengths, 128, seed=7)
    assert bins == best_fit_bins(lengths, 128, seed=7)  # resume rebuilds the same rows
    assert bins != best_fit_bins(lengths, 128, seed=8)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    assert sum(lengths) / (128 * len(bins)) > 0.85


def test_completion_only_labels(tokenizer: Any) -> None:
    rows = [
        Row(1, prompt="Question : le frigo fuit ?\nRéponse :", completion=" Déboucher le canal.")
    ]
    enc = encode_rows(tokenizer, "prompt_completion", rows, 256)
    ex = enc.examples[0]
    learned = tokenizer.decode(
        [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    )
    assert learned == " Déboucher le canal.</s>"
    assert ex.input_ids[-1] == tokenizer.eos_token_id


def test_chat_labels_cover_assistant_turns_only(tokenizer: Any) -> None:
    messages = (
        {"role": "system", "content": "Tu es technicien."},
        {"role": "user", "content": "Mon frigo claque."},
        {"role": "assistant", "content": "Vérifiez le relais."},
        {"role": "user", "content": "Et ensuite ?"},
        {"role": "assistant", "content": "Le klixon."},
    )
    enc = encode_rows(tokenizer, "messages", [Row(1, messages=messages)], 512)
    ex = enc.examples[0]
    learned = tokenizer.decode(
        [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    )
    assert "Vérifiez le relais." in learned and "Le klixon." in learned
    assert (
        "Mon frigo" not in learned and "technicien" not in learned and "Et ensuite" not in learned
    )


def test_truncation_and_dropping(tokenizer: Any) -> None:
    long_prompt = Row(1, prompt="mot " * 200, completion=" fin")
    text = Row(2, text="bonjour " * 200)
    enc = encode_rows(tokenizer, "prompt_completion", [long_prompt], 32)
    assert enc.dropped == 1 and not enc.examples  # nothing left to learn
    enc = encode_rows(tokenizer, "text", [text], 32)
    assert enc.truncated == 1 and len(enc.examples[0].input_ids) == 32


def test_split_is_seeded_and_disjoint() -> None:
    rows = [Row(i, text=str(i)) for i in range(100)]
    train, held = split_rows(rows, 0.1, 42)
    assert len(held) == 10 and len(train) == 90
    assert {r.line for r in train}.isdisjoint({r.line for r in held})
    assert split_rows(rows, 0.1, 42) == (train, held)
    assert split_rows(rows, 0.0, 42)[1] == []


def test_pack_resets_positions_and_masks_boundaries() -> None:
    examples = [
        Example([1, 2, 3], [1, 2, 3]),
        Example([4, 5], [IGNORE, 5]),
        Example([6] * 7, [6] * 7),
    ]
    rows = pack(examples, 8)
    assert sorted(len(r) for r in rows) == [5, 7]
    five = next(r for r in rows if len(r) == 5)
    assert five.position_ids == [0, 1, 2, 0, 1]
    assert five.labels == [IGNORE, 2, 3, IGNORE, 5]
    batch = collate(rows, pad_id=0)
    assert batch.input_ids.shape == (2, 7)
    assert batch.real_tokens == 12
    assert batch.position_ids[[len(r) for r in rows].index(5)].tolist() == [0, 1, 2, 0, 1, 0, 1]
    unpacked = pack(examples, 8, enabled=False)
    assert len(unpacked) == 3


def test_packed_loss_equals_separate_losses(tiny_model: Path, tokenizer: Any) -> None:
    """Examples in one packed row do not see each other: same loss as one by one."""
    import torch
    from kubetune_crd.method import MethodSpec
    from kubetune_crd.spec import DatasetSpec
    from kubetune_trainer.formats import load_table
    from kubetune_trainer.modeling import load_model
    from kubetune_trainer.runtime import pick_device
    from kubetune_trainer.samples import sample_path
    from kubetune_trainer.train import loss_sum

    device = pick_device()
    model = load_model(str(tiny_model), MethodSpec(type="full"), device, False)
    model.eval()
    table = load_table(sample_path("frigo_training.jsonl"), "x", DatasetSpec(url="x"))
    examples = encode_rows(tokenizer, table.kind, table.rows[:12], 256).examples
    packed = pack(examples, 256)
    assert len(packed) < len(examples)
    with torch.no_grad():
        together = float(loss_sum(model, collate(packed, tokenizer.pad_token_id), device))
        apart = sum(
            float(loss_sum(model, collate(pack([e], 256), tokenizer.pad_token_id), device))
            for e in examples
        )
    assert together == pytest.approx(apart, rel=1e-4)


def test_flattened_batch_keeps_every_token_and_block() -> None:
    examples = [
        Example([1, 2, 3], [1, 2, 3]),
        Example([4, 5], [IGNORE, 5]),
        Example([6] * 7, [6] * 7),
    ]
    rows = pack(examples, 8)
    padded = collate(rows, pad_id=0)
    flat = collate(rows, pad_id=0, flatten=True)
    assert flat.input_ids.shape == (1, 12)
    assert flat.real_tokens == padded.real_tokens == 12
    assert flat.label_tokens == padded.label_tokens
    assert sorted(flat.segments[0]) == [2, 3, 7]
    # The padding is its own block.
    assert sorted(n for row in padded.segments for n in row) == [2, 2, 3, 7]
    assert all(sum(s) == padded.input_ids.shape[1] for s in padded.segments)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_packed_attention_matches_the_masked_sdpa_path(
    tiny_model: Path, tokenizer: Any, method: str
) -> None:
    """The per-example attention (CPU path, flattened batch, logits on label positions only)
    gives the loss AND gradients of transformers' own masked SDPA on the padded batch."""
    from kubetune_crd.method import MethodSpec
    from kubetune_crd.spec import DatasetSpec
    from kubetune_trainer.formats import load_table
    from kubetune_trainer.modeling import load_model, trainable_parameters
    from kubetune_trainer.runtime import pick_device
    from kubetune_trainer.samples import sample_path
    from kubetune_trainer.train import loss_sum, packed_attention_enabled

    device = pick_device()
    spec = MethodSpec(type="lora", lora={"r": 4, "alpha": 8, "dropout": 0.0})
    model = load_model(
        str(tiny_model), spec if method == "lora" else MethodSpec(type="full"), device, False
    )
    assert packed_attention_enabled(model, device)
    table = load_table(sample_path("frigo_training.jsonl"), "x", DatasetSpec(url="x"))
    examples = encode_rows(tokenizer, table.kind, table.rows[:20], 256).examples
    rows = pack(examples, 256)
    params = trainable_parameters(model)

    def run(flatten: bool, packed: bool) -> tuple[float, dict[str, Any]]:
        model.zero_grad(set_to_none=True)
        batch = collate(rows, tokenizer.pad_token_id, flatten)
        if not packed:
            batch.segments = []  # the model's own attention, with transformers' packed mask
        loss = loss_sum(model, batch, device)
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in params.items()}

    ref_loss, ref_grads = run(False, False)
    for flatten in (False, True):
        loss, grads = run(flatten, True)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        for name, grad in grads.items():
            scale = float(ref_grads[name].abs().max()) or 1.0  # LoRA A: zero (B starts at 0)
            assert float((grad - ref_grads[name]).abs().max()) / scale < 1e-4, name
    assert model.config._attn_implementation == "sdpa"  # switched on only inside the forward
