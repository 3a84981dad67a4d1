"""Finding processes by the marker variables the local cluster puts in their environment.

Every process the local cluster starts -- control plane, node agent, and each container --
carries `KUBETUNE_LOCAL_CLUSTER=<state dir>` (containers also `KUBETUNE_POD_UID`). Reading
`/proc/<pid>/environ` (root) finds them even after they left their process group or were
re-parented, which is how cluster-down and a restarted node agent leave no orphans.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def environ(pid: int) -> dict[str, str]:
    """A process's environment at its start (empty when it cannot be read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def find(marker: str, extra: dict[str, str] | None = None) -> list[int]:
    """PIDs whose environment has KUBETUNE_LOCAL_CLUSTER=marker (and every `extra` pair)."""
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        env = environ(int(entry.name))
        if env.get("KUBETUNE_LOCAL_CLUSTER") != marker:
            continue
        if extra and any(env.get(k) != v for k, v in extra.items()):
            continue
        found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def terminate(pids: list[int], grace: float) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL whatever is left."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
