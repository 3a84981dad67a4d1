"""What a FineTuneJob asks for after training: evaluation prompts and promotion to an alias.

`spec.evaluation` lists a few prompts the trainer answers with the base model and with the
fine-tuned model (greedy, bounded tokens); `spec.promotion` names an alias ("the model in
use") and the policy that decides whether this job's model becomes its current model. The
decision itself is the pure `decide`, so the operator, the API's manual promote and the
tests agree on it. The alias pointer's place on the models volume / S3 is owned here too.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field

from kubetune_crd.base import CamelModel, StatusModel

ALIAS_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
"""An alias is a DNS label (RFC 1123, at most 63 characters): it names a Kubernetes object."""
ALIAS_MAX = 63

PromotionPolicy = Literal["always", "if-better", "never"]
POLICY_ALWAYS: PromotionPolicy = "always"
POLICY_IF_BETTER: PromotionPolicy = "if-better"
POLICY_NEVER: PromotionPolicy = "never"
POLICIES: tuple[PromotionPolicy, ...] = (POLICY_ALWAYS, POLICY_IF_BETTER, POLICY_NEVER)
DEFAULT_POLICY: PromotionPolicy = POLICY_IF_BETTER
DecisionPolicy = Literal["always", "if-better", "never", "manual"]
"""What decided: a job's policy, or `manual` (a promote or rollback asked through the API)."""
POLICY_MANUAL: DecisionPolicy = "manual"

MAX_PROMPTS = 8
PROMPT_MAX_CHARS = 2000
DEFAULT_MAX_NEW_TOKENS = 48
MAX_NEW_TOKENS = 256

ALIASES_DIR = "aliases"
"""Directory of the alias pointers, inside the models directory / under the S3 output prefix."""
POINTER_SUFFIX = ".json"


def pointer_filename(alias: str) -> str:
    """`<alias>.json`, the pointer's file (object) name inside `aliases/`."""
    return f"{alias}{POINTER_SUFFIX}"


Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS)]


class EvaluationSpec(CamelModel):
    """Prompts answered before and after training (the original API's compare before/after)."""

    prompts: list[Prompt] = Field(
        default_factory=list,
        max_length=MAX_PROMPTS,
        description=(
            "Questions the base model and the fine-tuned model answer at the end of training "
            "(greedy decoding, the chat template when the tokenizer has one)."
        ),
    )
    max_new_tokens: int = Field(
        default=DEFAULT_MAX_NEW_TOKENS,
        ge=1,
        le=MAX_NEW_TOKENS,
        description="Most tokens generated per answer.",
    )


class PromotionSpec(CamelModel):
    """Promote this job's model to an alias, as the policy decides."""

    alias: str = Field(
        pattern=ALIAS_PATTERN,
        min_length=1,
        max_length=ALIAS_MAX,
        description="Alias (a DNS label, e.g. frigo) naming the model in use.",
    )
    policy: PromotionPolicy = Field(
        default=DEFAULT_POLICY,
        description=(
            "always; if-better (only when its held-out bits per byte beat the alias's current "
            "model, evaluated on this job's own eval split); never (register, do not promote)."
        ),
    )


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def decide(
    policy: PromotionPolicy,
    challenger_bpb: float | None,
    champion_bpb: float | None,
    *,
    has_champion: bool | None = None,
) -> tuple[bool, str]:
    """Whether the challenger becomes the alias's current model, and why (one line).

    Lower bits per byte (held-out, the challenger's own eval split) is better. `if-better`
    promotes when the alias has no current model, or when the challenger's figure is finite
    and strictly lower than the current model's (a current model whose figure is infinite or
    NaN, i.e. it diverged, loses to any finite challenger). A challenger without a finite
    figure never wins a comparison. `has_champion` (default: whether `champion_bpb` is set)
    tells an alias without a current model from a current model that could not be
    evaluated; the latter is kept, replacing it unchecked is what `always` is for.
    """
    if policy == POLICY_NEVER:
        return False, "policy never: registered, not promoted"
    if policy == POLICY_ALWAYS:
        return True, "policy always"
    if policy != POLICY_IF_BETTER:
        raise ValueError(f"unknown promotion policy {policy!r}")
    champion = champion_bpb is not None if has_champion is None else has_champion
    if not champion:
        return True, "if-better: the alias has no current model"
    if champion_bpb is None:
        return False, "if-better: the current model could not be evaluated; kept"
    if not _finite(challenger_bpb):
        return False, "if-better: the challenger has no finite bits-per-byte figure"
    assert challenger_bpb is not None  # _finite checked it
    if not math.isfinite(champion_bpb):
        return True, f"if-better: challenger {challenger_bpb:.4f} bits/byte, current diverged"
    if challenger_bpb < champion_bpb:
        return True, (
            f"if-better: challenger {challenger_bpb:.4f} < current {champion_bpb:.4f} bits/byte"
        )
    return False, (
        f"if-better: challenger {challenger_bpb:.4f} >= current {champion_bpb:.4f} bits/byte"
    )


class PromotionOutcome(StatusModel):
    """One promotion decision, as the trainer made it and the status and alias history keep it."""

    alias: str = Field(description="The alias asked for.")
    policy: DecisionPolicy = Field(description="The policy that decided (manual: the API).")
    promoted: bool = Field(description="Whether this job's model became the alias's model.")
    reason: str = Field(default="", max_length=512, description="Why, in one line.")
    model: str = Field(description="This job's model (the challenger).")
    previous: str | None = Field(default=None, description="The alias's model before.")
    challenger_bits_per_byte: float | None = Field(
        default=None, description="This model's held-out bits per byte."
    )
    champion_bits_per_byte: float | None = Field(
        default=None, description="The previous model's bits per byte on the same held-out text."
    )
    version: int | None = Field(
        default=None, ge=1, description="The pointer's version written (promoted only)."
    )
    time: str | None = Field(default=None, description="When it was decided (RFC 3339).")
