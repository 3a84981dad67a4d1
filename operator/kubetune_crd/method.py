"""How a model is fine-tuned: which weights train (`type`) and on what loss (`objective`).

Part of the FineTuneJob spec (`spec.method`), kept apart from `spec.py` because the API, the
operator and the trainer all ask the same questions of it: is it an adapter method, does it
need a GPU, and what is said when it cannot run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kubetune_crd.base import CamelModel

Method = Literal["lora", "qlora", "full"]
ADAPTER_METHODS: frozenset[str] = frozenset({"lora", "qlora"})
"""Methods that train a LoRA adapter (saved as `peft-lora`) over a frozen base."""
GPU_ONLY_METHODS: frozenset[str] = frozenset({"qlora"})
"""Methods that cannot run on a CPU (qlora: bitsandbytes' 4-bit base needs CUDA)."""
Objective = Literal["supervised", "dpo"]


class LoraSpec(CamelModel):
    """LoRA adapter settings (used when method is lora)."""

    r: int = Field(default=16, ge=1, le=512, description="LoRA rank.")
    alpha: int = Field(default=32, ge=1, le=1024, description="LoRA alpha (scaling).")
    dropout: float = Field(default=0.05, ge=0.0, le=0.9, description="LoRA dropout.")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        max_length=64,
        description="Module names to adapt; empty picks the attention and MLP projections.",
    )


class DpoSpec(CamelModel):
    """Direct Preference Optimization settings (used when method.objective is dpo)."""

    beta: float = Field(
        default=0.1,
        gt=0.0,
        le=10.0,
        description=(
            "How far the model may move from the reference (the base model): higher keeps it "
            "closer. trl's and OpenAI's default is 0.1."
        ),
    )


class MethodSpec(CamelModel):
    """How the model is fine-tuned: which weights train (type) and on what loss (objective)."""

    type: Method = Field(
        default="lora",
        description=(
            "lora (adapter), qlora (adapter over a 4-bit base: less GPU memory, GPU only) "
            "or full fine-tuning."
        ),
    )
    objective: Objective = Field(
        default="supervised",
        description=(
            "supervised (next-token loss on text, completions or chat) or dpo (Direct "
            "Preference Optimization on prompt/chosen/rejected pairs)."
        ),
    )
    dpo: DpoSpec = Field(default_factory=DpoSpec, description="DPO settings (objective dpo).")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (lora, qlora).")
    merge_adapter: bool = Field(
        default=False,
        description="For lora and qlora: also save the base model with the adapter merged in.",
    )

    @property
    def adapter(self) -> bool:
        """Whether the run trains a LoRA adapter (lora, qlora) rather than every weight."""
        return self.type in ADAPTER_METHODS


QLORA_FSDP_MESSAGE = (
    "method.type qlora trains with distributed.strategy ddp (or auto), not fsdp: "
    "the 4-bit base weights are not sharded"
)


def gpu_required_message(method: str) -> str:
    """Why a GPU-only method cannot run on CPU, and what to use instead (API, operator and
    trainer say the same)."""
    return (
        f"method.type {method} needs a GPU (bitsandbytes' 4-bit base model runs on CUDA "
        "only): set resources.gpus >= 1, or use method lora to train on CPU"
    )
