"""How much GPU memory one training process needs, from the model's config alone (pure).

The CPU pre-flight runs before any GPU is requested, so it cannot measure: it estimates, and
fails a run that clearly cannot fit (with what would fit) instead of letting it die of an
out-of-memory error after the GPU was scheduled. Per training process, in bytes:

    weights      full: 4 P (fp32 master weights)      lora: 2 P (bf16 frozen base; 4 P on CPU;
                                                       qlora: P / 2, a 4-bit NF4 base) + 4 T
    gradients    full: 4 P                             lora: 4 T
    optimizer    full: 8 P (AdamW: two fp32 moments)   lora: 4 T (fp32 adapter) + 8 T
                 (fsdp shards weights, gradients and optimizer state across the W processes:
                 each of the three full-model terms above is divided by W)
    activations  b s h L x 34 x (a / 2)      (Korthikanti et al. 2022, per transformer layer,
                 without the attention-score term: SDPA / flash attention keep no s x s
                 matrix); with gradient checkpointing only each layer's input is kept,
                 b s h L x a, plus one layer's full activations while it is recomputed
    logits       2 x b s V x 4   (fp32 logits and their gradient)
    overhead     1 GiB (CUDA context, allocator fragmentation)

P = parameters, T = LoRA parameters = L x r x (9 h + 2 kv + 3 i) for adapters on every
attention (q, k, v, o) and MLP (gate, up, down) projection, b = batchSize, s = maxSeqLength,
h = hidden size, i = MLP width, kv = key/value width, L = layers, V = vocabulary,
a = bytes per activation (2 with bf16 autocast on a GPU, 4 on CPU). It is a rough figure
(+-30%): a run is refused only when the estimate exceeds the GPU's memory by more than
`CLEAR_MARGIN`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

GIB = 1024**3
ACTIVATION_BYTES_PER_ELEMENT_FACTOR = 34
"""Bytes per token per hidden unit per layer at 16-bit activations (Korthikanti et al.)."""
OVERHEAD_BYTES = 1 * GIB
CLEAR_MARGIN = 1.2
"""Refuse only when the estimate exceeds the GPU's memory by more than 20%."""
MAX_GPUS_SUGGESTED = 64


def _first(config: Any, *names: str) -> int:
    """The first of `names` the config sets (0 when none)."""
    for name in names:
        value = getattr(config, name, None)
        if value:
            return int(value)
    return 0


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from the model's config (no weights)."""

    parameters: int
    hidden_size: int
    layers: int
    intermediate_size: int
    vocab_size: int
    kv_size: int

    @classmethod
    def from_config(cls, config: Any, parameters: int) -> ModelShape:
        """From a transformers config (Llama-style names, GPT-2-style fallbacks)."""
        hidden = _first(config, "hidden_size", "n_embd")
        layers = _first(config, "num_hidden_layers", "n_layer")
        inner = _first(config, "intermediate_size", "n_inner")
        heads = _first(config, "num_attention_heads", "n_head")
        kv_heads = _first(config, "num_key_value_heads") or heads
        kv = hidden * kv_heads // heads if heads else hidden
        return cls(
            parameters=parameters,
            hidden_size=hidden,
            layers=layers,
            intermediate_size=inner or 4 * hidden,
            vocab_size=int(getattr(config, "vocab_size", 0) or 0),
            kv_size=kv,
        )

    def lora_parameters(self, rank: int) -> int:
        """Adapter parameters with every attention and MLP projection adapted."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_size
        return self.layers * rank * (9 * h + 2 * kv + 3 * i)


@dataclass(frozen=True)
class RunShape:
    """The settings of a run the estimate depends on."""

    method: str
    lora_rank: int
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    world_size: int = 1
    sharded: bool = False
    """fsdp: weights, gradients and optimizer state split across the processes."""
    bf16: bool = True


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per training process, by part."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int = OVERHEAD_BYTES

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.gradients
            + self.optimizer
            + self.activations
            + self.logits
            + self.overhead
        )

    @property
    def total_gib(self) -> float:
        return self.total / GIB


def estimate_memory(model: ModelShape, run: RunShape) -> MemoryEstimate:
    """The module docstring's formula."""
    p = model.parameters
    act = 2 if run.bf16 else 4
    if run.method == "full":
        share = max(run.world_size, 1) if run.sharded else 1
        weights, gradients, optimizer = 4 * p // share, 4 * p // share, 8 * p // share
    else:
        t = model.lora_parameters(run.lora_rank)
        base = 0.5 if run.method == "qlora" else (2 if run.bf16 else 4)  # NF4: 4 bits
        weights = int(base * p) + 4 * t
        gradients, optimizer = 4 * t, 8 * t
    tokens = run.batch_size * run.seq_len
    per_layer_full = tokens * model.hidden_size * ACTIVATION_BYTES_PER_ELEMENT_FACTOR * act // 2
    if run.gradient_checkpointing:
        activations = tokens * model.hidden_size * model.layers * act + per_layer_full
    else:
        activations = per_layer_full * model.layers
    logits = 2 * tokens * model.vocab_size * 4
    return MemoryEstimate(weights, gradients, optimizer, activations, logits)


