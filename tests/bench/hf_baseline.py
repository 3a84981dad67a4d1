"""The trainer bench's baseline: a plain transformers `Trainer` over the same examples, with
per-batch padding (`DataCollatorForSeq2Seq`, no packing), or over kubetune's packed rows
(`--with-hf-packed`, to time the loop alone). Kept apart from trainer_bench.py's timing and
reporting so each stays readable.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any


def length(feature: Any) -> int:
    return len(feature["input_ids"]) if isinstance(feature, dict) else len(feature)


def train(
    args: argparse.Namespace,
    model: Any,
    tokenizer: Any,
    train: list[Any],
    hp: Any,
    pad_id: int,
    packed_length: int,
) -> tuple[float, int, int]:
    """transformers.Trainer: per-batch padding (DataCollatorForSeq2Seq), or our packed rows."""
    import math

    import torch
    from kubetune_trainer.packing import collate, pack
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    if args.child == "hf_packed":
        rows = pack(train, packed_length, True, args.seed)
        features: list[Any] = rows

        def collator(batch: list[Any]) -> dict[str, Any]:
            b = collate(batch, pad_id)
            return {"input_ids": b.input_ids, "labels": b.labels, "position_ids": b.position_ids}

        data_collator: Any = collator
        padded_counter = rows
    else:
        features = [{"input_ids": e.input_ids, "labels": e.labels} for e in train]
        data_collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        padded_counter = None

    class ListDataset(torch.utils.data.Dataset[Any]):
        def __len__(self) -> int:
            return len(features)

        def __getitem__(self, i: int) -> Any:
            return features[i]

    steps_per_epoch = math.ceil(len(features) / hp.batch_size)
    total = steps_per_epoch * hp.epochs
    processed = 0
    real = 0

    def counting(batch: list[Any]) -> Any:
        nonlocal processed, real
        out = data_collator(batch)
        processed += int(out["input_ids"].numel())
        real += sum(length(f) for f in batch)
        return out

    with tempfile.TemporaryDirectory() as out_dir:
        targs = TrainingArguments(
            output_dir=out_dir,
            per_device_train_batch_size=hp.batch_size,
            num_train_epochs=hp.epochs,
            learning_rate=hp.learning_rate,
            warmup_steps=math.ceil(total * hp.warmup_ratio),
            weight_decay=0.0,
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            seed=hp.seed,
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
            # Same precision as the kubetune loop (bf16 autocast over fp32 weights on a GPU).
            bf16=bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
            remove_unused_columns=False,
        )
        trainer = Trainer(
            model=model, args=targs, train_dataset=ListDataset(), data_collator=counting
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    del padded_counter
    expected = sum(length(f) for f in features) * hp.epochs
    assert real == expected, (real, expected)  # every example seen `epochs` times
    return seconds, total, processed
