"""method qlora: refused with a clear bad-input error on a CPU, trained on a GPU; a merged
qlora model is built from a bf16 reload of the base (checked on CPU against lora's merge)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from kubetune_crd.method import MethodSpec
from kubetune_trainer import quantization
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.parallel import resolve_strategy

from trainer.conftest import TrainerRun

QLORA = {"type": "qlora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
NO_CUDA = "bitsandbytes' 4-bit kernels need a CUDA GPU"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal: this machine has a GPU")
def test_qlora_on_cpu_exits_bad_input_suggesting_lora(
    make_config: Callable[..., dict[str, Any]], run_trainer: Callable[..., TrainerRun]
) -> None:
    run = run_trainer(make_config(method=QLORA))
    assert run.proc.returncode == 42, run.stderr()
    result = run.result()
    assert result["outcome"] == "bad_input"
    assert "qlora needs a GPU" in result["message"] and "method lora" in result["message"]
    assert not (Path(make_config()["outputDir"]) / "tiny-ft").exists()


def test_qlora_under_fsdp_and_without_cuda_is_bad_input() -> None:
    qlora = MethodSpec(type="qlora")
    with pytest.raises(BadInputError, match="needs a GPU"):
        quantization.require_device(qlora, "cpu")
    with pytest.raises(BadInputError, match="not fsdp"):
        quantization.require_device(qlora, "cuda", "fsdp")
    quantization.require_device(qlora, "cuda", "ddp")
    quantization.require_device(MethodSpec(type="lora"), "cpu", "fsdp")  # lora: anywhere
    assert resolve_strategy("auto", "qlora", 2) == "ddp"  # the adapter's auto, like lora
    assert resolve_strategy("auto", "full", 2) == "fsdp"


def test_merged_qlora_model_is_the_base_plus_the_adapter(tiny_model: Path, tmp_path: Path) -> None:
    """The qlora merge (bf16 base reloaded, adapter applied and merged) gives the same model
    as merging the adapter into the base it was trained on (lora's merge)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():  # a trained adapter: B is zero at initialisation
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    model.save_pretrained(tmp_path / "adapter")
    ids = torch.arange(1, 33).unsqueeze(0)
    expected = model.merge_and_unload()(input_ids=ids).logits
    merged = quantization.merged_from_base(str(tiny_model), tmp_path / "adapter")
    assert not hasattr(merged, "peft_config")  # a plain model, adapter folded in
    got = merged(input_ids=ids).logits
    plain = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16)
    assert (plain(input_ids=ids).logits - expected).abs().max() > 0.01  # the adapter matters
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_qlora_trains_an_adapter_over_a_4bit_base(
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    tiny_model: Path,
) -> None:
    from kubetune_trainer.modeling import load_model
    from kubetune_trainer.runtime import pick_device

    model = load_model(str(tiny_model), MethodSpec.model_validate(QLORA), pick_device(), False)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Linear4bit" in kinds, kinds
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    run = run_trainer(make_config(method=QLORA, hyperparameters={"epochs": 2}))
    assert run.proc.returncode == 0, run.stderr()
    metrics = run.result()["metrics"]
    assert metrics["evalLossAfter"] < metrics["evalLossBefore"]
    assert run.result()["model"]["format"] == "peft-lora"
