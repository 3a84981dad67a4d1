"""The GPU memory estimate of the CPU pre-flight (pure arithmetic on the model's shape)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from kubetune_trainer.memory_estimate import (
    GIB,
    OVERHEAD_BYTES,
    ModelShape,
    RunShape,
    does_not_fit_message,
    estimate_memory,
    suggestions,
)

# Llama-2-7B's config: 6.74e9 parameters, 4096 hidden, 32 layers, 11008 MLP, 32000 tokens.
LLAMA_7B = ModelShape(
    parameters=6_738_415_616,
    hidden_size=4096,
    layers=32,
    intermediate_size=11008,
    vocab_size=32000,
    kv_size=4096,
)
FULL = RunShape(
    method="full", lora_rank=16, batch_size=4, seq_len=1024, gradient_checkpointing=False
)
LORA = dataclasses.replace(FULL, method="lora")


def test_model_shape_from_a_config_without_weights() -> None:
    llama = SimpleNamespace(
        hidden_size=4096,
        num_hidden_layers=32,
        intermediate_size=11008,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
    )
    shape = ModelShape.from_config(llama, 7)
    assert (shape.parameters, shape.kv_size, shape.layers) == (7, 1024, 32)
    gpt2 = SimpleNamespace(n_embd=768, n_layer=12, n_head=12, n_inner=None, vocab_size=50257)
    small = ModelShape.from_config(gpt2, 124_000_000)
    assert (small.hidden_size, small.intermediate_size, small.kv_size) == (768, 3072, 768)


def test_full_fine_tuning_needs_16_bytes_per_parameter_plus_activations() -> None:
    est = estimate_memory(LLAMA_7B, FULL)
    p = LLAMA_7B.parameters
    assert (est.weights, est.gradients, est.optimizer) == (4 * p, 4 * p, 8 * p)
    tokens = 4 * 1024
    assert est.activations == tokens * 4096 * 34 * 32  # bf16: 34 bytes per token-unit-layer
    assert est.logits == 2 * tokens * 32000 * 4
    assert est.overhead == OVERHEAD_BYTES
    assert est.total == sum(
        (est.weights, est.gradients, est.optimizer, est.activations, est.logits, est.overhead)
    )
    assert 100 < est.total_gib < 150  # the well-known ~16 bytes/param: ~100 GiB + activations


def test_lora_keeps_a_bf16_base_and_trains_only_the_adapters() -> None:
    est = estimate_memory(LLAMA_7B, LORA)
    t = LLAMA_7B.lora_parameters(16)
    assert t == 32 * 16 * (9 * 4096 + 2 * 4096 + 3 * 11008)  # ~40M: q k v o gate up down
    assert est.weights == 2 * LLAMA_7B.parameters + 4 * t
    assert (est.gradients, est.optimizer) == (4 * t, 8 * t)
    assert est.total_gib < estimate_memory(LLAMA_7B, FULL).total_gib / 3
    cpu = estimate_memory(LLAMA_7B, dataclasses.replace(LORA, bf16=False))
    assert cpu.weights == 4 * LLAMA_7B.parameters + 4 * t and cpu.activations == 2 * est.activations


def test_gradient_checkpointing_keeps_one_input_per_layer() -> None:
    plain = estimate_memory(LLAMA_7B, LORA)
    ckpt = estimate_memory(LLAMA_7B, dataclasses.replace(LORA, gradient_checkpointing=True))
    tokens = 4 * 1024
    assert ckpt.activations == tokens * 4096 * 32 * 2 + plain.activations // 32
    assert ckpt.activations < plain.activations / 10
    assert ckpt.weights == plain.weights  # nothing else changes


def test_activations_scale_with_batch_and_sequence() -> None:
    base = estimate_memory(LLAMA_7B, LORA).activations
    double_batch = dataclasses.replace(LORA, batch_size=8)
    double_seq = dataclasses.replace(LORA, seq_len=2048)
    assert estimate_memory(LLAMA_7B, double_batch).activations == 2 * base
    assert estimate_memory(LLAMA_7B, double_seq).activations == 2 * base


def test_fsdp_shards_weights_gradients_and_optimizer() -> None:
    one = estimate_memory(LLAMA_7B, FULL)
    eight = estimate_memory(LLAMA_7B, dataclasses.replace(FULL, world_size=8, sharded=True))
    assert eight.weights == one.weights // 8 and eight.optimizer == one.optimizer // 8
    assert eight.activations == one.activations  # each process has its own batch
    ddp = estimate_memory(LLAMA_7B, dataclasses.replace(FULL, world_size=8))
    assert ddp.total == one.total  # a full replica per process


def test_a_run_that_clearly_cannot_fit_is_refused_with_what_would() -> None:
    message = does_not_fit_message(LLAMA_7B, FULL, 80)
    assert message is not None
    assert "GiB of GPU memory per process" in message and "a GPU has 80 GiB" in message
    assert "method lora instead of full" in message
    assert "distributed.strategy fsdp" in message
    ideas = suggestions(LLAMA_7B, FULL, 80)
    for idea in ideas:  # each suggestion's own estimate fits
        assert float(idea.rsplit("~", 1)[1].split()[0]) <= 80
    gpus = next(i for i in ideas if "GPUs" in i)
    world = int(gpus.split()[0])
    sharded = dataclasses.replace(FULL, world_size=world, sharded=True)
    assert estimate_memory(LLAMA_7B, sharded).total_gib <= 80
    fewer = dataclasses.replace(FULL, world_size=world - 1, sharded=True)
    assert estimate_memory(LLAMA_7B, fewer).total_gib > 80  # the smallest count that fits


def test_smaller_batch_and_checkpointing_are_suggested_for_activations() -> None:
    big = dataclasses.replace(LORA, batch_size=8, seq_len=2048)
    need = estimate_memory(LLAMA_7B, big).total_gib
    assert need > 40 * 1.2
    ideas = suggestions(LLAMA_7B, big, 40)
    assert any(i.startswith("hyperparameters.gradientCheckpointing: true") for i in ideas)
    batch = next(i for i in ideas if i.startswith("hyperparameters.batchSize"))
    assert "gradientAccumulationSteps x" in batch


@pytest.mark.parametrize("gpu_gib", [80.0, 24.0])
def test_a_run_that_fits_or_nearly_fits_is_not_refused(gpu_gib: float) -> None:
    assert does_not_fit_message(LLAMA_7B, LORA, gpu_gib) is None or gpu_gib == 24.0
    need = estimate_memory(LLAMA_7B, LORA).total / GIB
    # Within the 20% margin the estimate's error allows: not refused.
    assert does_not_fit_message(LLAMA_7B, LORA, need / 1.19) is None
    assert does_not_fit_message(LLAMA_7B, LORA, need / 1.21) is not None


def test_nothing_fits_says_so() -> None:
    message = does_not_fit_message(LLAMA_7B, LORA, 1.0)
    assert message is not None and "no single change fits" in message


def test_qlora_keeps_the_base_in_four_bits_and_is_suggested_when_lora_does_not_fit() -> None:
    lora, qlora = LORA, dataclasses.replace(LORA, method="qlora")
    p = LLAMA_7B.parameters
    t = LLAMA_7B.lora_parameters(LORA.lora_rank)
    assert estimate_memory(LLAMA_7B, lora).weights == 2 * p + 4 * t
    assert estimate_memory(LLAMA_7B, qlora).weights == p // 2 + 4 * t
    assert estimate_memory(LLAMA_7B, qlora).total < estimate_memory(LLAMA_7B, lora).total
    # A GPU between the two estimates: QLoRA is the one change named that fits.
    gpu = (
        estimate_memory(LLAMA_7B, qlora).total_gib + estimate_memory(LLAMA_7B, lora).total_gib
    ) / 2
    tips = suggestions(LLAMA_7B, dataclasses.replace(lora, gradient_checkpointing=True), gpu)
    assert any(tip.startswith("method qlora instead of lora") for tip in tips), tips
