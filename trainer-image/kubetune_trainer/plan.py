"""The data of a run, ready to train on: fetched, validated, tokenized, packed and scheduled.

Every process of a run builds the same plan from the same data (and checks that it did, see
`pipeline.py`); the world size only decides how the schedule shards it. `estimate` turns a plan
into the validate-only report's ETA without loading any weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_crd.trainer_contract import TrainerRunConfig

from kubetune_trainer.dataset import Encoded, encode_rows, split_rows
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.formats import Table, load_table
from kubetune_trainer.modeling import parameter_count
from kubetune_trainer.packing import PackedRow, pack
from kubetune_trainer.preference import encode_pairs, pair_rows, pairs_in
from kubetune_trainer.schedule import Schedule
from kubetune_trainer.sources import FetchedDataset, fetch_dataset

# Rough sustained training FLOP/s per process for the validate-only ETA (override: the option).
ASSUMED_FLOPS = {"cuda": 1.0e14, "cpu": 3.0e10}


@dataclass
class DataPlan:
    fetched: FetchedDataset
    table: Table
    train: Encoded
    held_out: Encoded
    train_rows: list[PackedRow]
    eval_rows: list[PackedRow]
    schedule: Schedule
    total_steps: int

    @property
    def preference(self) -> bool:
        """Preference pairs (objective dpo): `train_rows` / `eval_rows` hold each pair's chosen
        row at i and its rejected row at n + i, unpacked (`preference.pair_rows`)."""
        return self.table.kind == "preference"

    @property
    def train_tokens_per_epoch(self) -> int:
        return sum(len(r) for r in self.train_rows)

    def _rows(self, encoded: Encoded) -> int:
        per_row = 2 if self.preference else 1
        return len(encoded.examples) // per_row + encoded.dropped

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.fetched.uri,
            "sha256": self.fetched.sha256,
            "bytes": self.fetched.size,
            "format": self.table.format,
            "kind": self.table.kind,
            "columns": self.table.columns,
            "rows": len(self.table.rows),
            "trainRows": self._rows(self.train),
            "evalRows": self._rows(self.held_out),
            "trainTokens": self.train.tokens,
            "evalTokens": self.held_out.tokens,
            "truncatedRows": self.train.truncated + self.held_out.truncated,
            "droppedRows": self.train.dropped + self.held_out.dropped,
            "packedSequences": len(self.train_rows),
            "worldSize": self.schedule.world_size,
            "effectiveBatchSize": self.schedule.effective_batch,
            "stepsPerEpoch": self.schedule.steps_per_epoch,
            "totalSteps": self.total_steps,
        }


def prepare_data(
    cfg: TrainerRunConfig, tokenizer: Any, work_dir: Path, world_size: int = 1
) -> DataPlan:
    spec = cfg.spec
    hp = spec.hyperparameters
    fetched = fetch_dataset(spec.dataset.url, cfg.data_root, work_dir)
    preference = spec.method.objective == "dpo"
    table = load_table(fetched.path, fetched.uri, spec.dataset, preference=preference)
    train_rows, held_rows = split_rows(table.rows, spec.dataset.validation_split, hp.seed)
    if preference:
        train = encode_pairs(tokenizer, train_rows, hp.max_seq_length)
        held = encode_pairs(tokenizer, held_rows, hp.max_seq_length)
    else:
        train = encode_rows(tokenizer, table.kind, train_rows, hp.max_seq_length)
        held = encode_rows(tokenizer, table.kind, held_rows, hp.max_seq_length)
    if not train.examples:
        raise BadInputError(
            f"no training row has any token to learn from within maxSeqLength {hp.max_seq_length}"
            " (prompts longer than the limit?)"
        )
    if preference:  # pairs are never packed: each answer's log-probability is one row's sum
        packed, eval_packed = pair_rows(train), pair_rows(held)
        units = pairs_in(packed)
    else:
        # Seeded random grouping, not length-sorted bins: see packing.py (batch diversity).
        packed = pack(train.examples, hp.max_seq_length, hp.packing, seed=hp.seed)
        eval_packed = pack(held.examples, hp.max_seq_length, True)
        units = len(packed)
    schedule = Schedule(units, hp.batch_size, hp.gradient_accumulation_steps, hp.seed, world_size)
    return DataPlan(
        fetched, table, train, held, packed, eval_packed, schedule, schedule.total_steps(hp)
    )


def estimate(
    cfg: TrainerRunConfig,
    plan: DataPlan,
    device_type: str,
    flops: float | None,
    params: int | None = None,
) -> dict[str, Any]:
    """Tokens to process and a rough ETA from the parameter count (no weights loaded); the
    processes of the run share the work."""
    params = params if params is not None else parameter_count(cfg.base_model)
    hp = cfg.spec.hyperparameters
    epochs = plan.total_steps / max(plan.schedule.steps_per_epoch, 1)
    tokens = int(plan.train_tokens_per_epoch * epochs)
    factor = 4 if cfg.spec.method.adapter else 6  # forward+backward FLOPs per param-token
    if plan.preference:
        factor += 2  # the reference model's forward pass
    rate = flops or ASSUMED_FLOPS.get(device_type, ASSUMED_FLOPS["cpu"])
    eval_tokens = 2 * sum(len(r) for r in plan.eval_rows)
    processes = plan.schedule.world_size
    seconds = (factor * params * tokens + 2 * params * eval_tokens) / (rate * processes)
    return {
        "parameters": params,
        "tokensToTrain": tokens,
        "epochs": round(epochs, 3),
        "batchSize": hp.batch_size,
        "device": device_type,
        "assumedFlops": rate,
        "etaSeconds": round(seconds, 1),
    }


def fingerprint(cfg: TrainerRunConfig, dataset_sha: str) -> str:
    """What a checkpoint must match to be resumed: model, data and training settings."""
    spec = cfg.spec
    basis = {
        "baseModel": cfg.base_model,
        "dataset": spec.dataset.to_k8s(),
        "datasetSha256": dataset_sha,
        "method": spec.method.to_k8s(),
        "hyperparameters": spec.hyperparameters.to_k8s(),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]
