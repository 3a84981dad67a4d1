"""A memory cgroup per container: the memory limit, OOM detection and reliable cleanup.

Best effort. Where the cgroup v1 memory controller is writable (as on these machines), each
container gets a child cgroup of the agent's own: `resources.limits.memory` becomes
`memory.limit_in_bytes`, an OOM kill shows up in `memory.oom_control` (reported as
`OOMKilled`), and `cgroup.procs` lists every process of the container, even ones that left
its process group, so they can all be killed. Elsewhere the agent does without (no limit).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")


def _own_v1_path() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return V1_ROOT / path.lstrip("/")
    return None


def remove_stale(prefix: str) -> None:
    """Remove this cluster's leftover (empty) container cgroups, e.g. after an agent crash."""
    base = _own_v1_path()
    if base is None or not base.is_dir():
        return
    for path in base.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            path.rmdir()


def cluster_prefix(marker: str) -> str:
    """The cgroup name prefix of one local cluster (several may share the parent cgroup)."""
    return f"kubetune-{hashlib.sha1(marker.encode()).hexdigest()[:8]}-"  # noqa: S324 - a name


class MemoryCgroup:
    """One container's memory cgroup."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, name: str, limit_bytes: int | None) -> MemoryCgroup | None:
        """Create the cgroup (None when cgroups are not usable here)."""
        base = _own_v1_path()
        if base is None or not base.is_dir():
            return None
        path = base / name
        try:
            path.mkdir(exist_ok=True)
            if limit_bytes:
                (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        except OSError:
            return None
        return cls(path)

    def pids(self) -> list[int]:
        """Processes now in the cgroup."""
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of this cgroup."""
        try:
            for line in (self.path / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except OSError:
            pass
        return False

    def kill_all(self) -> None:
        """SIGKILL every process left in the cgroup."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Kill what is left and remove the cgroup directory."""
        for _ in range(50):
            self.kill_all()
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.05)
