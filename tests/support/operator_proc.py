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
import urllib.request
from pathlib import Path
from typing import Any

from kubetune_local.cluster import free_ports

from support.service_proc import VENV_BIN, ServiceProcess

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")


def fake_trainer_command() -> list[str]:
    """The operator's KUBETUNE_TRAINER_COMMAND for the stand-in trainer."""
    return [str(VENV_BIN / "python"), str(FAKE_TRAINER)]


def _setting(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class OperatorProcess(ServiceProcess):
    """One `kubetune-operator` process (start, stop, kill, restart)."""

    command = "kubetune-operator"
    env_prefix = "KUBETUNE_"

    def __init__(
        self,
        kubeconfig: str | Path,
        settings: dict[str, Any] | None = None,
        log_path: str | Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.liveness_port, self.progress_port = free_ports(2)
        defaults: dict[str, str] = {
            "LIVENESS_PORT": str(self.liveness_port),
            "PROGRESS_PORT": str(self.progress_port),
            "PROGRESS_BIND": "127.0.0.1",
            "LOG_FORMAT": "json",
            "TRAINER_COMMAND": json.dumps(fake_trainer_command()),
            "RESYNC_SECONDS": "10",
        }
        defaults.update({k: _setting(v) for k, v in (settings or {}).items()})
        super().__init__(kubeconfig, defaults, log_path, startup_timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.progress_port}"

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.ready_url, timeout=2) as resp:
            return dict(json.loads(resp.read()))

    def restart(self, **settings: Any) -> OperatorProcess:
        self.stop()
        self.settings.update({k: _setting(v) for k, v in settings.items()})
        return self.start()
