"""Human output of the CLI: tables and the live progress bar (JSON output bypasses this)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


def print_json(console: Console, data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def fmt(value: Any) -> str:
    """One cell or value as shown to a person (`-` for none, 4 significant digits)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_eta(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def table(console: Console, title: str, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(fmt(cell) for cell in row))
    console.print(out)


def status_lines(status: dict[str, Any]) -> list[str]:
    """The key facts of one job, one per line."""
    lines = [f"job:      {status.get('job_id')}", f"status:   {status.get('status')}"]
    progress = status.get("progress")
    if isinstance(progress, int | float):
        lines.append(f"progress: {progress * 100:.0f}%")
    for key, label in (
        ("step", "step"),
        ("total_steps", "of steps"),
        ("loss", "loss"),
        ("eta_seconds", "eta"),
        ("world_size", "world"),
        ("model_path", "model"),
        ("pending_reason", "pending"),
        ("failure_reason", "failure"),
        ("message", "message"),
    ):
        value = status.get(key)
        if value not in (None, ""):
            shown = format_eta(value) if key == "eta_seconds" else fmt(value)
            lines.append(f"{label + ':':<9} {shown}")
    return lines


def follow_progress(
    console: Console,
    fetch: Callable[[], dict[str, Any]],
    interval: float = 1.0,
) -> dict[str, Any]:
    """Poll `fetch` and draw a progress bar with step, loss and ETA until a terminal status."""
    with Progress(
        TextColumn("[bold]{task.fields[job]}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        status = fetch()
        task = bar.add_task("train", total=1.0, job=status.get("job_id", ""), detail="")
        while True:
            step, total = status.get("step"), status.get("total_steps")
            steps = f"step {step}/{total}" if step is not None and total else ""
            loss = f"loss {status['loss']:.4f}" if isinstance(status.get("loss"), float) else ""
            eta = (
                f"eta {format_eta(status.get('eta_seconds'))}" if status.get("eta_seconds") else ""
            )
            detail = "  ".join(x for x in (str(status.get("status")), steps, loss, eta) if x)
            bar.update(task, completed=float(status.get("progress") or 0.0), detail=detail)
            if status.get("status") in TERMINAL_STATUSES:
                return status
            time.sleep(interval)
            status = fetch()
