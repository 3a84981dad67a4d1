"""QLoRA (`method.type: qlora`): LoRA adapters over a 4-bit (NF4) base model.

The base weights are quantised on load by bitsandbytes (transformers' `BitsAndBytesConfig`:
NF4, double quantisation, bf16 compute), prepared with peft's `prepare_model_for_kbit_training`
(norms and the head in fp32, inputs that require gradients for activation checkpointing), and
wrapped with the same LoRA adapters as `method: lora`. Only the adapter is trained, saved and
checkpointed, so resume and the `peft-lora` output work unchanged.

bitsandbytes' 4-bit kernels need CUDA: on a CPU the run is refused before anything is loaded
(`require_device`, BadInputError -> exit 42), with the message the contract and the operator
give. bitsandbytes comes with the trainer image's `gpu` extra, not on CPU installs.

A merged model (`mergeAdapter: true`) is not built from the 4-bit base (merging into NF4
weights would round the adapter away): the base is reloaded in bf16 on the CPU, the trained
adapter applied and merged (`merged_from_base`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubetune_crd.method import (
    GPU_ONLY_METHODS,
    QLORA_FSDP_MESSAGE,
    MethodSpec,
    gpu_required_message,
)

from kubetune_trainer.errors import BadInputError
from kubetune_trainer.runtime import DeviceInfo


def require_device(method: MethodSpec, device_type: str, strategy: str = "single") -> None:
    """Refuse a GPU-only method on a CPU process, and QLoRA under FSDP."""
    if method.type in GPU_ONLY_METHODS and device_type != "cuda":
        raise BadInputError(gpu_required_message(method.type))
    if method.type == "qlora" and strategy == "fsdp":
        raise BadInputError(QLORA_FSDP_MESSAGE)


def quantization_config(device: DeviceInfo) -> Any:
    """NF4 with double quantisation; bf16 compute where the GPU has it."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if device.bf16 else torch.float16,
    )


def load_4bit(ref: str, device: DeviceInfo) -> Any:
    """The base model quantised to 4 bits on `device` (a CUDA device)."""
    import torch
    from transformers import AutoModelForCausalLM

    require_device(MethodSpec(type="qlora"), device.device.type)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BadInputError(
            "method.type qlora needs bitsandbytes, which this trainer image lacks "
            "(install kubetune[trainer,gpu]); use method lora"
        ) from None
    index = device.device.index or 0
    return AutoModelForCausalLM.from_pretrained(
        ref,
        quantization_config=quantization_config(device),
        dtype=torch.bfloat16 if device.bf16 else torch.float16,
        device_map={"": index},
    )


def prepare_for_training(model: Any, grad_ckpt: bool) -> Any:
    """peft's preparation of a k-bit model (fp32 norms, input gradients for checkpointing)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
        model,
        use_gradient_checkpointing=grad_ckpt,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def merged_from_base(base_ref: str, adapter_dir: Path) -> Any:
    """The base model (bf16, CPU) with the adapter saved in `adapter_dir` merged in."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_ref, dtype=torch.bfloat16)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
