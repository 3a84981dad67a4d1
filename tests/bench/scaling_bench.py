"""Benchmark: training throughput of 1 process against N processes on the same machine and data.

Each run is the real `kubetune-trainer` (a subprocess, as in the Job): one process alone, or N
started through torch's launcher by `PET_NPROC_PER_NODE=N` (gloo on CPU, NCCL on GPUs, one GPU
per process). All runs train the same data for the same epochs with the same per-process batch
(weak scaling: N processes take N times the rows per optimizer step, so each epoch has 1/N of
the steps). Throughput is the trainer's own figure: real (non-pad) tokens per second over the
whole training loop, summed over the ranks (one progress report at the last step, whose window
is the loop). Runs alternate; medians are compared.

    .venv/bin/python tests/bench/scaling_bench.py [--procs 1 2] [--rounds 3] [--epochs 1]
        [--batch-size 4] [--model DIR] [--method full|lora] [--strategy auto|ddp|fsdp]

Prints one line per run, then for each N: `tokens/s`, `ratio vs 1` and `per-process efficiency`
(ratio / N). On a machine with fewer cores than training threads (the 2-core development
machine: each of 2 processes gets one core where one process had two) the ratio stays near 1;
it says how much the gang costs, not how it scales on GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_config(args: argparse.Namespace, root: Path, procs: int, round_: int) -> dict[str, Any]:
    name = f"scale-{procs}-{round_}"
    return {
        "jobName": name,
        "namespace": "bench",
        "uid": name,
        "spec": {
            "model": "tiny",
            "dataset": {"url": f"data/{args.dataset}"},
            "method": {"type": args.method},
            "hyperparameters": {
                "epochs": args.epochs,
                "batchSize": args.batch_size,
                "learningRate": 1e-3,
                "maxSeqLength": args.max_seq_length,
                "loggingSteps": 10_000,  # one report, at the last step: the whole loop
                "seed": 42,
            },
            "output": {"pvc": {"claimName": "kubetune-models"}},
            "checkpoint": {"everySteps": 0},
            "distributed": {"strategy": args.strategy},
        },
        "baseModel": args.model,
        "modelName": name,
        "dataRoot": str(root / "datasets"),
        "outputDir": str(root / "models"),
        "checkpointDir": str(root / "checkpoints" / name),
    }


def one_run(args: argparse.Namespace, root: Path, procs: int, round_: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "KUBETUNE_RUN_CONFIG": json.dumps(run_config(args, root, procs, round_)),
        "KUBETUNE_TERMINATION_MESSAGE_PATH": str(root / f"result-{procs}-{round_}.json"),
        "PET_NPROC_PER_NODE": str(procs),
    }
    out = subprocess.run(
        [sys.executable, "-m", "kubetune_trainer"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"{procs}-process run failed:\n{out.stderr[-3000:]}")
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    last = [line for line in lines if line.get("event") == "progress"][-1]
    result = next(line for line in lines if line.get("event") == "result")
    return {
        "procs": procs,
        "steps": last["step"],
        "tokens_per_s": last["tokensPerSecond"],
        "eval_loss": result["metrics"]["evalLossAfter"],
        "train_tokens": result["metrics"]["trainTokens"],
    }


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4, help="per process per micro-step")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--dataset", default="frigo_training.jsonl", help="packaged sample file")
    parser.add_argument("--model", default="", help="model directory (default: the tiny one)")
    parser.add_argument("--method", choices=["full", "lora"], default="full")
    parser.add_argument("--strategy", choices=["auto", "ddp", "fsdp"], default="auto")
    args = parser.parse_args()
    if 1 not in args.procs:
        args.procs = [1, *args.procs]

    from kubetune_trainer.samples import copy_samples
    from kubetune_trainer.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        copy_samples(root / "datasets")
        if not args.model:
            args.model = str(build_tiny_model(root / "tiny"))
        print(
            f"model={args.model} dataset={args.dataset} method={args.method} "
            f"strategy={args.strategy} epochs={args.epochs} batch/process={args.batch_size} "
            f"max_seq_length={args.max_seq_length} rounds={args.rounds} "
            f"cpus={os.cpu_count()} device={_device()}",
            flush=True,
        )
        results: dict[int, list[dict[str, Any]]] = {n: [] for n in args.procs}
        for round_ in range(args.rounds):
            order = args.procs if round_ % 2 == 0 else list(reversed(args.procs))
            for procs in order:
                run = one_run(args, root, procs, round_)
                results[procs].append(run)
                print(f"round {round_ + 1} {json.dumps(run)}", flush=True)

    base = statistics.median(r["tokens_per_s"] for r in results[1])
    print("\nprocesses  tokens/s  ratio_vs_1  per_process_efficiency  steps  eval_loss  (medians)")
    for procs in args.procs:
        rate = statistics.median(r["tokens_per_s"] for r in results[procs])
        ratio = rate / base
        print(
            f"{procs:>9} {rate:>9.1f} {ratio:>11.2f} {ratio / procs:>23.2f} "
            f"{int(statistics.median(r['steps'] for r in results[procs])):>6} "
            f"{statistics.median(r['eval_loss'] for r in results[procs]):>10.4f}"
        )
    top = max(args.procs)
    ratio = statistics.median(r["tokens_per_s"] for r in results[top]) / base
    print(f"scaling_ratio_{top}_vs_1: {ratio:.2f} (per-process efficiency {ratio / top:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
