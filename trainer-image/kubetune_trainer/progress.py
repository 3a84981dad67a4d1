"""Progress reports: one JSON line per logging step on stdout, and a best-effort POST.

The POST carries `kubetune_crd.status.Progress` (camelCase) to the operator's progress URL
with `Authorization: Bearer <projected token>`, the token re-read from its file on every
report (it rotates). A background thread sends only the newest report, with a short timeout:
a slow or absent endpoint never slows or fails training.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from kubetune_crd.names import now_rfc3339
from kubetune_crd.status import Progress

POST_TIMEOUT_S = 3.0


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
        self._pending: bytes | None = None
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
        if self._thread is not None:
            body = json.dumps(progress.to_k8s()).encode()
            with self._cond:
                self._pending = body
                self._cond.notify()

    def eval(self, step: int, loss: float | None) -> None:
        """A held-out loss as an `eval` line (the API's eval series); the status keeps only
        the losses before and after, from the result."""
        if loss is None:
            return
        self._print({"event": "eval", "step": step, "evalLoss": loss, "updatedAt": now_rfc3339()})

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
                while self._pending is None and not self._closed:
                    self._cond.wait()
                body, self._pending = self._pending, None
                closed = self._closed
            if body is not None:
                self._post(body)
            if closed and body is None:
                return

    def _post(self, body: bytes) -> None:
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
        except Exception:  # best effort: the operator may be restarting
            self.failed += 1


class SilentReporter(ProgressReporter):
    """The reporter of the ranks other than 0: a run's progress is reported once, by rank 0."""

    def __init__(self) -> None:
        super().__init__()

    def report(self, progress: Progress, event: str = "progress", **extra: Any) -> None:
        self._last = progress

    def eval(self, step: int, loss: float | None) -> None:
        pass
