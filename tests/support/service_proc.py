"""One project service (`kubetune-api`, `kubetune-operator`) run as a child process.

The tests start the real console scripts from `.venv/bin` against a local cluster: settings go
in as prefixed environment variables (the caller's own KUBETUNE_* are dropped), output goes to
a log file, the process is ready when its health URL answers 200, and it is stopped by PID
(SIGTERM, then SIGKILL). Subclasses name the script, the prefix and the health URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from typing_extensions import Self

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


class ServiceProcess:
    command: str  # console script in .venv/bin
    env_prefix: str  # settings become f"{env_prefix}{key}"

    def __init__(
        self,
        kubeconfig: str | Path,
        settings: dict[str, str],
        log_path: str | Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.settings = settings
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"{self.command}-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ready_url(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETUNE_")}
        env["KUBECONFIG"] = self.kubeconfig
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        env.update({f"{self.env_prefix}{k}": v for k, v in self.settings.items()})
        return env

    def start(self, timeout: float | None = None) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / self.command)],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.wait_ready(self.startup_timeout if timeout is None else timeout)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.command} exited early:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:  # refused, or an HTTP error status (not ready yet)
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.command} not ready in {timeout}s:\n{self.log()[-4000:]}")

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
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is not None:
            tail = self.log()[-6000:]
            sys.stderr.write(f"--- {self.command} log ({self.log_path}) ---\n{tail}\n")
