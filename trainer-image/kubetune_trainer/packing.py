"""Sequence packing and batching.

Packing puts several examples into one sequence of at most `max_len` tokens (best-fit:
examples are never split). Position ids restart at 0 for each example; with no
attention mask, transformers turns those restarts into a block-diagonal causal mask, so an
example never attends to its neighbours. Padding at the end of a batch is its own block with
labels -100: it costs compute but changes no loss.

Training packs in a seeded random order (`seed=`), not longest-first: best-fit DECREASING
fills the rows a little better but builds them from examples of similar lengths, always the
same ones, so an optimizer step sees far less varied data than a random batch. Measured with
tests/bench/trainer_bench.py (tiny model, 54 steps, 4 seeds): eval loss +0% to +14% worse than
random padded batches with length-sorted rows, within about 2% with shuffled rows.

Without packing each sequence holds one example and batches are padded to their longest row
(the same code path, so the two are comparable).

`collate(..., flatten=True)` lays a micro-batch out as ONE row (the rows end to end, no padding
at all): with an attention that works per example (`attention.py`, from `Batch.segments`) the
row boundaries no longer matter, so the padding would be pure waste.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubetune_trainer.dataset import IGNORE, Example


@dataclass(frozen=True)
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def best_fit_bins(lengths: Sequence[int], max_len: int, seed: int | None = None) -> list[list[int]]:
    """Indices grouped into bins of total length <= max_len: best-fit decreasing, or best-fit
    in a seeded random order when `seed` is given."""
    if seed is None:
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    else:
        order = list(range(len(lengths)))
        random.Random(seed).shuffle(order)  # noqa: S311 - reproducible, not crypto
    bins: list[list[int]] = []
    # Sorted (free space, bin index) pairs; the best fit is the smallest free space that fits.
    free: list[tuple[int, int]] = []
    for i in order:
        size = min(lengths[i], max_len)
        pos = bisect.bisect_left(free, (size, -1))
        if pos < len(free):
            space, b = free.pop(pos)
            bins[b].append(i)
            bisect.insort(free, (space - size, b))
        else:
            bins.append([i])
            bisect.insort(free, (max_len - size, len(bins) - 1))
    return bins


def pack(
    examples: Sequence[Example], max_len: int, enabled: bool = True, seed: int | None = None
) -> list[PackedRow]:
    """Rows for training: packed when enabled, else one example per row."""
    groups = (
        best_fit_bins([len(e.input_ids) for e in examples], max_len, seed)
        if enabled
        else [[i] for i in range(len(examples))]
    )
    rows = []
    for group in groups:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in sorted(group):
            example = examples[i]
            ids.extend(example.input_ids)
            # The first token of an example is never a target (nothing before it in its block).
            labels.append(IGNORE)
            labels.extend(example.labels[1:])
            positions.extend(range(len(example.input_ids)))
        rows.append(PackedRow(ids, labels, positions))
    return rows


@dataclass
class Batch:
    input_ids: Any  # torch.LongTensor [B, T]
    labels: Any
    position_ids: Any
    real_tokens: int
    label_tokens: int
    # Per row, the lengths of its blocks of restarting positions (its examples, then its
    # padding when it has some): they sum to T.
    segments: list[list[int]] = field(default_factory=list)


def _blocks(positions: Sequence[int]) -> list[int]:
    """Lengths of the runs of consecutive positions (a new block wherever p != previous + 1,
    the rule transformers uses to find packed sequences)."""
    lengths: list[int] = []
    start = 0
    for i in range(1, len(positions)):
        if positions[i] != positions[i - 1] + 1:
            lengths.append(i - start)
            start = i
    if positions:
        lengths.append(len(positions) - start)
    return lengths


def collate(rows: Sequence[PackedRow], pad_id: int, flatten: bool = False) -> Batch:
    """Pad rows to the longest one; the padding is a separate block with no loss. With
    `flatten`, one row holding all the rows end to end instead (no padding)."""
    import torch

    if flatten:
        ids_flat = [t for r in rows for t in r.input_ids]
        labels_flat = [t for r in rows for t in r.labels]
        segments = [[n for r in rows for n in _blocks(r.position_ids)]]
        ids = torch.tensor([ids_flat], dtype=torch.long)
        labels = torch.tensor([labels_flat], dtype=torch.long)
        positions = torch.tensor([[p for r in rows for p in r.position_ids]], dtype=torch.long)
        label_tokens = int((labels[:, 1:] != IGNORE).sum())
        return Batch(ids, labels, positions, len(ids_flat), label_tokens, segments)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    real = 0
    segments = []
    for b, row in enumerate(rows):
        n = len(row)
        real += n
        ids[b, :n] = torch.tensor(row.input_ids)
        labels[b, :n] = torch.tensor(row.labels)
        positions[b, :n] = torch.tensor(row.position_ids)
        blocks = _blocks(row.position_ids)
        if n < width:
            positions[b, n:] = torch.arange(width - n)
            blocks.append(width - n)
        segments.append(blocks)
    label_tokens = int((labels[:, 1:] != IGNORE).sum())
    return Batch(ids, labels, positions, real, label_tokens, segments)
