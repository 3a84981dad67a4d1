"""A stand-in for `kubetune-trainer` in operator tests (run by the node agent as the container).

It honours the trainer contract (kubetune_crd.trainer_contract) without any ML: reads
KUBETUNE_RUN_CONFIG, posts Progress (with its metric points) to the operator with the
projected token, writes a model directory and a TrainerResult to the termination log, and
exits with a chosen code.

Its behaviour comes from the dataset URL's file name, `_`-separated `key-value` words:
`data/fake_steps-3_interval-0.5_exit-42.csv` runs 3 steps 0.5 s apart, then exits 42.
Keys: steps (default 3), interval (seconds, default 0.3), exit (default 0),
message (a word for the TrainerResult message), noresult (1: write no TrainerResult),
invalid (a line number: `--validate-only` finds that row bad), validate (seconds
`--validate-only` takes, default 0).

`--validate-only` (the operator's CPU pre-flight) trains nothing: it fails with exit 42 and a
message naming the line when `invalid` is set, else reports what this stand-in would run
(its steps and their time, the world size from torchrun's PET_* variables, the rows of the
dataset file when it exists) in the TrainerResult's `validation`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TERMINATION_LOG = "/dev/termination-log"


def options(url: str) -> dict[str, str]:
    stem = Path(url).stem
    out: dict[str, str] = {}
    for word in stem.split("_")[1:]:
        key, _, value = word.partition("-")
        out[key] = value
    return out


def post_progress(cfg: dict[str, Any], body: dict[str, Any]) -> str:
    url, token_path = cfg.get("progressUrl"), cfg.get("progressTokenPath")
    if not url or not token_path:
        return "progress disabled"
    try:
        token = Path(token_path).read_text().strip()
        req = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return f"progress {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"progress {exc.code} {exc.read()[:200]!r}"
    except OSError as exc:
        return f"progress unreachable: {exc}"


def write_result(result: dict[str, Any]) -> None:
    try:
        Path(TERMINATION_LOG).write_text(json.dumps(result))
    except OSError as exc:
        print(f"cannot write the termination log: {exc}", flush=True)


def _rows(cfg: dict[str, Any]) -> int | None:
    """Data rows of the dataset file (a header line and blank lines not counted), if it exists."""
    path = Path(cfg.get("dataRoot") or "/") / cfg["spec"]["dataset"]["url"]
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return None
    return max(len(lines) - 1, 0)


def validate(cfg: dict[str, Any], opts: dict[str, str], argv: list[str]) -> int:
    """The stand-in's --validate-only: the same contract as the trainer's, no data science."""
    url = cfg["spec"]["dataset"]["url"]
    time.sleep(float(opts.get("validate", "0")))
    bad_line = opts.get("invalid")
    if bad_line:
        message = f"dataset {url}: line {bad_line}: the completion is empty"
        write_result({"outcome": "bad_input", "message": message})
        print(json.dumps({"event": "result", "exitCode": 42, "message": message}), flush=True)
        return 42
    steps = int(opts.get("steps", "3"))
    interval = float(opts.get("interval", "0.3"))
    device = argv[argv.index("--target-device") + 1] if "--target-device" in argv else "cpu"
    world = int(os.environ.get("PET_NNODES", "1")) * int(os.environ.get("PET_NPROC_PER_NODE", "1"))
    report: dict[str, Any] = {
        "totalSteps": steps,
        "etaSeconds": round(steps * interval, 2),
        "device": device,
        "worldSize": world,
    }
    rows = _rows(cfg)
    if rows is not None:
        report["rows"] = rows
    message = f"valid: {steps} steps, ETA ~{steps * interval:.0f}s on {device}"
    write_result({"outcome": "succeeded", "message": message, "validation": report})
    print(json.dumps({"event": "validation", **report}), flush=True)
    return 0


def main() -> int:
    cfg = json.loads(os.environ["KUBETUNE_RUN_CONFIG"])
    opts = options(cfg["spec"]["dataset"]["url"])
    if "--validate-only" in sys.argv[1:]:
        return validate(cfg, opts, sys.argv[1:])
    steps = int(opts.get("steps", "3"))
    interval = float(opts.get("interval", "0.3"))
    code = int(opts.get("exit", "0"))

    def on_term(signum: int, frame: Any) -> None:
        write_result({"outcome": "preempted", "message": "SIGTERM"})
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    print(json.dumps({"event": "start", "job": cfg["jobName"], "uid": os.getuid()}), flush=True)
    for step in range(1, steps + 1):
        time.sleep(interval)
        body = {
            "fraction": round(step / steps, 4),
            "step": step,
            "totalSteps": steps,
            "epoch": round(step / steps, 4),
            "loss": round(2.0 / step, 4),
            "tokensPerSecond": 1000.0,
            "etaSeconds": round((steps - step) * interval, 2),
            "stage": "training",
        }
        # the metric points of this step, as the real trainer sends them: eval points before
        # training (step 0, the result's evalLossBefore) and after the last step
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        points: list[dict[str, Any]] = [
            {
                "step": step,
                "loss": body["loss"],
                "epoch": body["epoch"],
                "tokensPerSecond": body["tokensPerSecond"],
                "updatedAt": now,
            }
        ]
        if step == 1:
            points.insert(0, {"kind": "eval", "step": 0, "loss": 2.0, "updatedAt": now})
        if step == steps:
            points.append({"kind": "eval", "step": step, "loss": 1.0, "updatedAt": now})
        outcome = post_progress(cfg, {**body, "points": points})
        print(json.dumps({"event": "progress", **body, "post": outcome}), flush=True)
    if code != 0:
        if opts.get("noresult") != "1":
            outcome = "bad_input" if code == 42 else "retryable" if code == 75 else "error"
            message = opts.get("message", "").replace("+", " ") or f"fake failure {code}"
            write_result({"outcome": outcome, "message": message})
        return code
    model_dir = Path(cfg["outputDir"]) / cfg["modelName"]
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "adapter_model.safetensors").write_bytes(b"\0" * 1024)
    (model_dir / "adapter_config.json").write_text(json.dumps({"base": cfg["baseModel"]}))
    pvc_path = ((cfg["spec"].get("output") or {}).get("pvc") or {}).get("path", "models")
    path = f"{pvc_path}/{cfg['modelName']}"
    write_result(
        {
            "outcome": "succeeded",
            "message": "fake training done",
            "model": {
                "name": cfg["modelName"],
                "path": path,
                "uri": f"pvc://kubetune-models/{path}",
                "sizeBytes": 1024 + len(cfg["baseModel"]) + 11,
                "format": "peft-lora",
                "baseModel": cfg["baseModel"],
                "baseModelAlias": cfg.get("baseModelAlias"),
            },
            "metrics": {"trainLoss": 0.5, "evalLossBefore": 2.0, "evalLossAfter": 1.0},
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
