"""QLoRA against LoRA bf16: peak GPU memory of a 7B-class Llama shape (random init is fine:
memory does not depend on the weights' values), same adapter, batch and sequence length.

The model is initialised once on the GPU in bf16 and saved (`--cache-dir`, about 13.5 GB);
each method then runs in its own process: the trainer's own `load_model` (lora: bf16 base;
qlora: NF4 base via bitsandbytes), a few optimizer steps of the trainer's loss
(`train.loss_sum`), and `torch.cuda.max_memory_allocated` after them.

    .venv/bin/python tests/bench/qlora_memory_bench.py [--steps 3] [--seq 1024] [--batch 2]

Last line: `qlora_peak_memory_ratio_vs_lora_bf16: X.XX`. GPU only (exits 2 on a CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

LLAMA_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
GB = 1024**3


def build(out: Path) -> Path:
    """The 7B-shape model, random bf16 weights, initialised on the GPU (minutes on a CPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_7B)).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    del model
    torch.cuda.empty_cache()
    return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from kubetune_crd.method import MethodSpec
    from kubetune_crd.spec import HyperparametersSpec
    from kubetune_trainer.modeling import load_model
    from kubetune_trainer.packing import Batch
    from kubetune_trainer.runtime import pick_device
    from kubetune_trainer.train import loss_sum, make_optimizer

    device = pick_device()
    method = MethodSpec.model_validate({"type": args.child, "lora": {"r": 16, "alpha": 32}})
    model = load_model(args.model, method, device, args.gradient_checkpointing)
    optimizer, scheduler = make_optimizer(model, HyperparametersSpec(), args.steps, device)
    torch.manual_seed(0)
    ids = torch.randint(10, 4000, (args.batch, args.seq))
    positions = torch.arange(args.seq).repeat(args.batch, 1)
    batch = Batch(ids, ids.clone(), positions, ids.numel(), ids.numel())
    loaded = torch.cuda.memory_allocated() / GB
    torch.cuda.reset_peak_memory_stats()
    for _ in range(args.steps):
        loss = loss_sum(model, batch, device) / batch.label_tokens
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return {
        "method": args.child,
        "weights_gb": round(loaded, 2),
        "peak_gb": round(torch.cuda.max_memory_allocated() / GB, 2),
        "loss": round(float(loss), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", choices=["lora", "qlora"], help=argparse.SUPPRESS)
    parser.add_argument("--model", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default="", help="keep the 7B-shape model here (reruns)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("qlora_memory_bench needs a CUDA GPU (QLoRA is GPU only)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        model = build(Path(args.cache_dir or tmp) / "llama-7b-shape")
        results = {}
        for method in ("lora", "qlora"):
            flags = ["--steps", str(args.steps), "--seq", str(args.seq), "--batch", str(args.batch)]
            if args.gradient_checkpointing:
                flags.append("--gradient-checkpointing")
            cmd = [sys.executable, __file__, "--child", method, "--model", str(model), *flags]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(results[method]), flush=True)
    ratio = results["qlora"]["peak_gb"] / results["lora"]["peak_gb"]
    print(f"qlora_peak_memory_ratio_vs_lora_bf16: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
