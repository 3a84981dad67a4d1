"""One run of one container: its shim, its process group, its memory cgroup and its end.

The agent starts a shim (`shim`) per run, which starts the container and keeps its log and
its return code; the agent only reads them. So a container survives a crash or restart of
the agent, and the next agent re-adopts it (`ContainerProcess.adopt`) from the shim's
marker variables and state file instead of starting a duplicate. The run's files live in
the container's directory of the pod: `<run>.json` (the launch spec, removed at the end),
`<run>.state.json` (the shim's), `<run>.shim.log` (the shim's own errors).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_local import procs
from kubetune_local.nodeagent.cgroups import MemoryCgroup
from kubetune_local.nodeagent.shim import read_state
from kubetune_local.nodeagent.volumes import Mount

__all__ = ["ContainerProcess", "LaunchSpec", "keep_visible"]
SHIM_ENV = "KUBETUNE_SHIM"
"""On a shim: its run's launch spec path."""
SHIM_POD_ENV = "KUBETUNE_SHIM_POD"
"""On a shim: its pod's uid (KUBETUNE_POD_UID marks the container's own processes only)."""
CONTAINER_ENV = "KUBETUNE_CONTAINER"
START_TIMEOUT = 60.0
POLL_SECONDS = 0.1


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
    security: dict[str, Any] = field(default_factory=dict)
    """What the launcher enforces: uid, gid, groups, read-only root, no_new_privs, caps."""


def keep_visible() -> list[str]:
    """Host paths a container must still see when a volume is mounted over a parent of them.

    Containers run the project's Python environment: the repository (editable installs point
    into it), the virtualenv and the interpreter's prefix. An emptyDir at `/tmp` must not
    hide them when the checkout lives under `/tmp` (as a CI clone may).
    """
    from kubetune_local.record import REPO

    return sorted({str(REPO), sys.prefix, sys.base_prefix})


def state_path(spec_path: Path) -> Path:
    return spec_path.with_suffix(".state.json")


def _payload(spec: LaunchSpec, cgroup: MemoryCgroup | None) -> dict[str, Any]:
    return {
        "argv": spec.argv,
        "env": spec.env,
        "workdir": spec.workdir,
        "host_workdir": spec.host_workdir,
        "mounts": [
            {"source": str(m.source), "target": m.target, "read_only": m.read_only}
            for m in spec.mounts
        ],
        "cgroup": str(cgroup.path) if cgroup else None,
        "keep_visible": keep_visible(),
        "security": spec.security,
        "log_path": str(spec.log_path),
        "state_path": str(state_path(spec.spec_path)),
    }


class ContainerProcess:
    """A running container (its own session and process group), watched through its shim."""

    def __init__(
        self,
        spec_path: Path,
        log_path: Path,
        shim_pid: int,
        cgroup: MemoryCgroup | None,
        shim: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.spec_path = spec_path
        self.log_path = log_path
        self.state_path = state_path(spec_path)
        self.shim_pid = shim_pid
        self.shim = shim
        self.cgroup = cgroup
        self.pid = self._await_pid()

    @classmethod
    def start(cls, spec: LaunchSpec) -> ContainerProcess:
        """Start a new run: the cgroup, the launch spec, then the shim."""
        cgroup = MemoryCgroup.create(spec.cgroup_name, spec.memory_limit)
        spec.spec_path.parent.mkdir(parents=True, exist_ok=True)
        state_path(spec.spec_path).unlink(missing_ok=True)
        fd = os.open(spec.spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(_payload(spec, cgroup), fh)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**spec.launcher_env, SHIM_ENV: str(spec.spec_path)}
        with spec.spec_path.with_suffix(".shim.log").open("ab") as errors:
            shim = subprocess.Popen(
                [sys.executable, "-m", "kubetune_local.nodeagent.shim", str(spec.spec_path)],
                stdin=subprocess.DEVNULL,
                stdout=errors,
                stderr=errors,
                env=env,
                start_new_session=True,
            )
        return cls(spec.spec_path, spec.log_path, shim.pid, cgroup, shim)

    @classmethod
    def adopt(cls, spec_path: Path, shim_pid: int) -> ContainerProcess | None:
        """The run a live shim of a previous agent watches; None when it cannot be used."""
        try:
            payload = json.loads(spec_path.read_text())
        except (OSError, ValueError):
            return None
        if "pid" not in read_state(state_path(spec_path)):
            return None
        cgroup = MemoryCgroup(Path(payload["cgroup"])) if payload.get("cgroup") else None
        return cls(spec_path, Path(payload["log_path"]), shim_pid, cgroup)

    def _shim_alive(self) -> bool:
        if self.shim is not None:
            return self.shim.poll() is None
        return procs.alive(self.shim_pid)

    def _await_pid(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            state = read_state(self.state_path)
            if "pid" in state:
                return int(state["pid"])
            if not self._shim_alive():
                break
            time.sleep(0.02)
        errors = self.spec_path.with_suffix(".shim.log")
        detail = errors.read_text(errors="replace")[-1000:] if errors.exists() else ""
        raise RuntimeError(f"the container's shim did not start it: {detail}")

    def wait(self) -> tuple[int, bool]:
        """Wait for the container, kill the rest of it: (returncode, oom_killed)."""
        state = read_state(self.state_path)
        while "returncode" not in state and self._shim_alive():
            time.sleep(POLL_SECONDS)
            state = read_state(self.state_path)
        state = read_state(self.state_path)
        code = int(state.get("returncode", -signal.SIGKILL))  # a shim killed before the end
        self.signal(signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self._shim_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        oom = False
        if self.cgroup is not None:
            oom = self.cgroup.oom_killed()
            self.cgroup.remove()
        self.log_path.with_suffix(".done").touch()
        for path in (self.spec_path, self.state_path):
            with contextlib.suppress(OSError):
                path.unlink()
        return code, oom

    def signal(self, sig: int) -> None:
        """Send `sig` to the process group (and, for SIGKILL, to every process of the cgroup)."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, sig)
        if sig == signal.SIGKILL and self.cgroup is not None:
            self.cgroup.kill_all()

    def running(self) -> bool:
        """Whether the container's main process is still alive."""
        return self._shim_alive() and "returncode" not in read_state(self.state_path)


def running_shims(marker: str) -> dict[str, dict[str, tuple[Path, int]]]:
    """Live shims of this cluster's containers: pod uid -> container -> (spec path, shim PID)."""
    found: dict[str, dict[str, tuple[Path, int]]] = {}
    for pid in procs.find(marker):
        env = procs.environ(pid)
        if SHIM_ENV in env and SHIM_POD_ENV in env and procs.alive(pid):
            pod = found.setdefault(env[SHIM_POD_ENV], {})
            pod[env.get(CONTAINER_ENV, "")] = (Path(env[SHIM_ENV]), pid)
    return found
