"""The kubelet's log endpoint, so `kubectl logs [-f]` works through the API server.

The API server calls `GET https://<InternalIP>:<kubeletEndpoint.Port>/containerLogs/
{namespace}/{pod}/{container}` with kubectl's query (`follow`, `tailLines`, `limitBytes`,
`timestamps`, `previous`, `sinceSeconds`) and accepts a self-signed certificate. Logs are
read from the files `process.py` writes (`<n>.log` per run, `<n>.done` once it ended), so
this needs no state shared with the pod workers and keeps working for finished pods.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

log = logging.getLogger(__name__)


def find_run_logs(logs_dir: Path, namespace: str, pod: str, container: str) -> list[Path]:
    """The container's log files, one per run, oldest first (newest pod UID when several)."""
    dirs = sorted(
        logs_dir.glob(f"{namespace}_{pod}_*/{container}"), key=lambda p: p.stat().st_mtime
    )
    if not dirs:
        return []
    return sorted(dirs[-1].glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)


def select_lines(
    data: bytes, timestamps: bool, tail: int | None, since: datetime | None
) -> list[bytes]:
    """Log records (one per line) filtered by `sinceSeconds`/`tailLines`, timestamps kept or cut."""
    lines = data.splitlines(keepends=True)
    if since is not None:
        cutoff = since.strftime("%Y-%m-%dT%H:%M:%S").encode()
        lines = [line for line in lines if line[:19] >= cutoff]
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    if not timestamps:
        lines = [line.split(b" ", 1)[1] if b" " in line else line for line in lines]
    return lines


class _Handler(BaseHTTPRequestHandler):
    server: LogServer

    def log_message(self, format: str, *args: object) -> None:
        log.debug("logs: " + format, *args)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/healthz":
            self._reply(200, b"ok")
            return
        parts = [unquote(p) for p in url.path.split("/") if p]
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._reply(404, b"not found")
            return
        _, namespace, pod, container = parts
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        runs = find_run_logs(self.server.logs_dir, namespace, pod, container)
        previous = query.get("previous") == "true"
        if previous:
            runs = runs[:-1]
        if not runs:
            what = "previous terminated container" if previous else "container"
            self._reply(400, f'{what} "{container}" in pod "{pod}" not found'.encode())
            return
        self._stream(runs[-1], query, follow=query.get("follow") == "true" and not previous)

    def _stream(self, path: Path, query: dict[str, str], follow: bool) -> None:
        tail = int(query["tailLines"]) if "tailLines" in query else None
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        since = None
        if "sinceSeconds" in query:
            since = datetime.now(timezone.utc) - timedelta(seconds=int(query["sinceSeconds"]))
        timestamps = query.get("timestamps") == "true"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        sent = 0
        with path.open("rb") as fh:
            chunk = fh.read()
            while True:
                complete = (
                    chunk
                    if chunk.endswith(b"\n") or not follow
                    else chunk[: chunk.rfind(b"\n") + 1]
                )
                rest = chunk[len(complete) :]
                for line in select_lines(complete, timestamps, tail, since):
                    if limit is not None and sent + len(line) > limit:
                        line = line[: limit - sent]
                    try:
                        self.wfile.write(line)
                    except OSError:
                        return
                    sent += len(line)
                    if limit is not None and sent >= limit:
                        return
                tail = None
                if not follow:
                    return
                if path.with_suffix(".done").exists():
                    chunk = rest + fh.read()
                    if not chunk:
                        return
                    follow = False
                    continue
                time.sleep(0.2)
                chunk = rest + fh.read()

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LogServer(ThreadingHTTPServer):
    """HTTPS server on 127.0.0.1 serving container logs from `logs_dir`."""

    daemon_threads = True

    def __init__(self, port: int, logs_dir: Path, cert: Path | None, key: Path | None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.logs_dir = logs_dir
        if cert is not None and key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.socket = context.wrap_socket(self.socket, server_side=True)

    def start(self) -> threading.Thread:
        """Serve in a daemon thread."""
        thread = threading.Thread(target=self.serve_forever, name="log-server", daemon=True)
        thread.start()
        return thread
