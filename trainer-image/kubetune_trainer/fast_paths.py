"""GPU fast paths of the training step, each behind its own check (issue 18).

On a GPU a small model's step is launch-bound and the full logits tensor ([tokens, vocab] in
fp32, plus its gradient) is most of the activation memory. Three levers, none of which
changes the CPU default path:

- Liger kernels (`liger-kernel`, the trainer's `gpu` extra): fused RMSNorm, RoPE, SwiGLU and
  the fused linear cross-entropy, which computes the loss chunk by chunk from the last hidden
  states and the head's weight so the logits are never materialised. Applied to the model
  instance (`_apply_liger_kernel_to_instance`) when CUDA is there, the package imports and
  the model type is one Liger patches. The loss then comes from the model's own forward
  (`labels` + `num_items_in_batch=1`: transformers' and Liger's convention for a summed
  loss), see `model_loss` and `train.loss_sum`; that convention is checked on CPU against
  the trainer's own loss (tests/trainer/test_fast_paths.py).
- Attention over packed rows without a dense mask: FlexAttention (`flex_attention`
  implementation), for which transformers turns the packed `position_ids` into a block
  mask: blocks of other examples and above the diagonal are skipped, not computed and
  masked. The CPU keeps its own per-example SDPA path (`attention.py`).
- `torch.compile` of each decoder layer (regional compilation: one compiled graph reused by
  every layer, a short compile, and it composes with peft, DDP and FSDP), when
  `hyperparameters.torchCompile` is set (any device; off by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune_trainer.runtime import DeviceInfo

FUSED_LOSS_ATTR = "_kubetune_fused_loss"
"""Set on the model when its forward computes the summed loss itself (Liger's fused loss)."""


@dataclass(frozen=True)
class FastPaths:
    """What `enable` switched on for a model (printed in the trainer's log, bench output)."""

    liger: bool = False
    flex_attention: bool = False
    compiled_layers: int = 0

    def describe(self) -> str:
        parts = [name for name, on in (("liger", self.liger), ("flex", self.flex_attention)) if on]
        if self.compiled_layers:
            parts.append(f"compiled {self.compiled_layers} layers")
        return ", ".join(parts) or "none"


def base_of(model: Any) -> Any:
    """The transformers model under a peft wrapper (the model itself otherwise)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def liger_available(model: Any, device: DeviceInfo) -> bool:
    """CUDA, liger-kernel importable, and a model type it patches."""
    if device.device.type != "cuda":
        return False
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        return False
    return getattr(base_of(model).config, "model_type", None) in MODEL_TYPE_TO_APPLY_LIGER_FN


def apply_liger(model: Any) -> None:
    """Liger's kernels on this model instance, the fused linear cross-entropy included."""
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    base = base_of(model)
    _apply_liger_kernel_to_instance(
        model=base, fused_linear_cross_entropy=True, cross_entropy=False
    )
    setattr(base, FUSED_LOSS_ATTR, True)


def flex_available(model: Any, device: DeviceInfo) -> bool:
    base = base_of(model)
    return device.device.type == "cuda" and bool(getattr(base, "_supports_flex_attn", False))


def compile_layers(model: Any) -> int:
    """`torch.compile` each decoder layer in place; returns how many were compiled."""
    layers = getattr(getattr(base_of(model), "model", None), "layers", None)
    if layers is None:
        return 0
    for layer in layers:
        layer.compile()
    return len(layers)


def enable(model: Any, device: DeviceInfo, torch_compile: bool) -> FastPaths:
    """Switch on the fast paths this device and model allow (before DDP/FSDP wrapping)."""
    liger = liger_available(model, device)
    if liger:
        apply_liger(model)
    flex = flex_available(model, device)
    if flex:
        base_of(model).set_attn_implementation("flex_attention")
    compiled = compile_layers(model) if torch_compile else 0
    return FastPaths(liger=liger, flex_attention=flex, compiled_layers=compiled)


def fused_loss(model: Any) -> bool:
    """Whether the model's forward computes the summed loss itself (no logits returned)."""
    return bool(getattr(base_of(model), FUSED_LOSS_ATTR, False))


def model_loss(runner: Any, ids: Any, positions: Any, labels: Any) -> Any:
    """The summed next-token loss over `labels`' tokens, computed by the model's forward:
    `num_items_in_batch=1` makes transformers' (and Liger's) loss a sum over the label
    tokens divided by 1. `labels` are unshifted: the model shifts them, like `loss_sum`."""
    out = runner(
        input_ids=ids, position_ids=positions, labels=labels, num_items_in_batch=1, use_cache=False
    )
    return out.loss
