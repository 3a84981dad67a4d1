"""One run of one container: a process group started by the launcher, its log and its end.

The container's output (stdout and stderr together) is pumped line by line into
`<logs>/<restart>.log`, each line prefixed with an RFC 3339 timestamp, which is what the
log endpoint serves (`timestamps=true` keeps the prefix). A `<restart>.done` file marks the
end of a run so `kubectl logs -f` knows when to stop following.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kubetune_local.nodeagent.cgroups import MemoryCgroup
from kubetune_local.nodeagent.volumes import Mount


def log_timestamp() -> str:
    """RFC 3339 with nanoseconds, the kubelet's log-line prefix."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


@dataclass
class LaunchSpec:
    """Everything needed to start a container's process."""

    argv: list[str]
    env: dict[str, str]
    workdir: str
    mounts: list[Mount]
    log_path: Path
    spec_path: Path
    launcher_env: dict[str, str]
    cgroup_name: str
    memory_limit: int | None = None
    host_workdir: bool = False
    """`workdir` is a host directory (opened before the mounts), not a container path."""


def keep_visible() -> list[str]:
    """Host paths a container must still see when a volume is mounted over a parent of them.

    Containers run the project's Python environment: the repository (editable installs point
    into it), the virtualenv and the interpreter's prefix. An emptyDir at `/tmp` must not
    hide them when the checkout lives under `/tmp` (as a CI clone may).
    """
    from kubetune_local.cluster import REPO

    return sorted({str(REPO), sys.prefix, sys.base_prefix})


class ContainerProcess:
    """A running container process (its own session and process group)."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self.cgroup = MemoryCgroup.create(spec.cgroup_name, spec.memory_limit)
        spec.spec_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "argv": spec.argv,
            "env": spec.env,
            "workdir": spec.workdir,
            "host_workdir": spec.host_workdir,
            "mounts": [
                {"source": str(m.source), "target": m.target, "read_only": m.read_only}
                for m in spec.mounts
            ],
            "cgroup": str(self.cgroup.path) if self.cgroup else None,
            "keep_visible": keep_visible(),
        }
        fd = os.open(spec.spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = spec.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune_local.nodeagent.launch", str(spec.spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=spec.launcher_env,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self._pump = threading.Thread(target=self._copy_output, name=f"log-{self.pid}", daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(log_timestamp().encode() + b" " + line)
            self._log.flush()

    def wait(self) -> tuple[int, bool]:
        """Wait for the main process, kill the rest of the container: (returncode, oom_killed)."""
        code = self.proc.wait()
        self.signal(signal.SIGKILL)
        self._pump.join(timeout=5)
        self._log.close()
        oom = False
        if self.cgroup is not None:
            oom = self.cgroup.oom_killed()
            self.cgroup.remove()
        self.spec.log_path.with_suffix(".done").touch()
        with contextlib.suppress(OSError):
            self.spec.spec_path.unlink()
        return code, oom

    def signal(self, sig: int) -> None:
        """Send `sig` to the process group (and, for SIGKILL, to every process of the cgroup)."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, sig)
        if sig == signal.SIGKILL and self.cgroup is not None:
            self.cgroup.kill_all()

    def running(self) -> bool:
        """Whether the main process is still alive."""
        return self.proc.poll() is None
