"""`kubetune schedule create|list|get|suspend|resume|run|delete`: retraining on a schedule.

    kubetune schedule create frigo-monthly --schedule "0 2 1 * *" --time-zone Europe/Paris \\
        --model tiny --dataset "s3://data/frigo_{{ .PrevMonthAbbr }}{{ .PrevMonthYear }}.csv"
    kubetune schedule run frigo-monthly --wait

Same output and exit codes as the job commands (tables, `--json`, 2 when rejected).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, get_args

from kubetune_crd.method import Method
from rich.console import Console

from kubetune_cli import render
from kubetune_cli.client import KubetuneClient

BASE = "/api/finetune/schedules"
Wait = Callable[[Console, KubetuneClient, str, bool], int]


def add_parser(sub: Any) -> None:
    """The `schedule` command and its subcommands."""
    schedule = sub.add_parser("schedule", help="retrain on a schedule (FineTuneSchedule)")
    actions = schedule.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="create a schedule")
    create.add_argument("name")
    create.add_argument("--schedule", required=True, help='cron, e.g. "0 2 1 * *" or @monthly')
    create.add_argument("--time-zone", help="IANA time zone (default UTC)")
    create.add_argument("--model", required=True, help="catalog alias (phi, mistral, tiny...)")
    create.add_argument(
        "--dataset", required=True, dest="dataset_url", help="path or URL; {{ .Year }}..."
    )
    create.add_argument("--model-name", help="each run's model name; may hold placeholders")
    create.add_argument("--epochs", type=int)
    create.add_argument("--batch-size", type=int)
    create.add_argument("--learning-rate", type=float)
    create.add_argument("--method", choices=get_args(Method))
    create.add_argument("--concurrency-policy", choices=["Forbid", "Replace", "Allow"])
    create.add_argument("--starting-deadline-seconds", type=int)
    create.add_argument("--successful-jobs-history-limit", type=int)
    create.add_argument("--failed-jobs-history-limit", type=int)
    create.add_argument("--suspend", action="store_true", help="create it suspended")
    create.add_argument("--idempotency-key", help="retry-safe key")

    actions.add_parser("list", help="list schedules")
    for action, text in (
        ("get", "one schedule"),
        ("suspend", "no new runs"),
        ("resume", "runs again"),
        ("jobs", "its runs"),
    ):
        actions.add_parser(action, help=text).add_argument("name")
    run = actions.add_parser("run", help="start a run now (placeholders: today's date)")
    run.add_argument("name")
    run.add_argument("--idempotency-key", help="retry-safe key: the same key starts one run")
    run.add_argument("--wait", action="store_true", help="show progress until the run ends")
    delete = actions.add_parser("delete", help="delete a schedule (models are kept)")
    delete.add_argument("name")
    delete.add_argument("--keep-jobs", action="store_true", help="keep its runs too")


_OPTIONAL = (
    "time_zone",
    "model_name",
    "epochs",
    "batch_size",
    "learning_rate",
    "method",
    "concurrency_policy",
    "starting_deadline_seconds",
    "successful_jobs_history_limit",
    "failed_jobs_history_limit",
)


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": args.name,
        "schedule": args.schedule,
        "model": args.model,
        "dataset_url": args.dataset_url,
    }
    body.update({k: getattr(args, k) for k in _OPTIONAL if getattr(args, k) is not None})
    if args.suspend:
        body["suspend"] = True
    return body


def _headers(args: argparse.Namespace) -> dict[str, str]:
    key = getattr(args, "idempotency_key", None)
    return {"Idempotency-Key": key} if key else {}


def _lines(view: dict[str, Any]) -> list[str]:
    keys = (
        "name",
        "schedule",
        "time_zone",
        "suspend",
        "concurrency_policy",
        "model",
        "dataset_url",
        "next_run",
        "last_run",
        "last_result",
        "last_successful_time",
        "active",
        "run_count",
        "skipped_count",
        "missed_count",
        "message",
    )
    return [f"{k + ':':<22} {view.get(k)}" for k in keys if view.get(k) not in (None, "", [])]


def run(args: argparse.Namespace, client: KubetuneClient, console: Console, wait: Wait) -> int:
    """Run one `schedule` subcommand; the exit code."""
    path = f"{BASE}/{getattr(args, 'name', '')}".rstrip("/")
    if args.action == "create":
        answer = client.call("POST", BASE, json=_create_body(args), headers=_headers(args))
    elif args.action == "list":
        answer = client.call("GET", BASE)
        return _show_list(console, args, answer)
    elif args.action == "get":
        answer = client.call("GET", path)
    elif args.action in ("suspend", "resume"):
        answer = client.call("PATCH", path, json={"suspend": args.action == "suspend"})
    elif args.action == "jobs":
        answer = client.call("GET", f"{path}/jobs")
        return _show_jobs(console, args, answer)
    elif args.action == "delete":
        params = {"keep_jobs": "true"} if args.keep_jobs else {}
        answer = client.call("DELETE", path, params=params)
        return _show(console, args, answer, f"deleted schedule {args.name} (models kept)")
    else:  # run
        answer = client.call("POST", f"{path}/run", headers=_headers(args))
        line = f"started {answer['job_id']} (dataset {answer['dataset_url']})"
        if args.wait:
            if not args.json:
                console.print(line)
            return wait(console, client, answer["job_id"], args.json)
        return _show(console, args, answer, line)
    return _show(console, args, answer, "\n".join(_lines(answer)))


def _show(console: Console, args: argparse.Namespace, answer: Any, human: str) -> int:
    if args.json:
        render.print_json(console, answer)
    else:
        console.print(human, highlight=False)
    return 0


def _show_list(console: Console, args: argparse.Namespace, answer: Any) -> int:
    if args.json:
        render.print_json(console, answer)
        return 0
    keys = ("name", "schedule", "suspend", "last_run_time", "last_result", "next_run")
    rows = [tuple(s.get(k) for k in keys) for s in answer.get("schedules", [])]
    columns = ["NAME", "SCHEDULE", "SUSPEND", "LAST RUN", "LAST RESULT", "NEXT RUN"]
    render.table(console, f"schedules ({answer.get('total', len(rows))})", columns, rows)
    return 0


def _show_jobs(console: Console, args: argparse.Namespace, answer: Any) -> int:
    if args.json:
        render.print_json(console, answer)
        return 0
    keys = ("job_id", "status", "progress", "created", "failure_reason")
    rows = [tuple(j.get(k) for k in keys) for j in answer.get("jobs", [])]
    columns = ["JOB", "STATUS", "PROGRESS", "CREATED", "FAILURE"]
    render.table(console, f"runs of {args.name}", columns, rows)
    return 0
