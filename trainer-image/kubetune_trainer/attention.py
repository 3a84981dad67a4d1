"""Attention over packed sequences without a block-diagonal mask (the CPU training path).

transformers turns the position-id restarts of a packed row into a [B, 1, T, T] boolean mask
and calls SDPA with it: every query is scored against every key of the row, including all the
keys of the other examples that the mask then throws away, and a kernel given a mask cannot
skip the causal upper triangle either. On CPU that was about a fifth of a training step on the
tiny model (tests/bench/trainer_bench.py).

Here each example (each block of restarting positions, the trailing padding included) is its
own causal SDPA call on a view of the row: the same result as the masked call (the examples
never see each other), with the work of the examples alone. The block lengths come from the
collator (`Batch.segments`), so nothing is synchronised or rebuilt per layer, and the attention
implementation registered here has no mask function, so transformers builds no mask at all.

The implementation is only switched on for the duration of a forward pass that passes the
segments (`packed_attention`), and only for models whose attention is plain causal SDPA (no
sliding window, no soft-capping, no padding mask); everything else keeps the model's own
attention.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

NAME = "kubetune_packed"
SEGMENTS_KWARG = "kubetune_segments"

_registered = False


def packed_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    kubetune_segments: Sequence[Sequence[int]] | None = None,
    **_kwargs: Any,
) -> tuple[Any, None]:
    """Causal attention of each segment alone: query/key/value [B, H, T, D] -> [B, T, H, D]."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    if kubetune_segments is None or attention_mask is not None:
        raise RuntimeError(f"{NAME} attention needs the segment lengths and no attention mask")
    gqa = query.shape[1] != key.shape[1]
    rows = []
    for b, (q_row, k_row, v_row) in enumerate(
        zip(query.unbind(0), key.unbind(0), value.unbind(0), strict=True)
    ):
        lengths = list(kubetune_segments[b])
        # split/unbind, not slicing: their backward is one concatenation, where the backward
        # of each slice would write a zero tensor the size of the whole row.
        outs = [
            F.scaled_dot_product_attention(
                q.unsqueeze(0),
                k.unsqueeze(0),
                v.unsqueeze(0),
                dropout_p=dropout,
                is_causal=True,
                scale=scaling,
                enable_gqa=gqa,
            ).transpose(1, 2)
            for q, k, v in zip(
                q_row.split(lengths, dim=1),
                k_row.split(lengths, dim=1),
                v_row.split(lengths, dim=1),
                strict=True,
            )
        ]
        rows.append(torch.cat(outs, dim=1) if len(outs) > 1 else outs[0])
    return (torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]), None


def register() -> None:
    """Register the attention function with transformers (idempotent). No mask function is
    registered under the same name: that is what makes transformers skip building the mask."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention_forward)
    _registered = True


def supports_packed_attention(model: Any) -> bool:
    """Whether the model's attention is plain causal SDPA, which this path reproduces."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "is_encoder_decoder", False):
        return False
    for attr in ("sliding_window", "attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(config, attr, None):
            return False
    if getattr(config, "sub_configs", None):
        return False
    # Activation checkpointing recomputes the layers during backward, outside the forward's
    # `packed_attention` block: they would run the model's own attention without the mask.
    return not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


@contextmanager
def packed_attention(model: Any) -> Iterator[None]:
    """Use the packed attention for the forward passes inside the block."""
    register()
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