def clearly_exceeds(estimate: MemoryEstimate, gpu_gib: float) -> bool:
    return estimate.total_gib > gpu_gib * CLEAR_MARGIN


def _fits(model: ModelShape, run: RunShape, gpu_gib: float) -> float | None:
    """The estimate in GiB when `run` fits in `gpu_gib`, else None."""
    gib = estimate_memory(model, run).total_gib
    return gib if gib <= gpu_gib else None


def suggestions(model: ModelShape, run: RunShape, gpu_gib: float) -> list[str]:
    """Single changes that would fit, each with its estimate (spec field names)."""
    out: list[str] = []
    if run.method == "full":
        gib = _fits(model, dataclasses.replace(run, method="lora"), gpu_gib)
        if gib is not None:
            out.append(f"method lora instead of full (~{gib:.1f} GiB)")
    if run.method == "lora" and run.bf16:
        gib = _fits(model, dataclasses.replace(run, method="qlora"), gpu_gib)
        if gib is not None:
            out.append(f"method qlora instead of lora (~{gib:.1f} GiB)")
    if not run.gradient_checkpointing:
        gib = _fits(model, dataclasses.replace(run, gradient_checkpointing=True), gpu_gib)
        if gib is not None:
            out.append(f"hyperparameters.gradientCheckpointing: true (~{gib:.1f} GiB)")
    batch = run.batch_size // 2
    while batch >= 1:
        gib = _fits(model, dataclasses.replace(run, batch_size=batch), gpu_gib)
        if gib is not None:
            factor = run.batch_size // batch
            out.append(
                f"hyperparameters.batchSize: {batch} with gradientAccumulationSteps x{factor} "
                f"(~{gib:.1f} GiB)"
            )
            break
        batch //= 2
    if run.method == "full":
        for gpus in range(max(run.world_size, 1) + 1, MAX_GPUS_SUGGESTED + 1):
            more = dataclasses.replace(run, world_size=gpus, sharded=True)
            gib = _fits(model, more, gpu_gib)
            if gib is not None:
                out.append(f"{gpus} GPUs in all with distributed.strategy fsdp (~{gib:.1f} GiB)")
                break
    return out


def does_not_fit_message(model: ModelShape, run: RunShape, gpu_gib: float) -> str | None:
    """Why the run cannot fit in one `gpu_gib` GPU (and what would), or None if it may fit."""
    estimate = estimate_memory(model, run)
    if not clearly_exceeds(estimate, gpu_gib):
        return None
    parts = (
        f"weights {estimate.weights / GIB:.1f}, gradients {estimate.gradients / GIB:.1f}, "
        f"optimizer {estimate.optimizer / GIB:.1f}, activations "
        f"{(estimate.activations + estimate.logits) / GIB:.1f}"
    )
    ideas = suggestions(model, run, gpu_gib)
    advice = (
        "; would fit: " + "; or ".join(ideas)
        if ideas
        else "; no single change fits: combine them or use GPUs with more memory"
    )
    return (
        f"the run needs ~{estimate.total_gib:.1f} GiB of GPU memory per process ({parts} GiB) "
        f"but a GPU has {gpu_gib:g} GiB{advice}"
    )
