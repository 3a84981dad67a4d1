"""Progress reports: one JSON line per logging step on stdout, and a best-effort POST.

The POST carries `kubetune_crd.metric_history.ProgressReport` (camelCase: the newest
`Progress` plus the metric points not yet delivered, train and eval, at most
`MAX_REPORT_POINTS` per POST) to the operator's progress URL with
`Authorization: Bearer <projected token>`, the token re-read from its file on every report
(it rotates). A background thread sends, with a short timeout: a slow or absent endpoint
never slows or fails training. Points stay queued until a POST is accepted (the operator
keeps them in the job's metric history; the newest `MAX_UNSENT_POINTS` survive an outage).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from kubetune_crd.metric_history import MAX_REPORT_POINTS, MetricPoint
from kubetune_crd.names import now_rfc3339
from kubetune_crd.status import Progress

POST_TIMEOUT_S = 3.0
MAX_UNSENT_POINTS = 5000


class ProgressReporter:
    """Prints progress lines and forwards them to the operator (if configured)."""

    def __init__(
        self,
        url: str | None = None,
        token_path: str | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.url = url
        self.token_path = token_path
        self.stream = stream
        self.posted = 0
        self.failed = 0
        self._dirty = False
        self._unsent: list[MetricPoint] = []
        self._cond = threading.Condition()
        self._closed = False
        self._last: Progress | None = None
        self._thread: threading.Thread | None = None
        if url:
            self._thread = threading.Thread(target=self._sender, name="progress", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ public

    def stage(self, stage: str, **fields: Any) -> None:
        """A stage change (loading, validating, evaluating, training, saving).

        It carries the last step, loss and fraction forward: the status (which takes each
        report whole) must not jump back to step 0 while the model is being saved.
        """
        base = self._last or Progress()
        self.report(base.model_copy(update={"stage": stage, **fields}), event="stage")

    def report(self, progress: Progress, event: str = "progress", **extra: Any) -> None:
        progress.updated_at = now_rfc3339()
        self._last = progress
        self._print({"event": event, **progress.to_k8s(), **extra})
        point = None
        if event == "progress" and _finite(progress.loss):
            point = MetricPoint(
                step=progress.step,
                loss=progress.loss,
                learning_rate=progress.learning_rate,
                tokens_per_second=progress.tokens_per_second,
                epoch=progress.epoch,
                updated_at=progress.updated_at,
            )
        self._send(point)

    def eval(self, step: int, loss: float | None) -> None:
        """A held-out loss: an `eval` line (the API's fallback eval series) and an eval point
        for the job's metric history."""
        if loss is None:
            return
        when = now_rfc3339()
        self._print({"event": "eval", "step": step, "evalLoss": loss, "updatedAt": when})
        if _finite(loss):
            self._send(MetricPoint(kind="eval", step=step, loss=loss, updated_at=when))

    def _send(self, point: MetricPoint | None) -> None:
        if self._thread is None:
            return
        with self._cond:
            if point is not None:
                self._unsent.append(point)
            self._dirty = True
            self._cond.notify()

    def _print(self, line: dict[str, Any]) -> None:
        out = self.stream or sys.stdout
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        out.flush()

    def close(self, timeout: float = POST_TIMEOUT_S) -> None:
        """Send what is pending (bounded by `timeout`) and stop the thread."""
        if self._thread is None:
            return
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # ------------------------------------------------------------ sender thread

    def _token(self) -> str | None:
        if not self.token_path:
            return None
        try:
            return Path(self.token_path).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def _sender(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._closed:
                    self._cond.wait()
                if not self._dirty:
                    return  # closed, everything sent
                self._dirty = False
                batch = self._unsent[:MAX_REPORT_POINTS]
                report = {**(self._last or Progress()).to_k8s(), "points": []}
            report["points"] = [p.to_k8s() for p in batch]
            sent = self._post(json.dumps(report).encode())
            with self._cond:
                if sent:
                    del self._unsent[: len(batch)]  # only this thread removes points
                    self._dirty = self._dirty or bool(self._unsent)
                elif len(self._unsent) > MAX_UNSENT_POINTS:
                    del self._unsent[: len(self._unsent) - MAX_UNSENT_POINTS]
                if not sent and self._closed:
                    return  # the endpoint is down: do not hold the exit up

    def _post(self, body: bytes) -> bool:
        assert self.url is not None
        headers = {"Content-Type": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as response:  # noqa: S310
                response.read()
            self.posted += 1
            return True
        except urllib.error.HTTPError as exc:
            self.failed += 1
            return exc.code == 400  # refused as malformed: resending the same points cannot help
        except Exception:  # best effort: the operator may be restarting
            self.failed += 1
            return False


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class SilentReporter(ProgressReporter):
    """The reporter of the ranks other than 0: a run's progress is reported once, by rank 0."""

    def __init__(self) -> None:
        super().__init__()

    def report(self, progress: Progress, event: str = "progress", **extra: Any) -> None:
        self._last = progress

    def eval(self, step: int, loss: float | None) -> None:
        pass
