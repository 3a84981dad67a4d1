"""Loading the base model and tokenizer, and wrapping the model for LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetune_crd.method import MethodSpec

from kubetune_trainer.errors import BadInputError, RetryableError
from kubetune_trainer.memory_estimate import ModelShape
from kubetune_trainer.runtime import DeviceInfo


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).exists()


def _load_error(ref: str, exc: Exception) -> Exception:
    if _looks_like_path(ref):
        return BadInputError(f"base model {ref!r} cannot be loaded: {exc}")
    text = str(exc)
    if "not a valid model identifier" in text or "404" in text or "does not appear" in text:
        return BadInputError(f"base model {ref!r} not found: {text.splitlines()[0]}")
    return RetryableError(f"base model {ref!r} could not be fetched: {text.splitlines()[0]}")


def check_model_ref(ref: str) -> None:
    if _looks_like_path(ref) and not Path(ref).is_dir():
        raise BadInputError(f"base model directory {ref!r} does not exist")


def load_tokenizer(ref: str) -> Any:
    from transformers import AutoTokenizer

    check_model_ref(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError) as exc:
        raise _load_error(ref, exc) from None
    if not getattr(tokenizer, "is_fast", False):
        raise BadInputError(f"base model {ref!r} has no fast tokenizer (tokenizer.json)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def parameter_count(ref: str) -> int:
    """Parameters of the model, from its config only (no weights loaded)."""
    return model_shape(ref).parameters


def model_shape(ref: str) -> ModelShape:
    """The model's size and shape from its config only: the reference must resolve (a
    directory with a config, or a Hub id), no weights are loaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    check_model_ref(ref)
    try:
        config = AutoConfig.from_pretrained(ref)
    except (OSError, ValueError) as exc:
        raise _load_error(ref, exc) from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    return ModelShape.from_config(config, sum(p.numel() for p in model.parameters()))


def load_model(ref: str, method: MethodSpec, device: DeviceInfo, grad_ckpt: bool) -> Any:
    """The model on `device`, LoRA-wrapped for lora and qlora (over a 4-bit base); fp32
    master weights for full."""
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_trainer import quantization

    check_model_ref(ref)
    lora = method.adapter
    dtype = torch.bfloat16 if (device.bf16 and lora) else torch.float32
    try:
        if method.type == "qlora":
            model: Any = quantization.load_4bit(ref, device)
        else:
            model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise _load_error(ref, exc) from None
    model.config.use_cache = False
    if method.type == "qlora":  # placed on its GPU by the load; norms to fp32
        model = quantization.prepare_for_training(model, grad_ckpt)
    else:
        model.to(device.device)
        if grad_ckpt:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
    if lora:
        from peft import LoraConfig, get_peft_model

        if grad_ckpt and method.type == "lora":
            model.enable_input_require_grads()
        config = LoraConfig(
            r=method.lora.r,
            lora_alpha=method.lora.alpha,
            lora_dropout=method.lora.dropout,
            target_modules=list(method.lora.target_modules) or "all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    model.train()
    return model


def trainable_parameters(model: Any) -> dict[str, Any]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}
