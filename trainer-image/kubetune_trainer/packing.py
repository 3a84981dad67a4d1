"""Sequence packing and batching.

Packing puts several examples into one sequence of at most `max_len` tokens (best-fit
decreasing: examples are never split). Position ids restart at 0 for each example; with no
attention mask, transformers turns those restarts into a block-diagonal causal mask, so an
example never attends to its neighbours. Padding at the end of a batch is its own block with
labels -100: it costs compute but changes no loss.

Without packing each sequence holds one example and batches are padded to their longest row
(the same code path, so the two are comparable).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubetune_trainer.dataset import IGNORE, Example


@dataclass(frozen=True)
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def best_fit_bins(lengths: Sequence[int], max_len: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= max_len (best-fit decreasing)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
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


def pack(examples: Sequence[Example], max_len: int, enabled: bool = True) -> list[PackedRow]:
    """Rows for training: packed when enabled, else one example per row."""
    groups = (
        best_fit_bins([len(e.input_ids) for e in examples], max_len)
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


def collate(rows: Sequence[PackedRow], pad_id: int) -> Batch:
    """Pad rows to the longest one; the padding is a separate block with no loss."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    real = 0
    for b, row in enumerate(rows):
        n = len(row)
        real += n
        ids[b, :n] = torch.tensor(row.input_ids)
        labels[b, :n] = torch.tensor(row.labels)
        positions[b, :n] = torch.tensor(row.position_ids)
        if n < width:
            positions[b, n:] = torch.arange(width - n)
    label_tokens = int((labels[:, 1:] != IGNORE).sum())
    return Batch(ids, labels, positions, real, label_tokens)
