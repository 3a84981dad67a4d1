"""`kubetune metrics JOB`: a job's loss curves in the terminal (`--json`: the API's answer).

    kubetune metrics ft_20260101_120000_abc123
    kubetune metrics ft_20260101_120000_abc123 --width 80 --height 10

Reads `GET /api/finetune/metrics/{job_id}` (the job's stored history: it outlives the pods)
and draws the train loss as a block chart with its range, then one sparkline per other
series (eval loss, learning rate, tokens/s) with first, last and lowest values.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from kubetune_cli import charts, render
from kubetune_cli.client import KubetuneClient


def add_parser(sub: Any) -> None:
    metrics = sub.add_parser("metrics", help="a job's loss curves (train, eval, lr, tokens/s)")
    metrics.add_argument("job_id")
    metrics.add_argument("--width", type=int, default=60, help="chart columns (default 60)")
    metrics.add_argument("--height", type=int, default=8, help="chart rows (default 8)")
    metrics.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="the API's answer"
    )


def _number(value: float) -> str:
    return f"{value:.4g}"


def _summary(points: list[dict[str, Any]], key: str) -> str:
    values = [(p["step"], p[key]) for p in points if p.get(key) is not None]
    if not values:
        return ""
    low_step, low = min(values, key=lambda sv: sv[1])
    return (
        f"first {_number(values[0][1])}  last {_number(values[-1][1])}  "
        f"min {_number(low)} @ step {low_step}"
    )


def lines(answer: dict[str, Any], width: int = 60, height: int = 8) -> list[str]:
    """The human form of a metrics answer (pure)."""
    train: list[dict[str, Any]] = answer.get("train") or []
    evals: list[dict[str, Any]] = answer.get("eval") or []
    last_step = train[-1]["step"] if train else None
    total = answer.get("total_steps")
    out = [
        f"job:      {answer.get('job_id')}",
        f"steps:    {last_step if last_step is not None else '-'} of {total or '?'}"
        f"  ({len(train)} train, {len(evals)} eval points"
        f"{', downsampled' if answer.get('downsampled') else ''})",
    ]
    if not train and not evals:
        return [*out, "no points yet"]
    losses = [p["loss"] for p in train]
    if losses:
        out.append(f"train loss  {_summary(train, 'loss')}")
        chart = charts.block_chart(losses, width, height)
        top, bottom = _number(max(losses)), _number(min(losses))
        pad = max(len(top), len(bottom))
        for i, row in enumerate(chart):
            label = top if i == 0 else bottom if i == len(chart) - 1 else ""
            out.append(f"{label:>{pad}} │{row}")
        out.append(f"{'':>{pad}} └ step {train[0]['step']} … {train[-1]['step']}")
    series = (
        ("eval loss", evals, "loss"),
        ("lr", train, "learning_rate"),
        ("tokens/s", train, "tokens_per_second"),
    )
    for title, points, key in series:
        values = [p[key] for p in points if p.get(key) is not None]
        if values:
            out.append(f"{title:<10}  {charts.sparkline(values, width)}  {_summary(points, key)}")
    return out


def run(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    answer = client.call("GET", f"/api/finetune/metrics/{args.job_id}")
    if args.json:
        render.print_json(console, answer)
    else:
        text = "\n".join(lines(answer, args.width, args.height))
        console.print(text, highlight=False, soft_wrap=True)
    return 0
