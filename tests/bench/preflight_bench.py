"""Benchmark: where the CPU pre-flight (`kubetune-trainer --validate-only`) spends its time.

The pre-flight pod runs the trainer once on CPU before any GPU is requested (issue 16 wants it
to add only a few seconds). This runs it as the pod does (a fresh interpreter, the tiny model,
the 240-row sample, `--target-device cuda`) several times and prints the median wall time and
peak RSS, then times its stages in one process: importing the trainer, quieting the libraries
(imports transformers), loading the tokenizer (imports torch through transformers), reading,
validating and tokenizing the data, and the model's shape from its config (a meta model).

    .venv/bin/python tests/bench/preflight_bench.py [--runs 3]
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

STAGES = r"""
import os, sys, time
from pathlib import Path
t = [time.perf_counter()]
def mark(what):
    now = time.perf_counter(); print(f"  {what:44s} {now - t[0]:6.2f} s"); t[0] = now
from kubetune_trainer import main
from kubetune_trainer.runtime import prepare_environment, quiet_libraries
prepare_environment(); mark("import kubetune_trainer.main")
quiet_libraries(); mark("quiet_libraries (transformers import)")
from kubetune_crd.trainer_contract import TrainerRunConfig
from kubetune_trainer.modeling import load_tokenizer, model_shape
from kubetune_trainer.plan import prepare_data
cfg = TrainerRunConfig.model_validate_json(os.environ["KUBETUNE_RUN_CONFIG"])
tok = load_tokenizer(cfg.base_model); mark("tokenizer (imports torch via transformers)")
prepare_data(cfg, tok, Path(sys.argv[1]), 1); mark("data: read, validate, tokenize, plan")
model_shape(cfg.base_model); mark("model shape from config (meta model)")
print("  datasets imported:", "datasets" in sys.modules, "| peft:", "peft" in sys.modules)
"""


def run_config(root: Path) -> dict[str, object]:
    from kubetune_trainer.samples import copy_samples
    from kubetune_trainer.tiny_model import build_tiny_model

    model = build_tiny_model(root / "tiny")
    copy_samples(root / "datasets")
    return {
        "jobName": "bench",
        "namespace": "default",
        "uid": "uid-bench",
        "spec": {
            "model": "tiny",
            "dataset": {"url": "data/frigo_training.csv"},
            "method": {"type": "lora", "lora": {"r": 4, "alpha": 8}},
            "hyperparameters": {"epochs": 1, "batchSize": 4, "maxSeqLength": 128},
            "output": {"pvc": {"claimName": "kubetune-models"}},
        },
        "baseModel": str(model),
        "baseModelAlias": "tiny",
        "modelName": "bench",
        "dataRoot": str(root / "datasets"),
        "outputDir": str(root / "models"),
        "checkpointDir": str(root / "checkpoints"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="preflight-bench-") as tmp:
        root = Path(tmp)
        env = {
            **os.environ,
            "KUBETUNE_RUN_CONFIG": json.dumps(run_config(root)),
            "KUBETUNE_TERMINATION_MESSAGE_PATH": str(root / "termination-log"),
            "HF_HUB_OFFLINE": "1",
        }
        command = [sys.executable, "-m", "kubetune_trainer", "--validate-only"]
        command += ["--target-device", "cuda"]
        walls: list[float] = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(command, env=env, cwd=root, check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - started)
        rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"validate-only runs: {', '.join(f'{w:.2f}' for w in walls)} s")
        print("stages (one process):")
        (root / "work").mkdir()
        subprocess.run([sys.executable, "-c", STAGES, str(root / "work")], env=env, check=True)
        print(f"peak_rss_mib: {rss_mib:.0f}")
        print(f"median_wall_seconds: {statistics.median(walls):.2f}")


if __name__ == "__main__":
    main()
