"""How a finished run's held-out figures read: its result message and perplexity.

Kept apart from `pipeline.py` so the phases there stay short; supervised runs show loss and
bits per byte, DPO runs loss, reward margin and reward accuracy (before -> after).
"""

from __future__ import annotations

import math

from kubetune_crd.status import Metrics


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _change(label: str, before: float | None, after: float | None) -> str:
    return f"{label} {fmt(before)} -> {fmt(after)}"


def figures(metrics: Metrics) -> str:
    """`eval loss a -> b` and what else the run measured, comma-separated."""
    parts = [_change("eval loss", metrics.eval_loss_before, metrics.eval_loss_after)]
    if metrics.bits_per_byte_after is not None:
        bpb = _change("bits/byte", metrics.bits_per_byte_before, metrics.bits_per_byte_after)
        if metrics.champion_bits_per_byte is not None:
            bpb += f" (current model {fmt(metrics.champion_bits_per_byte)})"
        parts.append(bpb)
    if metrics.eval_reward_margin_after is not None:
        parts.append(
            _change(
                "reward margin",
                metrics.eval_reward_margin_before,
                metrics.eval_reward_margin_after,
            )
        )
        parts.append(
            _change(
                "reward accuracy",
                metrics.eval_reward_accuracy_before,
                metrics.eval_reward_accuracy_after,
            )
        )
    return ", ".join(parts)
