"""Turn a GGUF checkpoint into a regular Hugging Face model directory (safetensors).

transformers dequantises GGUF weights on load (`gguf_file=`, needs the `gguf` package), but
the loaded model still carries a `quantization_config` that would make the trainer treat it
as quantised. The model is rebuilt with `from_config` (that entry dropped) and the weights
copied with `load_state_dict`, then saved with `save_pretrained`.

    python -m kubetune_trainer.gguf_import FILE.gguf OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def import_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf_path)
    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.load_state_dict(loaded.state_dict())
    if model.config.tie_word_embeddings:
        model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m kubetune_trainer.gguf_import FILE.gguf OUT_DIR", file=sys.stderr)
        return 2
    print(import_gguf(args[0], args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
