"""Start the kubetune operator as a subprocess against a cluster, and stop it by PID.

    from support.operator_proc import OperatorProcess, fake_trainer_command
    with OperatorProcess(cluster.kubeconfig, settings={"TRAINER_COMMAND": ...}) as op:
        ...                         # op.kill() = SIGKILL, op.restart(), op.url (progress base)

Settings are the operator's KUBETUNE_* variables without the prefix (values: str, or JSON
for lists). Liveness and progress ports are picked free on 127.0.0.1; the log goes to
`log_path` (a temp file by default) and `op.log()` returns it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fake_trainer_command() -> list[str]:
    """The operator's KUBETUNE_TRAINER_COMMAND for the stand-in trainer."""
    return [str(VENV_BIN / "python"), str(FAKE_TRAINER)]


class OperatorProcess:
    """One `kubetune-operator` process (start, stop, kill, restart)."""

    def __init__(
        self,
        kubeconfig: str | Path,
        settings: dict[str, Any] | None = None,
        log_path: str | Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.liveness_port = free_port()
        self.progress_port = free_port()
        self.settings: dict[str, str] = {
            "LIVENESS_PORT": str(self.liveness_port),
            "PROGRESS_PORT": str(self.progress_port),
            "PROGRESS_BIND": "127.0.0.1",
            "LOG_FORMAT": "json",
            "TRAINER_COMMAND": json.dumps(fake_trainer_command()),
            "RESYNC_SECONDS": "10",
        }
        for key, value in (settings or {}).items():
            self.settings[key] = value if isinstance(value, str) else json.dumps(value)
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="kubetune-operator-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.progress_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETUNE_")}
        env["KUBECONFIG"] = self.kubeconfig
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        env.update({f"KUBETUNE_{k}": v for k, v in self.settings.items()})
        return env

    def start(self) -> OperatorProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "kubetune-operator")],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.wait_ready()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"kubetune-operator exited early:\n{self.log()[-4000:]}")
            try:
                url = f"http://127.0.0.1:{self.liveness_port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        tail = self.log()[-4000:]
        raise RuntimeError(f"kubetune-operator not ready in {self.startup_timeout}s:\n{tail}")

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return dict(json.loads(resp.read()))

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (no clean-up at all), and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def restart(self, **settings: Any) -> OperatorProcess:
        self.stop()
        for key, value in settings.items():
            self.settings[key] = value if isinstance(value, str) else json.dumps(value)
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is not None:
            sys.stderr.write(f"--- operator log ({self.log_path}) ---\n{self.log()[-6000:]}\n")
