"""`kubetune models [list|show|compare]` and `kubetune compare`: the model registry.

    kubetune models --base-model tiny          # list, filtered by base model
    kubetune models --alias frigo              # the model the alias names now
    kubetune models show tiny-finetuned-...    # one model's lineage, metrics and answers
    kubetune compare tiny-finetuned-...        # models trained on the same data, best first

`compare` ranks the models fine-tuned on the same dataset as the one named (same file
sha256, held-out split and seed) by held-out bits per byte, which is comparable across
tokenizers (lower is better): "fine-tune three models, pick the best" in one command.
Same output and exit codes as the other commands (tables, `--json`, 2 when rejected).
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from kubetune_cli import render
from kubetune_cli.client import KubetuneClient

BASE = "/api/finetune/models"


def _compare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model `kubetune models` lists: compare on its data")


def add_parser(sub: Any) -> None:
    """The `models` command (list by default, `show`, `compare`) and `compare`."""
    models = sub.add_parser("models", help="fine-tuned models: list, show, compare")
    models.add_argument("--base-model", help="only models of this base model")
    models.add_argument("--alias", help="only the model this alias names now")
    actions = models.add_subparsers(dest="action")
    actions.add_parser("list", help="list models (the default)")
    actions.add_parser("show", help="one model: lineage, metrics, answers").add_argument("name")
    _compare_args(actions.add_parser("compare", help="models on the same data, best first"))
    _compare_args(sub.add_parser("compare", help="models on the same data, best first"))


def _list(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    answer = client.models(base_model=args.base_model, alias=args.alias)
    keys = ("name", "base_model", "size_mb", "created", "latest", "path")
    rows = [
        tuple(("yes" if m.get(k) else "") if k == "latest" else m.get(k) for k in keys)
        for m in answer.get("models", [])
    ]
    title = f"models ({answer.get('total', len(rows))})"
    columns = ["NAME", "BASE", "SIZE MB", "CREATED", "LATEST", "PATH"]
    return _show(console, args, answer, lambda: render.table(console, title, columns, rows))


def detail_lines(page: dict[str, Any]) -> list[str]:
    """A model's page, one fact per line: where it is, what made it, how it did."""
    lines = [
        f"{label + ':':<16} {render.fmt(page.get(key))}"
        for key, label in (
            ("name", "model"),
            ("base_model", "base model"),
            ("created", "created"),
            ("size_mb", "size MB"),
            ("format", "format"),
            ("method", "method"),
            ("path", "path"),
            ("uri", "uri"),
            ("job", "job"),
        )
    ]
    lines.append(f"{'aliases:':<16} {', '.join(page.get('aliases') or []) or '-'}")
    data = page.get("dataset") or {}
    if data:
        lines.append(
            f"{'dataset:':<16} {data.get('url')} (sha256 {render.fmt(data.get('sha256'))}, "
            f"split {data.get('validation_split')}, seed {data.get('seed')})"
        )
    for key, value in (page.get("hyperparameters") or {}).items():
        if value is not None:
            lines.append(f"  {key + ':':<14} {render.fmt(value)}")
    metrics = page.get("metrics") or {}
    for what in ("eval_loss", "bits_per_byte", "perplexity"):
        before, after = metrics.get(f"{what}_before"), metrics.get(f"{what}_after")
        if before is not None or after is not None:
            label = what.replace("_", " ")
            lines.append(f"{label + ':':<16} {render.fmt(before)} -> {render.fmt(after)}")
    for file in page.get("files") or []:
        lines.append(f"  {file.get('sha256')}  {file.get('size')}  {file.get('path')}")
    for sample in page.get("samples") or []:
        lines += [
            f"prompt: {sample.get('prompt')}",
            f"  before: {sample.get('before')}",
            f"  after:  {sample.get('after')}",
        ]
    return lines


def _detail(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    page = client.call("GET", f"{BASE}/{args.name}")
    return _show(console, args, page, lambda: console.print("\n".join(detail_lines(page))))


def _compare(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    answer = client.call("GET", f"{BASE}/compare", params={"model": args.model})
    keys = ("rank", "name", "base_model", "bits_per_byte", "bits_per_byte_before", "eval_loss")
    rows = [tuple(m.get(k) for k in keys) for m in answer.get("models", [])]
    data = answer.get("dataset") or {}
    sha = str(data.get("sha256") or "-")[:12]
    title = (
        f"models on {data.get('url')} (sha256 {sha}, split {data.get('validation_split')}, "
        f"seed {data.get('seed')}), by held-out bits per byte (lower is better)"
    )
    columns = ["RANK", "NAME", "BASE", "BITS/BYTE", "BEFORE", "EVAL LOSS (per token)"]
    return _show(console, args, answer, lambda: render.table(console, title, columns, rows))


def run(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    """Run `models [list|show|compare]` or `compare`; the exit code."""
    if args.command == "compare" or args.action == "compare":
        return _compare(args, client, console)
    if args.action == "show":
        return _detail(args, client, console)
    return _list(args, client, console)


def _show(console: Console, args: argparse.Namespace, answer: Any, human: Any) -> int:
    if args.json:
        render.print_json(console, answer)
    else:
        human()
    return 0
