"""What the end of a run reports besides eval loss: bits per byte, the champion, the answers.

Eval loss per token cannot rank models with different tokenizers (a token is a different
amount of text for gpt2 and for a Llama), so every run also reports the held-out bits per
byte: the summed next-token NLL of the scored held-out tokens (nats) / ln 2 / the UTF-8 bytes
of the text those tokens spell. It comes from the eval loss passes the run makes anyway (mean
loss x scored tokens): no extra forward pass for the base and the fine-tuned model.

When the run config names a champion (the promotion alias's current model), it is loaded on
rank 0 after training (a LoRA adapter on its base, its merged copy, or a full model) and
scored on THIS run's held-out rows, re-tokenized with its own tokenizer, so the promotion
decision compares both models on the same text. A champion that cannot be loaded is
reported (None and a note), never a failed run.

`spec.evaluation.prompts` are answered greedily (at most `maxNewTokens`, the chat template
when the tokenizer has one) by the base model and by the fine-tuned one: for LoRA both at the
end (the adapter switched off, then on), for full fine-tuning the base answers before training.
The answers stored in the termination message are shortened to fit its 4 KiB; the model
manifest keeps them whole.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_crd import names
from kubetune_crd.promotion import EvaluationSpec
from kubetune_crd.status import Metrics, Sample
from kubetune_crd.trainer_contract import ChampionModel, TrainerRunConfig

from kubetune_trainer.dataset import IGNORE, Example, encode_rows, split_rows
from kubetune_trainer.model_cache import local_model
from kubetune_trainer.packing import pack
from kubetune_trainer.plan import DataPlan
from kubetune_trainer.runtime import DeviceInfo

log = logging.getLogger(__name__)

SAMPLES_BUDGET_BYTES = 2048
"""Room the answers may take in the termination message (the rest: model, metrics, message)."""
ELLIPSIS = "…"


# -- bits per byte ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeldOutText:
    """The held-out text as one model's tokenizer scores it."""

    scored_tokens: int
    """Tokens that carry a loss (the eval loss is the mean NLL over them)."""
    text_bytes: int
    """UTF-8 bytes of the text those tokens decode to (special tokens excluded)."""


def held_out_text(tokenizer: Any, examples: Sequence[Example]) -> HeldOutText:
    """Scored tokens and their bytes, per example as packing scores it (the first token of an
    example is never a target)."""
    tokens = 0
    size = 0
    for example in examples:
        scored = [label for label in example.labels[1:] if label != IGNORE]
        tokens += len(scored)
        size += len(tokenizer.decode(scored, skip_special_tokens=True).encode("utf-8"))
    return HeldOutText(tokens, size)


def bits_per_byte(mean_loss: float | None, text: HeldOutText) -> float | None:
    """Summed NLL (mean loss in nats x scored tokens) / ln 2 / bytes; None without a loss or
    text; inf for a diverged model (a non-finite loss)."""
    if mean_loss is None or text.text_bytes <= 0 or text.scored_tokens <= 0:
        return None
    if not math.isfinite(mean_loss):
        return math.inf
    return round(mean_loss * text.scored_tokens / math.log(2) / text.text_bytes, 6)


def with_bits_per_byte(metrics: Metrics, tokenizer: Any, plan: DataPlan) -> Metrics:
    """The metrics with held-out bits per byte before and after, and the bytes they cover."""
    text = held_out_text(tokenizer, plan.held_out.examples)
    return metrics.model_copy(
        update={
            "bits_per_byte_before": bits_per_byte(metrics.eval_loss_before, text),
            "bits_per_byte_after": bits_per_byte(metrics.eval_loss_after, text),
            "eval_bytes": text.text_bytes or None,
        }
    )


# -- the champion -------------------------------------------------------------------------------
def champion_dir(champion: ChampionModel, cfg: TrainerRunConfig, work: Path) -> Path:
    """The champion's files on this pod: its path (relative: inside the models mount), else a
    download of its S3 prefix."""
    if champion.path:
        path = Path(champion.path)
        return path if path.is_absolute() else Path(names.MODELS_MOUNT) / path
    if not champion.uri:
        raise ValueError("the champion has neither path nor uri")
    s3 = cfg.spec.output.s3 if cfg.spec.output else None
    return download_prefix(
        champion.uri, work / "champion", s3.endpoint_url if s3 else None, s3.region if s3 else None
    )


