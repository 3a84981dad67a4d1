"""The local cluster's supervisor: keeps etcd, the control plane and the node agent running.

`cluster-up` starts one supervisor per state dir (`python -m kubetune_local.supervisor
--state-dir DIR`). It starts each component from the cluster record (`components`), then
checks them twice a second: one that exited -- crashed, OOM-killed, `kill -9` -- is started
again with the same data, ports and certificates, at once the first time and then with a
back-off (1 s doubling to 8 s) while it keeps failing. It records the PIDs and restart counts
in `<state>/pids.json`. A supervisor started while components still run (it was killed, or
an older one left them) adopts them instead of starting second copies. While a file
`<state>/hold/<component>` exists the component is not restarted (tests take the apiserver
away for a while that way). On SIGTERM it stops the node agent first (which stops its pods),
then the rest, and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from kubetune_local import procs
from kubetune_local.components import binaries, commands, etcd_url, extra_env
from kubetune_local.record import (
    COMPONENT_ENV,
    COMPONENTS,
    MARKER_ENV,
    LocalCluster,
    find_component,
    is_component,
    write_json,
)

log = logging.getLogger("kubetune.supervisor")
POLL_SECONDS = 0.5
STABLE_SECONDS = 30.0
"""A component up this long is healthy again: its next crash restarts it at once."""
MAX_BACKOFF = 8.0
STOP_GRACE = {"node-agent": 20.0, "etcd": 10.0}
LOG_ROTATE_BYTES = 20 * 2**20


@dataclass
class Component:
    """One supervised process: its command line and what the supervisor knows of it."""

    name: str
    argv: list[str]
    pid: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restarts: int = 0
    next_start: float = 0.0

    def alive(self, marker: str) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.pid is not None and is_component(self.pid, marker, self.name)

    def exit_status(self) -> str:
        if self.popen is not None and self.popen.returncode is not None:
            code = self.popen.returncode
            return f"signal {-code}" if code < 0 else f"code {code}"
        return "unknown status (not our child)"


def backoff(failures: int) -> float:
    """Seconds to wait before the next start after `failures` quick failures in a row."""
    return 0.0 if failures <= 1 else min(MAX_BACKOFF, 2.0 ** (failures - 2))


class Supervisor:
    """Starts, watches and restarts the components of one local cluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.state = cluster.state_dir
        self.marker = str(cluster.state_dir)
        argvs = commands(cluster, binaries())
        self.components = [Component(name, argvs[name]) for name in COMPONENTS]
        self.stop = threading.Event()

    # ---- starting ------------------------------------------------------------------------
    def adopt(self) -> None:
        """Take over components that still run (a previous supervisor's); one copy each."""
        for comp in self.components:
            found = find_component(self.marker, comp.name)
            if not found:
                continue
            comp.pid, extra = found[0], found[1:]
            comp.started = time.monotonic()
            log.info("adopted running %s (pid %d)", comp.name, comp.pid)
            if extra:
                log.warning("stopping %d extra copies of %s: %s", len(extra), comp.name, extra)
                procs.terminate(extra, 5.0)

    def start(self, comp: Component) -> None:
        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{comp.name}.log"
        with contextlib.suppress(OSError):
            if path.stat().st_size > LOG_ROTATE_BYTES:
                path.replace(path.with_suffix(".log.1"))
        env = {**os.environ, MARKER_ENV: self.marker, COMPONENT_ENV: comp.name}
        env.update(extra_env(comp.name))
        with path.open("ab") as out:
            out.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: start\n".encode())
            out.flush()
            comp.popen = subprocess.Popen(
                comp.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        comp.pid, comp.started = comp.popen.pid, time.monotonic()
        log.info("started %s (pid %d)", comp.name, comp.pid)

    def wait_for_etcd(self, timeout: float = 30.0) -> None:
        """Before a first start of the apiserver: etcd answering /health (best effort)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                url = etcd_url(self.cluster) + "/health"
                with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)

    # ---- the loop ------------------------------------------------------------------------
    def check(self) -> bool:
        """Restart what is not running (when its back-off allows); True when PIDs changed."""
        changed = False
        now = time.monotonic()
        for comp in self.components:
            if comp.pid is not None and comp.alive(self.marker):
                if now - comp.started > STABLE_SECONDS:
                    comp.failures = 0
                continue
            if comp.pid is not None:
                comp.failures += 1
                comp.restarts += 1
                comp.next_start = now + backoff(comp.failures)
                log.warning(
                    "%s (pid %d) exited with %s; restarting in %.0f s",
                    comp.name,
                    comp.pid,
                    comp.exit_status(),
                    comp.next_start - now,
                )
                comp.pid, comp.popen = None, None
                changed = True
            if (self.state / "hold" / comp.name).exists():
                continue
            if now >= comp.next_start and not self.stop.is_set():
                if comp.name == "apiserver" and comp.restarts == 0:
                    self.wait_for_etcd()
                self.start(comp)
                changed = True
        return changed

    def record(self) -> None:
        pids = {c.name: c.pid for c in self.components if c.pid is not None}
        pids["supervisor"] = os.getpid()
        restarts = {c.name: c.restarts for c in self.components}
        write_json(self.state / "pids.json", {"pids": pids, "restarts": restarts})

    def run(self) -> None:
        self.adopt()
        self.check()
        self.record()
        while not self.stop.wait(POLL_SECONDS):
            if self.check():
                self.record()
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the node agent (and so its pods), then the control plane, then etcd."""
        log.info("stopping the cluster")
        for comp in reversed(self.components):
            if comp.pid is None or not comp.alive(self.marker):
                continue
            procs.terminate([comp.pid], STOP_GRACE.get(comp.name, 5.0))
            if comp.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    comp.popen.wait(timeout=1)
        write_json(self.state / "pids.json", {"pids": {}, "restarts": {}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kubetune_local.supervisor", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    cluster = LocalCluster.load(args.state_dir.resolve())
    if cluster is None:
        sys.exit(f"no cluster recorded in {args.state_dir}")
    supervisor = Supervisor(cluster)

    def _stop(signum: int, frame: FrameType | None) -> None:
        supervisor.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    supervisor.run()


if __name__ == "__main__":
    main()
