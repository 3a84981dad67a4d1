"""The GPU fast paths (fast_paths.py) compute the trainer's own loss and gradients.

On CPU: the summed loss the model's forward computes (`labels` + `num_items_in_batch=1`, the
convention Liger's fused loss follows), FlexAttention's document masking over packed rows,
and torch.compile of the decoder layers, each against the reference path (`loss_sum` on the
padded packed batch, transformers' masked SDPA). Liger itself needs CUDA (Triton kernels):
skipped on CPU with the reason. The CPU default path switches nothing on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from kubetune_crd.method import MethodSpec
from kubetune_crd.spec import DatasetSpec
from kubetune_trainer import fast_paths
from kubetune_trainer.dataset import encode_rows
from kubetune_trainer.formats import load_table
from kubetune_trainer.modeling import load_model, load_tokenizer, trainable_parameters
from kubetune_trainer.packing import Batch, collate, pack
from kubetune_trainer.runtime import pick_device
from kubetune_trainer.samples import sample_path
from kubetune_trainer.train import loss_sum

NO_CUDA = "Liger's Triton kernels and the GPU fast paths need a CUDA GPU"
LORA = MethodSpec.model_validate({"type": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}})

Grads = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def batch(tiny_model: Path) -> Batch:
    """Two padded rows of packed examples (the GPU layout: not flattened), no segments."""
    tokenizer = load_tokenizer(str(tiny_model))
    table = load_table(sample_path("frigo_training.jsonl"), "x", DatasetSpec(url="x"))
    examples = encode_rows(tokenizer, table.kind, table.rows[:16], 192).examples
    rows = pack(examples, 192)[:2]
    out = collate(rows, tokenizer.pad_token_id)
    out.segments = []  # the model's own attention, as on a GPU
    return out


def _loss_and_grads(model: Any, compute: Callable[[], torch.Tensor]) -> tuple[float, Grads]:
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    params = trainable_parameters(model)
    return float(loss.detach()), {
        n: p.grad.clone() for n, p in params.items() if p.grad is not None
    }


def _assert_same(got: tuple[float, Grads], ref: tuple[float, Grads], tol: float) -> None:
    assert got[0] == pytest.approx(ref[0], rel=tol)
    assert got[1].keys() == ref[1].keys() and ref[1]
    for name, grad in got[1].items():
        scale = float(ref[1][name].abs().max()) or 1.0  # LoRA A: zero (B starts at 0)
        assert float((grad - ref[1][name]).abs().max()) / scale < 10 * tol, name


def _model_loss(model: Any, batch: Batch) -> torch.Tensor:
    return fast_paths.model_loss(model, batch.input_ids, batch.position_ids, batch.labels)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_model_computed_summed_loss_is_the_trainers_loss(
    tiny_model: Path, batch: Batch, method: str
) -> None:
    """`labels` + `num_items_in_batch=1` (what the fused-loss path asks of the model) gives
    loss_sum's summed loss and its gradients."""
    device = pick_device()
    model = load_model(
        str(tiny_model), LORA if method == "lora" else MethodSpec(type="full"), device, False
    )
    ref = _loss_and_grads(model, lambda: loss_sum(model, batch, device))
    assert ref[0] > batch.label_tokens  # a sum over tokens, not a mean
    _assert_same(_loss_and_grads(model, lambda: _model_loss(model, batch)), ref, 1e-5)


def test_flex_attention_document_masking_matches_masked_sdpa(
    tiny_model: Path, batch: Batch
) -> None:
    """FlexAttention over packed rows (a block mask from the position restarts) gives the
    masked SDPA path's loss (torch 2.13 has no FlexAttention backward on CPU: the gradients
    are compared on a GPU, below)."""
    device = pick_device()
    model = load_model(str(tiny_model), MethodSpec(type="full"), device, False)
    model.eval()
    with torch.no_grad():
        ref = float(loss_sum(model, batch, device))
        model.set_attn_implementation("flex_attention")
        assert model.config._attn_implementation == "flex_attention"
        got = float(loss_sum(model, batch, device))
    assert got == pytest.approx(ref, rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_flex_attention_gradients_match_masked_sdpa_on_gpu(tiny_model: Path, batch: Batch) -> None:
    device = pick_device()
    model = load_model(str(tiny_model), MethodSpec(type="full"), device, False)
    ref = _loss_and_grads(model, lambda: loss_sum(model, batch, device))
    model.set_attn_implementation("flex_attention")
    _assert_same(_loss_and_grads(model, lambda: loss_sum(model, batch, device)), ref, 2e-2)


@pytest.mark.slow
def test_compiled_layers_give_the_eager_loss_and_gradients(tiny_model: Path, batch: Batch) -> None:
    device = pick_device()
    model = load_model(str(tiny_model), MethodSpec(type="full"), device, False)
    ref = _loss_and_grads(model, lambda: loss_sum(model, batch, device))
    assert fast_paths.compile_layers(model) == model.config.num_hidden_layers
    _assert_same(_loss_and_grads(model, lambda: loss_sum(model, batch, device)), ref, 1e-4)


def test_the_cpu_default_path_switches_nothing_on(tiny_model: Path) -> None:
    device = pick_device()
    if device.device.type != "cpu":
        pytest.skip("the CPU default: this machine has a GPU")
    model = load_model(str(tiny_model), LORA, device, False)
    fast = fast_paths.enable(model, device, torch_compile=False)
    assert fast == fast_paths.FastPaths() and fast.describe() == "none"
    assert not fast_paths.fused_loss(model)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("method", ["full", "lora"])
def test_liger_fused_loss_matches_the_reference_on_gpu(
    tiny_model: Path, batch: Batch, method: str
) -> None:
    """Liger's kernels (fused linear cross-entropy: no logits) against the plain model."""
    device = pick_device()
    spec = LORA if method == "lora" else MethodSpec(type="full")
    ref_model = load_model(str(tiny_model), spec, device, False)
    ref = _loss_and_grads(ref_model, lambda: loss_sum(ref_model, batch, device))
    model = load_model(str(tiny_model), spec, device, False)
    model.load_state_dict(ref_model.state_dict())
    fast = fast_paths.enable(model, device, torch_compile=False)
    assert fast.liger and fast_paths.fused_loss(model), fast
    _assert_same(_loss_and_grads(model, lambda: loss_sum(model, batch, device)), ref, 2e-2)