def download_prefix(
    uri: str, dest: Path, endpoint_url: str | None = None, region: str | None = None
) -> Path:
    """Every object under `uri/` into `dest` (relative keys kept)."""
    from kubetune_trainer.sources import classify_s3_error, s3_client, split_s3_uri

    bucket, prefix = split_s3_uri(uri.rstrip("/"))
    client = s3_client(endpoint_url, region)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        if not keys:
            raise ValueError(f"no objects under {uri}")
        for key in keys:
            target = dest / key[len(prefix) + 1 :]
            if ".." in Path(key).parts:
                raise ValueError(f"refusing object key {key!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
    except ValueError:
        raise
    except Exception as exc:  # boto3's errors, classified without the address
        raise classify_s3_error(exc, f"champion {uri}") from None
    return dest


def load_champion(
    champion: ChampionModel, directory: Path, base_model: str, device: DeviceInfo
) -> tuple[Any, Any]:
    """(model, tokenizer) of the champion, in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_trainer.modeling import load_tokenizer

    dtype = torch.bfloat16 if device.bf16 else torch.float32
    fmt = champion.format
    merged = directory / "merged"
    if fmt == names.FORMAT_FULL or (fmt.endswith(names.MERGED_SUFFIX) and merged.is_dir()):
        source = directory if fmt == names.FORMAT_FULL else merged
        model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    elif fmt.startswith(names.FORMAT_LORA):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(champion.base_model or base_model, dtype=dtype)
        model = PeftModel.from_pretrained(base, directory)
    else:
        raise ValueError(f"unknown model format {fmt!r}")
    try:
        tokenizer = load_tokenizer(str(directory))
    except Exception:  # an adapter saved without its tokenizer: the base model's
        tokenizer = load_tokenizer(champion.base_model or base_model)
    model.to(device.device)
    model.eval()
    return model, tokenizer


def score_held_out(
    model: Any, tokenizer: Any, cfg: TrainerRunConfig, plan: DataPlan, device: DeviceInfo
) -> float | None:
    """Bits per byte of any model on this run's held-out rows, tokenized with its tokenizer."""
    from kubetune_trainer.train import evaluate

    spec, hp = cfg.spec, cfg.spec.hyperparameters
    _, held_rows = split_rows(plan.table.rows, spec.dataset.validation_split, hp.seed)
    encoded = encode_rows(tokenizer, plan.table.kind, held_rows, hp.max_seq_length)
    rows = pack(encoded.examples, hp.max_seq_length, True)
    loss = evaluate(model, rows, hp.batch_size, int(tokenizer.pad_token_id), device)
    return bits_per_byte(loss, held_out_text(tokenizer, encoded.examples))


def champion_bits_per_byte(
    cfg: TrainerRunConfig, plan: DataPlan, device: DeviceInfo, work: Path
) -> tuple[float | None, str | None]:
    """(bits per byte of the champion on this run's held-out text, a note when it failed)."""
    champion = cfg.champion
    if champion is None:
        return None, None
    if not plan.held_out.examples:
        return None, "no held-out rows to evaluate the current model on"
    try:
        directory = champion_dir(champion, cfg, work)
        if champion.base_model:  # an hf:// base model: its snapshot in the model cache
            base = local_model(champion.base_model, cfg, work)
            champion = champion.model_copy(update={"base_model": base})
        model, tokenizer = load_champion(champion, directory, cfg.base_model, device)
        try:
            return score_held_out(model, tokenizer, cfg, plan, device), None
        finally:
            del model
    except Exception as exc:  # any failure: reported, the run still succeeds
        note = f"current model {champion.name} could not be evaluated: {str(exc)[:200]}"
        log.warning("%s", note)
        return None, note


# -- answers ------------------------------------------------------------------------------------
def prompt_ids(tokenizer: Any, prompt: str, max_tokens: int) -> list[int]:
    """The prompt as a user turn of the chat template when there is one, else as plain text;
    at most the last `max_tokens` tokens."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(str(text), add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    return list(ids)[-max_tokens:]


def answer(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, max_prompt: int
) -> list[str]:
    """Greedy answers (the new tokens only, decoded without special tokens)."""
    import torch
    from transformers import GenerationConfig

    if not prompts:
        return []
    device = next(model.parameters()).device
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=max_new_tokens,
        do_sample=False,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    was_training = model.training
    model.eval()
    answers = []
    try:
        with torch.no_grad():
            for prompt in prompts:
                ids = torch.tensor([prompt_ids(tokenizer, prompt, max_prompt)], device=device)
                out = model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
                )
                new = out[0, ids.shape[1] :].tolist()
                answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    finally:
        if was_training:
            model.train()
    return answers


def prompts_of(cfg: TrainerRunConfig) -> EvaluationSpec | None:
    evaluation = cfg.spec.evaluation
    return evaluation if evaluation is not None and evaluation.prompts else None


def answers_before(cfg: TrainerRunConfig, model: Any, tokenizer: Any) -> list[str] | None:
    """The base model's answers before full fine-tuning (LoRA: None, answered at the end)."""
    evaluation = prompts_of(cfg)
    if evaluation is None or cfg.spec.method.adapter:
        return None
    hp = cfg.spec.hyperparameters
    return answer(
        model, tokenizer, evaluation.prompts, evaluation.max_new_tokens, hp.max_seq_length
    )


def samples(
    cfg: TrainerRunConfig, model: Any, tokenizer: Any, before: list[str] | None
) -> list[Sample]:
    """Each prompt with the base model's and the trained model's answer. `model` is the plain
    trained model (a peft model for LoRA: its adapter is switched off for the base answers)."""
    evaluation = prompts_of(cfg)
    if evaluation is None:
        return []
    prompts, limit = evaluation.prompts, evaluation.max_new_tokens
    max_prompt = cfg.spec.hyperparameters.max_seq_length
    if before is None and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            before = answer(model, tokenizer, prompts, limit, max_prompt)
    after = answer(model, tokenizer, prompts, limit, max_prompt)
    return [
        Sample(prompt=p, before=before[i] if before else None, after=after[i])
        for i, p in enumerate(prompts)
    ]


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS


def fit_samples(items: list[Sample], budget: int = SAMPLES_BUDGET_BYTES) -> list[Sample]:
    """The samples with each text shortened (the same limit for all) until their JSON takes at
    most `budget` bytes: what the termination message can carry."""

    def size(batch: list[Sample]) -> int:
        return len(json.dumps([s.to_k8s() for s in batch], ensure_ascii=False).encode("utf-8"))

    limit = max((len(t or "") for s in items for t in (s.prompt, s.before, s.after)), default=0)
    fitted = items
    while fitted and size(fitted) > budget and limit > 1:
        limit //= 2
        fitted = [
            Sample(
                prompt=_cut(s.prompt, limit) or "",
                before=_cut(s.before, limit),
                after=_cut(s.after, limit),
            )
            for s in items
        ]
    return fitted
