"""A container's monitor (what conmon or containerd-shim is to a real runtime).

`python -m kubetune_local.nodeagent.shim SPEC.json`, started by the node agent in a session
of its own, starts the launcher (`launch`: namespace, user, exec) in another session, and
then owns the two things that must outlive a restart of the agent: the container's output,
copied line by line into the container log with the kubelet's RFC 3339 timestamp prefix,
and how the container ended. `<run>.state.json` holds the container's PID from the start and
its return code once it exits; a `<run>.done` file next to the log tells `kubectl logs -f`
the log is complete. A restarted agent finds running shims by their marker variables and
re-adopts their containers instead of starting them again. SIGTERM or SIGINT sent to the
shim is passed on to the container.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import IO, Any


def log_timestamp() -> str:
    """RFC 3339 with nanoseconds, the kubelet's log-line prefix."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write the state file atomically (the agent may read it at any moment)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_state(path: Path) -> dict[str, Any]:
    """A run's state (`pid`, then `returncode`); empty when not written yet."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def copy_output(source: IO[bytes], log_path: Path) -> None:
    """Copy each line of `source` into the log, timestamped, until end of file."""
    with log_path.open("ab") as log:
        for line in source:
            log.write(log_timestamp().encode() + b" " + line)
            log.flush()


def main() -> None:
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    log_path, state_path = Path(spec["log_path"]), Path(spec["state_path"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetune_local.nodeagent.launch", str(spec_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    write_state(state_path, {"pid": proc.pid})

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    assert proc.stdout is not None
    pump = threading.Thread(target=copy_output, args=(proc.stdout, log_path), daemon=True)
    pump.start()
    code = proc.wait()
    write_state(state_path, {"pid": proc.pid, "returncode": code})
    # What the container started may still hold its output open; the agent kills the rest
    # of the container once it has read the return code, which ends the copy.
    pump.join()
    log_path.with_suffix(".done").touch()


if __name__ == "__main__":
    main()
