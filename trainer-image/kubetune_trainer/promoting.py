"""The end of a run that asked for `spec.promotion`: decide, and publish the alias pointer.

Rank 0 decides with the contract's pure `decide` (the same rule the API and the tests use),
from this run's held-out bits per byte and the champion's figure on the SAME held-out text
(`evaluation.champion_bits_per_byte`). When the model wins, the pointer is written by
`publish`, the one pointer writer: beside the models on the models volume, or under the S3
output prefix. A pointer that cannot be written never fails the run (the model is stored):
the outcome says "not promoted" and why, and the operator records it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kubetune_crd import names
from kubetune_crd.promotion import PromotionOutcome, decide
from kubetune_crd.status import Metrics, ModelInfo
from kubetune_crd.trainer_contract import TrainerRunConfig

from kubetune_trainer import publish
from kubetune_trainer.errors import BadInputError, RetryableError

log = logging.getLogger(__name__)


def promote(cfg: TrainerRunConfig, model: ModelInfo, metrics: Metrics) -> PromotionOutcome | None:
    """The decision for this run's model (None without spec.promotion), its pointer written
    when promoted."""
    spec = cfg.spec.promotion
    if spec is None:
        return None
    champion = cfg.champion
    promoted, reason = decide(
        spec.policy,
        metrics.bits_per_byte_after,
        metrics.champion_bits_per_byte,
        has_champion=champion is not None,
    )
    outcome = PromotionOutcome(
        alias=spec.alias,
        policy=spec.policy,
        promoted=promoted,
        reason=reason,
        model=model.name,
        previous=champion.name if champion else None,
        challenger_bits_per_byte=metrics.bits_per_byte_after,
        champion_bits_per_byte=metrics.champion_bits_per_byte,
        time=names.now_rfc3339(),
    )
    if not promoted:
        return outcome
    try:
        pointer = _publish(cfg, spec.alias, model)
    except (BadInputError, RetryableError) as exc:
        log.warning("alias %s not published: %s", spec.alias, exc)
        return outcome.model_copy(
            update={"promoted": False, "reason": f"{reason}; pointer not written: {exc}"[:512]}
        )
    return outcome.model_copy(update={"version": int(pointer["version"])})


def _publish(cfg: TrainerRunConfig, alias: str, model: ModelInfo) -> dict[str, Any]:
    fmt = model.format or names.FORMAT_LORA
    if not cfg.pointer_root:
        raise BadInputError("the run config names no place for alias pointers")
    if cfg.output_uri:
        s3 = cfg.spec.output.s3 if cfg.spec.output else None
        return publish.publish_s3(
            cfg.pointer_root,
            alias,
            model.name,
            model.uri,
            fmt,
            cfg.base_model,
            endpoint_url=s3.endpoint_url if s3 else None,
            region=s3.region if s3 else None,
        )
    if not model.path:
        raise BadInputError(f"model {model.name} has no path on the models volume")
    return publish.publish_volume(
        Path(cfg.pointer_root), alias, model.name, model.path, fmt, cfg.base_model
    )
