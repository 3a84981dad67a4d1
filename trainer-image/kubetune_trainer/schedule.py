"""Which packed rows each process trains and evaluates on, step by step.

Epoch e shuffles all the rows with the seed + e; rank r of a world of W processes takes every
W-th row of that order from position r (`order[r::W]`), so the ranks hold disjoint shards that
together cover the data exactly once per epoch, and the same seed and world size give the same
shards on a rerun. Shards differ by at most one row: every rank runs the same number of
micro-batches, the longest shard's, and a rank whose shard is used up runs an empty one (the
loop computes it with zero weight, so the collectives of DDP and FSDP stay in step).

Micro-batch m of rank r holds positions m*b .. m*b+b-1 of its shard, so micro-batch m of all
the ranks together holds the same rows as micro-batch m of one process with W times the batch:
W processes x batch b train on exactly the batches of 1 process x batch W*b (the loss parity
the tests check). With W = 1 this is the single-process schedule, unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kubetune_crd.names import effective_batch_size
from kubetune_crd.spec import HyperparametersSpec

from kubetune_trainer.dataset import IGNORE
from kubetune_trainer.packing import PackedRow


def label_tokens(row: PackedRow) -> int:
    """Tokens of the row that carry a loss (`Batch.label_tokens` of the row alone)."""
    return sum(1 for label in row.labels[1:] if label != IGNORE)


@dataclass(frozen=True)
class Schedule:
    """Which rows each optimizer step uses, on each rank."""

    n_rows: int
    batch_size: int
    grad_accum: int
    seed: int
    world_size: int = 1

    @property
    def shard_rows(self) -> int:
        """Rows of the largest shard (all of them for one process)."""
        return math.ceil(self.n_rows / self.world_size)

    @property
    def micro_batches_per_epoch(self) -> int:
        return math.ceil(self.shard_rows / self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_batches_per_epoch / self.grad_accum)

    @property
    def effective_batch(self) -> int:
        """Rows per optimizer step: batch x gradient accumulation x world size."""
        return effective_batch_size(self.batch_size, self.grad_accum, self.world_size)

    def total_steps(self, hp: HyperparametersSpec) -> int:
        return hp.max_steps if hp.max_steps else self.steps_per_epoch * hp.epochs

    def epoch_order(self, epoch: int) -> list[int]:
        import torch

        generator = torch.Generator().manual_seed(self.seed + epoch)
        return [int(i) for i in torch.randperm(self.n_rows, generator=generator)]

    def _epoch_order(self, step: int, cache: dict[int, list[int]]) -> tuple[list[int], int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = self.epoch_order(epoch)
        return cache[epoch], k

    def _micro_batches(self, k: int) -> range:
        first = k * self.grad_accum
        return range(first, min(first + self.grad_accum, self.micro_batches_per_epoch))

    def step_rows(self, step: int, cache: dict[int, list[int]], rank: int = 0) -> list[list[int]]:
        """Row indices of each micro-batch of `rank` in optimizer step `step` (0-based); a
        micro-batch is empty where the rank's shard is used up and another's is not."""
        order, k = self._epoch_order(step, cache)
        b, w = self.batch_size, self.world_size
        # Positions m*b .. m*b+b-1 of the shard order[rank::w], without building the shard.
        return [
            order[rank + w * m * b : rank + w * (m + 1) * b : w] for m in self._micro_batches(k)
        ]

    def step_label_tokens(
        self, step: int, cache: dict[int, list[int]], tokens: Sequence[int]
    ) -> int:
        """Loss tokens of step `step` over ALL ranks (`tokens[i]`: those of row i). Every rank
        computes it alone: the loss of a step is the sum over its tokens divided by it."""
        order, k = self._epoch_order(step, cache)
        span = self._micro_batches(k)
        width = self.world_size * self.batch_size  # micro-batch m of all ranks: one slice
        return sum(tokens[i] for i in order[span.start * width : span.stop * width])


def eval_batches(n_rows: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[range]:
    """Row indices of `rank`'s evaluation batches: its shard `rank::world_size` in batches, as
    many as the largest shard has (a used-up rank gets empty ones, see the module doc)."""
    shard = range(rank, n_rows, world_size)
    count = math.ceil(math.ceil(n_rows / world_size) / batch_size)
    return [shard[m * batch_size : (m + 1) * batch_size] for m in range(count)]
