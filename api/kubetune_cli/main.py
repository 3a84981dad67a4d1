"""`kubetune`: the command-line client of the kubetune HTTP API.

Human tables by default, `--json` for scripts; exit code 0 on success, 1 when a job ended
failed or cancelled, 2 when the API rejected the request, 3 when it could not be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, get_args

from kubetune_crd.method import Method
from rich.console import Console

from kubetune_cli import aliases, metrics, models, render, schedules
from kubetune_cli.client import ApiRequestError, ApiUnreachableError, KubetuneClient

EXIT_JOB_FAILED = 1
EXIT_REJECTED = 2
EXIT_UNREACHABLE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--api-url",
        default=os.environ.get("KUBETUNE_API_URL", "http://127.0.0.1:5002"),
        help="API base URL (env KUBETUNE_API_URL)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("KUBETUNE_API_KEY"),
        help="API key sent as a bearer token (env KUBETUNE_API_KEY)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="models, formats and parameter ranges the API accepts")

    start = sub.add_parser("start", help="start a fine-tune (the original API's parameters)")
    start.add_argument("--model", required=True, help="catalog alias (phi, mistral, tiny...)")
    start.add_argument("--dataset", required=True, dest="dataset_url", help="dataset path or URL")
    start.add_argument("--epochs", type=int)
    start.add_argument("--batch-size", type=int)
    start.add_argument("--learning-rate", type=float)
    start.add_argument("--method", choices=get_args(Method))
    start.add_argument(
        "--objective", choices=["supervised", "dpo"], help="dpo: preference pairs (DPO)"
    )
    start.add_argument("--dpo-beta", type=float, help="DPO beta (with --objective dpo)")
    start.add_argument("--idempotency-key", help="retry-safe key: the same key starts one job")
    start.add_argument("--wait", action="store_true", help="show progress until the job ends")

    status = sub.add_parser("status", help="one job's status")
    status.add_argument("job_id")
    status.add_argument("--wait", action="store_true", help="show progress until the job ends")

    jobs = sub.add_parser("jobs", help="list jobs")
    jobs.add_argument("--status", help="filter: pending, running, completed, failed, cancelled")
    jobs.add_argument("--model", help="filter by model alias")
    jobs.add_argument("--limit", type=int)

    models.add_parser(sub)

    logs = sub.add_parser("logs", help="the trainer's log")
    logs.add_argument("job_id")
    logs.add_argument("-f", "--follow", action="store_true", help="stream until the job ends")

    cancel = sub.add_parser("cancel", help="stop a job, keeping its record")
    cancel.add_argument("job_id")
    metrics.add_parser(sub)
    schedules.add_parser(sub)
    aliases.add_parser(sub)
    return parser


def _start_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "dataset_url": args.dataset_url}
    for key in ("epochs", "batch_size", "learning_rate", "method", "objective", "dpo_beta"):
        value = getattr(args, key)
        if value is not None:
            body[key] = value
    return body


def _wait(console: Console, client: KubetuneClient, job_id: str, as_json: bool) -> int:
    final = render.follow_progress(console, lambda: client.status(job_id))
    if as_json:
        render.print_json(console, final)
    else:
        console.print("\n".join(render.status_lines(final)))
    return 0 if final.get("status") == "completed" else EXIT_JOB_FAILED


Command = Callable[[argparse.Namespace, KubetuneClient, Console], int]


def _show(
    console: Console, args: argparse.Namespace, answer: Any, human: Callable[[], None]
) -> int:
    """The API's JSON answer with --json, else its human form."""
    if args.json:
        render.print_json(console, answer)
    else:
        human()
    return 0


def _info(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    render.print_json(console, client.info())
    return 0


def _start(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    answer = client.start(_start_body(args), args.idempotency_key)
    if args.json and not args.wait:
        render.print_json(console, answer)
    elif not args.json:
        console.print(f"{answer.get('message', 'started')}: [bold]{answer['job_id']}[/bold]")
    if args.wait:
        return _wait(console, client, answer["job_id"], args.json)
    return 0


def _status(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    if args.wait:
        return _wait(console, client, args.job_id, args.json)
    answer = client.status(args.job_id)
    return _show(
        console, args, answer, lambda: console.print("\n".join(render.status_lines(answer)))
    )


def _jobs(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    answer = client.jobs(status=args.status, model=args.model, limit=args.limit)
    keys = ("job_id", "model", "status", "progress", "created")
    rows = [tuple(j.get(k) for k in keys) for j in answer.get("jobs", [])]
    columns = ["JOB", "MODEL", "STATUS", "PROGRESS", "CREATED"]
    return _show(console, args, answer, lambda: render.table(console, "jobs", columns, rows))


def _models(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    return models.run(args, client, console)


def _logs(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    for line in client.logs(args.job_id, follow=args.follow):
        print(line, flush=True)
    return 0


def _cancel(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    answer = client.cancel(args.job_id)
    line = f"cancelled: {answer.get('job_id', args.job_id)} ({answer.get('status')})"
    return _show(console, args, answer, lambda: console.print(line))


def _metrics(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    return metrics.run(args, client, console)


def _schedule(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    return schedules.run(args, client, console, _wait)


def _alias(args: argparse.Namespace, client: KubetuneClient, console: Console) -> int:
    return aliases.run(args, client, console)


COMMANDS: dict[str, Command] = {
    "info": _info,
    "start": _start,
    "status": _status,
    "jobs": _jobs,
    "models": _models,
    "compare": _models,
    "logs": _logs,
    "cancel": _cancel,
    "metrics": _metrics,
    "schedule": _schedule,
    "alias": _alias,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    errors = Console(stderr=True)
    try:
        with KubetuneClient(args.api_url, args.api_key) as client:
            return COMMANDS[args.command](args, client, console)
    except ApiUnreachableError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        return EXIT_UNREACHABLE
    except ApiRequestError as exc:
        errors.print(f"[red]error:[/red] the API rejected the request: {exc}", highlight=False)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
