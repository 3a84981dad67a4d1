"""A real MLflow tracking server on 127.0.0.1, from its own virtualenv (hack/install-tools.sh).

The trainer logs to it with the `mlflow-skinny` client of the `trainer` extra; the tests read
what arrived with the same client. The server keeps its runs in a SQLite file under the test's
folder and is stopped by PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune"))
MLFLOW = CACHE / "mlflow-venv" / "bin" / "mlflow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def mlflow_server(folder: Path, startup_timeout: float = 120.0) -> Iterator[str]:
    """Start the server; yields its tracking URI (http://127.0.0.1:PORT)."""
    if not MLFLOW.exists():
        raise RuntimeError(f"{MLFLOW} is missing: run `bash hack/install-tools.sh`")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "mlflow-server.log").open("ab")
    proc = subprocess.Popen(
        [
            str(MLFLOW),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--default-artifact-root",
            (folder / "artifacts").as_uri(),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (folder / "mlflow-server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the MLflow server did not start:\n{text}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()
