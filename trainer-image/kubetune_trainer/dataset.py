"""Turning validated rows into token ids and loss labels, and the train/held-out split.

Labels are -100 where no loss is taken: the prompt of prompt/completion rows, and everything
but the assistant turns of chat rows (found by rendering the chat template on prefixes of the
conversation and mapping character spans to tokens through the tokenizer's offsets).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubetune_trainer.errors import BadInputError
from kubetune_trainer.formats import Row, RowKind

IGNORE = -100
BATCH = 512


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE)


@dataclass
class Encoded:
    examples: list[Example]
    truncated: int
    dropped: int

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)


def split_rows(rows: Sequence[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, held-out): a seeded shuffle; at least one held-out row when fraction > 0."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)  # noqa: S311 - a reproducible split, not crypto
    n_eval = 0 if fraction <= 0 else max(1, round(len(rows) * fraction))
    n_eval = min(n_eval, len(rows) - 1)
    held = sorted(order[:n_eval])
    train = sorted(order[n_eval:])
    return [rows[i] for i in train], [rows[i] for i in held]


def _render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], gen: bool) -> str:
    return str(
        tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=gen)
    )


def _chat_spans(tokenizer: Any, row: Row) -> tuple[str, list[tuple[int, int]]]:
    full = _render_chat(tokenizer, row.messages, False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(row.messages):
        if message["role"] != "assistant":
            continue
        before = _render_chat(tokenizer, row.messages[:i], True) if i else ""
        upto = _render_chat(tokenizer, row.messages[: i + 1], False)
        if not full.startswith(upto) or not upto.startswith(before):
            return full, [(0, len(full))]  # template is not prefix-stable: learn everything
        spans.append((len(before), len(upto)))
    return full, spans


def _texts(
    tokenizer: Any, kind: RowKind, rows: Sequence[Row]
) -> list[tuple[str, list[tuple[int, int]]]]:
    out = []
    for row in rows:
        if kind == "text":
            out.append((row.text, [(0, len(row.text))]))
        elif kind == "prompt_completion":
            text = row.prompt + row.completion
            out.append((text, [(len(row.prompt), len(text))]))
        else:
            out.append(_chat_spans(tokenizer, row))
    return out


def encode_rows(tokenizer: Any, kind: RowKind, rows: Sequence[Row], max_len: int) -> Encoded:
    """Token ids and labels for each row, truncated to `max_len` tokens."""
    if kind == "messages" and not getattr(tokenizer, "chat_template", None):
        raise BadInputError(
            "the dataset has chat messages but the model's tokenizer has no chat template; "
            "use prompt/completion columns instead"
        )
    eos = tokenizer.eos_token_id
    chat = kind == "messages"
    examples: list[Example] = []
    truncated = dropped = 0
    pairs = _texts(tokenizer, kind, rows)
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        enc = tokenizer(
            [text for text, _ in chunk],
            add_special_tokens=not chat,
            return_offsets_mapping=True,
            return_attention_mask=False,
        )
        for (_, spans), ids, offsets in zip(
            chunk, enc["input_ids"], enc["offset_mapping"], strict=True
        ):
            labels = [
                tok if _in_spans(offset, spans) else IGNORE
                for tok, offset in zip(ids, offsets, strict=True)
            ]
            ids = list(ids)
            if not chat and eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
                labels.append(eos)
            if len(ids) > max_len:
                truncated += 1
                ids, labels = ids[:max_len], labels[:max_len]
            example = Example(ids, labels)
            if example.trained_tokens == 0:
                dropped += 1
                continue
            examples.append(example)
    return Encoded(examples, truncated, dropped)


def _in_spans(offset: Sequence[int], spans: Sequence[tuple[int, int]]) -> bool:
    begin, end = offset[0], offset[1]
    if begin == end:  # special tokens added by the tokenizer (BOS)
        return False
    return any(end > lo and begin < hi for lo, hi in spans)
