"""Benchmark: the kubetune trainer (packed sequences, lean loop) against a plain transformers
`Trainer` with per-batch padding and no packing: same model, data, epochs, learning rate,
seeds and machine; runs alternate in one invocation, each in its own process (peak RSS is per
run).

Reported per model (`--model`, repeatable: tiny, smollm2, llama-1b or a directory; see
bench_models.py) and mode: real (non-pad) tokens/s of the training loop, the held-out eval loss
after the same real tokens (both see every training example the same number of times, scored by
the same function), peak memory (GPU: `torch.cuda.max_memory_allocated` over the training
loop; CPU: peak RSS of the run's process), MFU (6 * N * tokens/s / the device's bf16 peak, the
peak printed; n/a on a CPU unless `--peak-flops`), and the tokens the batches really held
(`pad_fraction`). Batch sizes
give both about the same real tokens per optimizer step and the packed length is picked so
both take the same number of steps (same warmup and linear decay), so the eval losses compare
the same optimisation work, not just the same data.

Round r trains both with seed+r (data order and, for kubetune, the packing); the held-out split
is the same in every run. The eval loss after ~54 steps from a random init varies by a few
percent from seed to seed, so it is compared as the mean over the rounds' seeds, and the
per-round differences are printed to show that spread. Throughput: medians, and per round.

    .venv/bin/python tests/bench/trainer_bench.py [--rounds 4] [--epochs 2] [--with-hf-packed]
        [--model tiny|smollm2|llama-1b|DIR ...] [--warmup-rounds N] [--peak-flops F]
    # a lent GPU (issue 18): both real-weight and ~1B models, one warm-up round first
    .venv/bin/python tests/bench/trainer_bench.py --model smollm2 --model llama-1b --rounds 3

Last line per model: `throughput_ratio_vs_hf_padded: X.XX` (kubetune / HF padded, medians).
Goal: >= 2.0 with eval losses within 2% (CPU, tiny); on a GPU see issue 18.
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

import bench_models
import hf_baseline

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = ("kubetune", "hf_padded")
MB = 1024 * 1024


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
    from kubetune_crd.method import MethodSpec
    from kubetune_crd.spec import HyperparametersSpec
    from kubetune_trainer import fast_paths
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
    if device.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    fast = "none"
    if args.child == "kubetune":
        fast = fast_paths.enable(model, device, args.torch_compile).describe()
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
        seconds, steps, processed = hf_baseline.train(
            args, model, tokenizer, train, hp, pad_id, packed_length
        )

    peak_mb = _peak_memory_mb(device)
    eval_loss = evaluate(model, eval_rows, 8, pad_id, device)
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
        "peak_memory_mb": round(peak_mb, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "fast_paths": fast,
    }


def _peak_memory_mb(device: Any) -> float:
    """GPU: the most memory torch allocated since the reset before training; CPU: peak RSS
    of this process (the run has it to itself)."""
    import torch

    if device.device.type == "cuda":
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated()) / MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _kubetune_processed(rows: list[Any], schedule: Any, total: int, flatten: bool) -> int:
    """Tokens the kubetune batches really hold (padding included), replaying the schedule."""
    processed = 0
    cache: dict[int, list[int]] = {}
    for step in range(total):
        for idx in schedule.step_rows(step, cache):
            lengths = [len(rows[i]) for i in idx]
            processed += sum(lengths) if flatten else max(lengths) * len(lengths)
    return processed


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


def _child_cmd(args: argparse.Namespace, model: str, mode: str, seed: int) -> list[str]:
    flags = {
        "--child": mode,
        "--model": model,
        "--dataset": args.dataset,
        "--epochs": args.epochs,
        "--max-seq-length": args.max_seq_length,
        "--hf-batch-size": args.hf_batch_size,
        "--learning-rate": args.learning_rate,
        "--seed": seed,
        "--split-seed": args.seed,
        "--pack-length": args.pack_length,
    }
    compile_flag = ["--torch-compile"] if args.torch_compile else []
    return [sys.executable, __file__, *(str(x) for kv in flags.items() for x in kv), *compile_flag]


def _rounds(args: argparse.Namespace, model: str, modes: list[str]) -> dict[str, list[Any]] | None:
    """Alternating rounds of every mode (after the warm-up rounds): their results by mode."""
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    warmup = args.warmup_rounds if args.warmup_rounds >= 0 else int(_device_name() != "cpu")
    for round_ in range(-warmup, args.rounds):
        for mode in modes if round_ % 2 == 0 else list(reversed(modes)):
            cmd = _child_cmd(args, model, mode, args.seed + round_)
            out = subprocess.run(
                cmd, capture_output=True, text=True, check=False, env=_child_env(args)
            )
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return None
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if round_ < 0:  # the first runs on a fresh GPU machine pay its cold start
                print(f"warm-up (not counted) {json.dumps(result)}", flush=True)
                continue
            results[mode].append(result)
            print(f"round {round_ + 1} {json.dumps(result)}", flush=True)
    return results


def _report(args: argparse.Namespace, name: str, results: dict[str, list[Any]]) -> None:
    """The per-model table, the paired per-round figures, MFU and the ratio lines."""
    modes = list(results)

    def med(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[mode]))

    def mean(mode: str, key: str) -> float:
        return float(statistics.fmean(r[key] for r in results[mode]))

    device = _device_name()
    peak, source = bench_models.peak_flops(device, args.peak_flops)
    memory = "peak_gpu_mb" if device != "cpu" else "peak_rss_mb"
    print(
        f"\n[{name}] mode        real_tok/s  eval_loss  pad_frac  steps  batch  seq_len "
        f"{memory:>12}    mfu   (tok/s, pad, memory: medians; eval_loss: mean over seeds)"
    )
    for mode in modes:
        tok_s = med(mode, "real_tokens_per_s")
        util = bench_models.mfu(int(med(mode, "parameters")), tok_s, peak)
        print(
            f"[{name}] {mode:<11} {tok_s:>10.1f} {mean(mode, 'eval_loss'):>10.4f} "
            f"{med(mode, 'pad_fraction'):>9.3f} {int(med(mode, 'steps')):>6} "
            f"{int(med(mode, 'batch_size')):>6} {int(med(mode, 'seq_length')):>8} "
            f"{med(mode, 'peak_memory_mb'):>12.1f} "
            f"{'n/a' if util is None else f'{100 * util:.1f}%':>6}"
        )
    n = int(med("kubetune", "parameters"))
    print(f"[{name}] kubetune fast paths: {results['kubetune'][0]['fast_paths']}")
    print(f"[{name}] MFU = 6 * N * real_tok/s / peak, N = {n:,} parameters, peak: {source}")
    # Paired by round (same seed, same machine moment): the spread shows the run-to-run noise.
    pairs = list(zip(results["kubetune"], results["hf_padded"], strict=True))
    ratios = [k["real_tokens_per_s"] / h["real_tokens_per_s"] for k, h in pairs]
    diffs = [100 * (k["eval_loss"] - h["eval_loss"]) / h["eval_loss"] for k, h in pairs]
    print(f"[{name}] per-round throughput ratio: " + " ".join(f"{r:.2f}" for r in ratios))
    print(f"[{name}] per-round eval loss diff:   " + " ".join(f"{d:+.2f}%" for d in diffs))
    kt, hf = mean("kubetune", "eval_loss"), mean("hf_padded", "eval_loss")
    spread = f" (per-round sd {statistics.stdev(diffs):.2f}%)" if len(diffs) > 1 else ""
    print(f"[{name}] eval_loss_diff_vs_hf_padded: {100 * (kt - hf) / hf:+.2f}%{spread}")
    memory_ratio = med("kubetune", "peak_memory_mb") / med("hf_padded", "peak_memory_mb")
    print(f"[{name}] peak_memory_ratio_vs_hf_padded: {memory_ratio:.2f}")
    if "hf_packed" in results:
        ratio_loop = med("kubetune", "real_tokens_per_s") / med("hf_packed", "real_tokens_per_s")
        print(f"[{name}] loop_ratio_vs_hf_trainer_packed: {ratio_loop:.2f}")
    ratio = med("kubetune", "real_tokens_per_s") / med("hf_padded", "real_tokens_per_s")
    print(f"[{name}] throughput_ratio_vs_hf_padded: {ratio:.2f}")


def parent(args: argparse.Namespace) -> int:
    modes = list(MODES) + (["hf_packed"] if args.with_hf_packed else [])
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir or tmp)
        for name in args.model or ["tiny"]:
            model = str(bench_models.resolve(name, cache))
            print(
                f"model={model} dataset={args.dataset} epochs={args.epochs} "
                f"max_seq_length={args.max_seq_length} hf_batch={args.hf_batch_size} "
                f"lr={args.learning_rate} rounds={args.rounds} cpus={os.cpu_count()} "
                f"device={_device_name()} omp_wait_policy={args.omp_wait_policy}",
                flush=True,
            )
            results = _rounds(args, model, modes)
            if results is None:
                return 1
            _report(args, name, results)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", choices=[*MODES, "hf_packed"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--model",
        action="append",
        help="tiny (default), smollm2, llama-1b or a model directory; repeat for several",
    )
    parser.add_argument("--cache-dir", default="", help="keep the built models here (reruns)")
    parser.add_argument(
        "--peak-flops", type=float, default=0.0, help="peak bf16 FLOP/s for MFU (default: table)"
    )
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
        "--torch-compile",
        action="store_true",
        help="kubetune mode: torch.compile each decoder layer (hyperparameters.torchCompile)",
    )
    parser.add_argument(
        "--with-hf-packed", action="store_true", help="also time HF Trainer on packed rows"
    )
    args = parser.parse_args()
    if args.child:
        args.model = args.model[0]
        print(json.dumps(child(args)))
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
