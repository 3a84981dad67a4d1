"""Benchmark: the kubetune trainer (packed sequences, lean loop) against a plain transformers
`Trainer` with per-batch padding and no packing: same model, data, epochs, learning rate,
seeds and machine; runs alternate in one invocation, each in its own process (peak RSS is per
run).

Reported per mode: real (non-pad) tokens/s of the training loop, the held-out eval loss after
the same real tokens (both see every training example the same number of times, scored by the
same function), peak RSS, and the tokens the batches really held (`pad_fraction`). Batch sizes
give both about the same real tokens per optimizer step and the packed length is picked so
both take the same number of steps (same warmup and linear decay), so the eval losses compare
the same optimisation work, not just the same data.

Round r trains both with seed+r (data order and, for kubetune, the packing); the held-out split
is the same in every run. The eval loss after ~54 steps from a random init varies by a few
percent from seed to seed, so it is compared as the mean over the rounds' seeds, and the
per-round differences are printed to show that spread. Throughput: medians, and per round.

    .venv/bin/python tests/bench/trainer_bench.py [--rounds 4] [--epochs 2] [--with-hf-packed]
        [--model DIR] [--warmup-rounds N]

Last line: `throughput_ratio_vs_hf_padded: X.XX` (kubetune / HF padded, medians). Goal: >= 2.0
with eval losses within 2%.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = ("kubetune", "hf_padded")


def _prepare(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    from kubetune_crd.spec import DatasetSpec
    from kubetune_trainer.dataset import encode_rows, split_rows
    from kubetune_trainer.formats import load_table
    from kubetune_trainer.modeling import load_tokenizer
    from kubetune_trainer.samples import sample_path

    tokenizer = load_tokenizer(args.model)
    table = load_table(sample_path(args.dataset), args.dataset, DatasetSpec(url=args.dataset))
    # The held-out split is the same in every run (only the training seed changes per round).
    train_rows, held_rows = split_rows(table.rows, 0.1, args.split_seed)
    train = encode_rows(tokenizer, table.kind, train_rows, args.max_seq_length).examples
    held = encode_rows(tokenizer, table.kind, held_rows, args.max_seq_length).examples
    return tokenizer, table, train, held


def kubetune_batch_size(args: argparse.Namespace, train: list[Any]) -> int:
    mean = sum(len(e.input_ids) for e in train) / len(train)
    return max(1, round(int(args.hf_batch_size) * mean / int(args.max_seq_length)))


def pack_length(args: argparse.Namespace, train: list[Any], batch: int) -> int:
    """The packed sequence length (>= max_seq_length) whose optimizer steps per epoch come
    closest to the HF baseline's: equal real tokens AND equal steps, so the eval losses
    compare the same optimisation (early in training the loss is very sensitive to steps)."""
    import math

    from kubetune_trainer.packing import pack

    if args.pack_length:
        return int(args.pack_length)
    target = math.ceil(len(train) / args.hf_batch_size)
    best, best_gap = args.max_seq_length, None
    for length in range(args.max_seq_length, 2 * args.max_seq_length + 1, 8):
        gap = abs(math.ceil(len(pack(train, length, True, args.seed)) / batch) - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = length, gap
    return int(best)


class NoCheckpoints:
    """The bench times the training steps alone, like its baseline: it checkpoints nothing
    (the trainer's own `checkpointing.Checkpointer` also saves after the last step)."""

    def after_step(self, state: Any, last: bool) -> None:
        return None

    def save(self, state: Any) -> None:
        return None


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One training run in this process; returns its measurements."""
    from kubetune_trainer.runtime import prepare_environment, quiet_libraries

    prepare_environment()
    quiet_libraries()
    import torch
    from kubetune_crd.spec import HyperparametersSpec, MethodSpec
    from kubetune_trainer.checkpoints import TrainState
    from kubetune_trainer.modeling import load_model
    from kubetune_trainer.packing import pack
    from kubetune_trainer.parallel import Parallel
    from kubetune_trainer.runtime import pick_device
    from kubetune_trainer.schedule import Schedule
    from kubetune_trainer.train import (
        LoopConfig,
        StopFlag,
        Training,
        evaluate,
        make_optimizer,
        packed_attention_enabled,
        train_loop,
    )

    tokenizer, _, train, held = _prepare(args)
    device = pick_device()
    torch.manual_seed(args.seed)
    model = load_model(args.model, MethodSpec(type="full"), device, False)
    pad_id = int(tokenizer.pad_token_id)
    eval_rows = pack(held, args.max_seq_length, True)
    real_tokens = sum(len(e.input_ids) for e in train) * args.epochs
    batch = args.hf_batch_size
    if args.child == "kubetune" or args.child == "hf_packed":
        batch = kubetune_batch_size(args, train)
    hp = HyperparametersSpec(
        epochs=args.epochs,
        batch_size=min(batch, 16),
        learning_rate=args.learning_rate,
        max_seq_length=args.max_seq_length,
        warmup_ratio=0.03,
        seed=args.seed,
        logging_steps=10_000,
    )

    packed_length = pack_length(args, train, hp.batch_size)
    if args.child == "kubetune":
        rows = pack(train, packed_length, True, args.seed)
        schedule = Schedule(len(rows), hp.batch_size, 1, hp.seed)
        total = schedule.total_steps(hp)
        optimizer, scheduler = make_optimizer(model, hp, total, device)
        state = TrainState("bench", total_steps=total)
        training = Training(Parallel(model, model, "single"), optimizer, scheduler, device)
        start = time.perf_counter()
        state = train_loop(
            training,
            rows,
            schedule,
            state,
            LoopConfig(hp, pad_id),
            lambda _p: None,
            StopFlag(),
            NoCheckpoints(),
        )
        seconds = time.perf_counter() - start
        assert state.real_tokens == real_tokens, (state.real_tokens, real_tokens)
        steps = state.step
        flat = packed_attention_enabled(model, device)
        processed = _kubetune_processed(rows, schedule, total, flat)
    else:
        seconds, steps, processed = _hf_train(
            args, model, tokenizer, train, hp, pad_id, packed_length
        )

    eval_loss = evaluate(model, eval_rows, 8, pad_id, device)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": args.child,
        "batch_size": hp.batch_size,
        "seq_length": packed_length if args.child != "hf_padded" else args.max_seq_length,
        "steps": steps,
        "seconds": round(seconds, 2),
        "real_tokens": real_tokens,
        "padded_tokens": processed,
        "real_tokens_per_s": round(real_tokens / seconds, 1),
        "pad_fraction": round(1 - real_tokens / processed, 3),
        "eval_loss": eval_loss,
        "peak_rss_mb": round(rss_mb, 1),
    }


def _length(feature: Any) -> int:
    return len(feature["input_ids"]) if isinstance(feature, dict) else len(feature)


def _kubetune_processed(rows: list[Any], schedule: Any, total: int, flatten: bool) -> int:
    """Tokens the kubetune batches really hold (padding included), replaying the schedule."""
    processed = 0
    cache: dict[int, list[int]] = {}
    for step in range(total):
        for idx in schedule.step_rows(step, cache):
            lengths = [len(rows[i]) for i in idx]
            processed += sum(lengths) if flatten else max(lengths) * len(lengths)
    return processed


def _hf_train(
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
        real += sum(_length(f) for f in batch)
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
    expected = sum(_length(f) for f in features) * hp.epochs
    assert real == expected, (real, expected)  # every example seen `epochs` times
    return seconds, total, processed


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _child_env(args: argparse.Namespace) -> dict[str, str]:
    """Both modes run under the same OpenMP wait policy: by default the library's own (the
    variable unset, as in the trainer's Job), whatever the calling shell exported."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    return env


def parent(args: argparse.Namespace) -> int:
    from kubetune_trainer.tiny_model import build_tiny_model

    modes = list(MODES) + (["hf_packed"] if args.with_hf_packed else [])
    with tempfile.TemporaryDirectory() as tmp:
        if not args.model:
            args.model = str(build_tiny_model(Path(tmp) / "tiny"))
        print(
            f"model={args.model} dataset={args.dataset} epochs={args.epochs} "
            f"max_seq_length={args.max_seq_length} hf_batch={args.hf_batch_size} "
            f"lr={args.learning_rate} rounds={args.rounds} cpus={os.cpu_count()} "
            f"device={_device_name()} omp_wait_policy={args.omp_wait_policy}",
            flush=True,
        )
        results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        warmup = args.warmup_rounds if args.warmup_rounds >= 0 else int(_device_name() != "cpu")
        for round_ in range(-warmup, args.rounds):
            order = modes if round_ % 2 == 0 else list(reversed(modes))
            for mode in order:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--model",
                    args.model,
                    "--dataset",
                    args.dataset,
                    "--epochs",
                    str(args.epochs),
                    "--max-seq-length",
                    str(args.max_seq_length),
                    "--hf-batch-size",
                    str(args.hf_batch_size),
                    "--learning-rate",
                    str(args.learning_rate),
                    "--seed",
                    str(args.seed + round_),
                    "--split-seed",
                    str(args.seed),
                    "--pack-length",
                    str(args.pack_length),
                ]
                out = subprocess.run(
                    cmd, capture_output=True, text=True, check=False, env=_child_env(args)
                )
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return 1
                result = json.loads(out.stdout.strip().splitlines()[-1])
                if round_ < 0:  # the first runs on a fresh GPU machine pay its cold start
                    print(f"warm-up (not counted) {json.dumps(result)}", flush=True)
                    continue
                results[mode].append(result)
                print(f"round {round_ + 1} {json.dumps(result)}", flush=True)

    def med(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[mode]))

    def mean(mode: str, key: str) -> float:
        return float(statistics.fmean(r[key] for r in results[mode]))

    print(
        "\nmode        real_tok/s  eval_loss  pad_frac  steps  batch  seq_len  peak_rss_mb"
        "   (tok/s, pad, rss: medians; eval_loss: mean over the rounds' seeds)"
    )
    for mode in modes:
        print(
            f"{mode:<11} {med(mode, 'real_tokens_per_s'):>10.1f} {mean(mode, 'eval_loss'):>10.4f} "
            f"{med(mode, 'pad_fraction'):>9.3f} {int(med(mode, 'steps')):>6} "
            f"{int(med(mode, 'batch_size')):>6} {int(med(mode, 'seq_length')):>8} "
            f"{med(mode, 'peak_rss_mb'):>12.1f}"
        )
    # Paired by round (same seed, same machine moment): the spread shows the run-to-run noise.
    ratios = [
        k["real_tokens_per_s"] / h["real_tokens_per_s"]
        for k, h in zip(results["kubetune"], results["hf_padded"], strict=True)
    ]
    diffs = [
        100 * (k["eval_loss"] - h["eval_loss"]) / h["eval_loss"]
        for k, h in zip(results["kubetune"], results["hf_padded"], strict=True)
    ]
    print("per-round throughput ratio: " + " ".join(f"{r:.2f}" for r in ratios))
    print("per-round eval loss diff:   " + " ".join(f"{d:+.2f}%" for d in diffs))
    kt, hf = mean("kubetune", "eval_loss"), mean("hf_padded", "eval_loss")
    spread = f" (per-round sd {statistics.stdev(diffs):.2f}%)" if len(diffs) > 1 else ""
    print(f"eval_loss_diff_vs_hf_padded: {100 * (kt - hf) / hf:+.2f}%{spread}")
    if args.with_hf_packed:
        ratio_loop = med("kubetune", "real_tokens_per_s") / med("hf_packed", "real_tokens_per_s")
        print(f"loop_ratio_vs_hf_trainer_packed: {ratio_loop:.2f}")
    ratio = med("kubetune", "real_tokens_per_s") / med("hf_padded", "real_tokens_per_s")
    print(f"throughput_ratio_vs_hf_padded: {ratio:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", choices=[*MODES, "hf_packed"], help=argparse.SUPPRESS)
    parser.add_argument("--model", default="", help="model directory (default: build the tiny one)")
    parser.add_argument("--dataset", default="frigo_training.jsonl", help="packaged sample file")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--hf-batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--seed", type=int, default=42, help="round r trains with seed+r (data order, dropout)"
    )
    parser.add_argument("--split-seed", type=int, default=42, help=argparse.SUPPRESS)
    parser.add_argument(
        "--pack-length",
        type=int,
        default=0,
        help="kubetune packed sequence length (default: the one matching the HF steps/epoch)",
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=["default", "PASSIVE", "ACTIVE"],
        default="default",
        help="OpenMP wait policy of both modes' runs (default: the library's, as in a Job)",
    )
    parser.add_argument(
        "--warmup-rounds",
        type=int,
        default=-1,
        help="untimed rounds first (default: 1 on a GPU, whose first runs pay a cold start)",
    )
    parser.add_argument(
        "--with-hf-packed", action="store_true", help="also time HF Trainer on packed rows"
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
