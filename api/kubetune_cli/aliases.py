"""`kubetune alias show|promote|rollback`: the stable name of the model in use.

    kubetune alias show frigo
    kubetune alias promote frigo tiny-frigo-b --wait
    kubetune alias rollback frigo --wait

A promote or rollback is carried out by the operator (it publishes the pointer); `--wait`
polls until it has decided. Same output and exit codes as the other commands (`--json`,
2 when rejected, 1 when the decision is "not promoted").
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console

from kubetune_cli import render
from kubetune_cli.client import KubetuneClient

BASE = "/api/finetune/aliases"
WAIT_SECONDS = 300.0
POLL_SECONDS = 1.0
EXIT_NOT_PROMOTED = 1


def add_parser(sub: Any) -> None:
    """The `alias` command and its subcommands."""
    alias = sub.add_parser("alias", help="the model an alias names, promote, roll back")
    actions = alias.add_subparsers(dest="action", required=True)
    actions.add_parser("show", help="its current model and every decision").add_argument("alias")
    promote = actions.add_parser("promote", help="point the alias at a model now")
    promote.add_argument("alias")
    promote.add_argument("model", help="a model `kubetune models` lists")
    rollback = actions.add_parser("rollback", help="back to the model it named before")
    rollback.add_argument("alias")
    for parser in (promote, rollback):
        parser.add_argument("--wait", action="store_true", help="until the operator decided")


def _lines(view: dict[str, Any]) -> list[str]:
    lines = [
        f"alias:    {view.get('alias')}",
        f"model:    {view.get('model')}",
        f"path:     {view.get('path')}",
        f"version:  {view.get('version')}",
    ]
    pending = view.get("pending")
    if pending:
        lines.append(f"pending:  {pending.get('action')} to {pending.get('model')}")
    for h in view.get("history") or []:
        mark = "promoted" if h.get("promoted") else "kept    "
        lines.append(f"  {h.get('time')}  {mark}  {h.get('model')}  ({h.get('reason')})")
    return lines


def _settled(client: KubetuneClient, alias: str, decisions: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        view: dict[str, Any] = client.call("GET", f"{BASE}/{alias}")
        if not view.get("pending") and len(view.get("history") or []) >= decisions:
            return view
        if time.monotonic() > deadline:
            return view
        time.sleep(POLL_SECONDS)


def run(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    """Run one `alias` subcommand; the exit code."""
    path = f"{BASE}/{args.alias}"
    if args.action == "show":
        answer = client.call("GET", path)
    else:
        if args.action == "promote":
            answer = client.call("POST", f"{path}/promote", json={"model": args.model})
        else:
            answer = client.call("POST", f"{path}/rollback")
        if args.wait:  # the answer is the alias as asked: its decision is the next entry
            answer = _settled(client, args.alias, len(answer.get("history") or []) + 1)
            last = (answer.get("history") or [{}])[-1]
            code = 0 if last.get("promoted") and not answer.get("pending") else EXIT_NOT_PROMOTED
            _show(console, args, answer)
            return code
    _show(console, args, answer)
    return 0


def _show(console: Console, args: argparse.Namespace, answer: Any) -> None:
    if args.json:
        render.print_json(console, answer)
    else:
        console.print("\n".join(_lines(answer)), highlight=False)
