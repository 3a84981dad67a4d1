"""A tiny Llama built offline for tests and the demo (no hub access needed).

A byte-level BPE tokenizer is trained in well under a second with the `tokenizers` library on
the packaged sample data, and a small Llama (6 layers, hidden 256: about 6M parameters) is
initialised randomly from `LlamaConfig` with a fixed seed. Both are saved with
`save_pretrained`, so the trainer loads them like any Hugging Face model directory.

    python -m kubetune_trainer.tiny_model OUT_DIR [--layers 6] [--hidden 256] [--vocab 4096]

`--arch gpt2` builds a GPT-2-shaped model instead (learned positions, LayerNorm, GELU) with a
tokenizer of its own (`<|endoftext|>`, no chat template, a smaller vocabulary by default): two
models whose eval losses per token are not comparable, for the bits-per-byte tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubetune_trainer.samples import SAMPLE_FILES, sample_path

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END]

# ChatML; `{% generation %}` is not needed: the trainer finds assistant spans by prefix.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

EXTRA_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Le réfrigérateur refroidit grâce au cycle du fluide frigorigène.",
    "0123456789 + - * / = ( ) [ ] { } < > : ; , . ! ? ' \" % & @ #",
]


def _corpus() -> Iterator[str]:
    yield from EXTRA_CORPUS
    for name in SAMPLE_FILES:
        if name.endswith(".jsonl"):
            yield from sample_path(name).read_text(encoding="utf-8").splitlines()


GPT2_EOS = "<|endoftext|>"


def build_tokenizer(vocab_size: int = 4096, *, gpt2_style: bool = False) -> object:
    """A PreTrainedTokenizerFast with a byte-level BPE vocabulary and a chat template (GPT-2
    style: `<|endoftext|>` for BOS, EOS and padding, and no chat template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [GPT2_EOS] if gpt2_style else SPECIAL_TOKENS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos, eos, pad = (GPT2_EOS,) * 3 if gpt2_style else (BOS, EOS, PAD)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, model_max_length=2048
    )
    if not gpt2_style:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_gpt2(
    out_dir: str | Path,
    *,
    layers: int = 2,
    hidden: int = 128,
    heads: int = 4,
    vocab_size: int = 512,
    max_positions: int = 1024,
    seed: int = 0,
) -> Path:
    """Write a GPT-2-style tokenizer and a randomly initialised GPT-2 to `out_dir`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    out = Path(out_dir)
    tokenizer: Any = build_tokenizer(vocab_size, gpt2_style=True)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_positions=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    (out / "kubetune-tiny.json").write_text(
        json.dumps({"parameters": params, "layers": layers, "hidden": hidden, "arch": "gpt2"})
        + "\n",
        encoding="utf-8",
    )
    return out


def build_tiny_model(
    out_dir: str | Path,
    *,
    layers: int = 6,
    hidden: int = 256,
    heads: int = 4,
    vocab_size: int = 4096,
    max_positions: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a tokenizer and a randomly initialised Llama to `out_dir`; return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    out = Path(out_dir)
    tokenizer = build_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id  # type: ignore[attr-defined]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    params = sum(p.numel() for p in model.parameters())
    (out / "kubetune-tiny.json").write_text(
        json.dumps({"parameters": params, "layers": layers, "hidden": hidden}) + "\n",
        encoding="utf-8",
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--arch", choices=("llama", "gpt2"), default="llama")
    args = parser.parse_args(argv)
    if args.arch == "gpt2":
        path = build_tiny_gpt2(args.out_dir, vocab_size=args.vocab or 512)
    else:
        path = build_tiny_model(
            args.out_dir, layers=args.layers, hidden=args.hidden, vocab_size=args.vocab or 4096
        )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
