"""Pod and container status, computed from what the node agent observed of its processes.

Kept pure (records in, API dicts out) so the rules that the Job controller and the
operator depend on -- phase, terminated state with the real exit code, reason
(`Completed`/`Error`/`OOMKilled`), termination message -- are unit tested without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kubetune_crd.names import format_time

Obj = dict[str, Any]
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80


@dataclass(frozen=True)
class Terminated:
    """How one run of a container ended."""

    exit_code: int
    reason: str
    started_at: datetime
    finished_at: datetime
    message: str = ""
    signal: int | None = None

    def to_api(self, container_id: str) -> Obj:
        out: Obj = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": format_time(self.started_at),
            "finishedAt": format_time(self.finished_at),
            "containerID": container_id,
        }
        if self.message:
            out["message"] = self.message
        if self.signal is not None:
            out["signal"] = self.signal
        return out


@dataclass
class ContainerRecord:
    """What the agent knows of one container: its current state and its previous run."""

    name: str
    image: str
    restart_count: int = 0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    started_at: datetime | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    pid: int | None = None

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.terminated is None

    @property
    def container_id(self) -> str:
        return f"kubetune://{self.name}-{self.restart_count}-{self.pid or 0}"

    def start(self, pid: int, when: datetime) -> None:
        """The container's process started."""
        if self.terminated is not None:
            self.last_terminated = self.terminated
            self.restart_count += 1
        self.terminated = None
        self.pid = pid
        self.started_at = when

    def finish(self, result: Terminated) -> None:
        """The container's process ended."""
        self.terminated = result
        self.started_at = None

    def to_api(self, init: bool = False) -> Obj:
        state: Obj
        if self.terminated is not None:
            state = {"terminated": self.terminated.to_api(self.container_id)}
        elif self.started_at is not None:
            state = {"running": {"startedAt": format_time(self.started_at)}}
        else:
            waiting: Obj = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        ready = (
            self.running
            if not init
            else (self.terminated is not None and self.terminated.exit_code == 0)
        )
        out: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": f"kubetune-local://{self.image}",
            "ready": ready,
            "restartCount": self.restart_count,
            "started": self.running,
            "state": state,
            "lastState": {"terminated": self.last_terminated.to_api(self.container_id)}
            if self.last_terminated
            else {},
        }
        if self.pid is not None:
            out["containerID"] = self.container_id
        return out


def terminated_reason(exit_code: int, oom_killed: bool = False) -> str:
    """The kubelet's reason for an exit: OOMKilled, Completed or Error."""
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"


def exit_code_of(returncode: int) -> tuple[int, int | None]:
    """(exit code, signal) from a Popen return code: killed by signal N is exit code 128+N."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def termination_message(path: Path, policy: str, failed: bool, log_tail: str) -> str:
    """The termination message: the file's content, or the log tail for FallbackToLogsOnError."""
    try:
        data = path.read_bytes()[:MAX_MESSAGE_BYTES]
    except OSError:
        data = b""
    text = data.decode("utf-8", "replace")
    if not text and failed and policy == "FallbackToLogsOnError":
        tail = log_tail.encode()[-MAX_MESSAGE_BYTES:]
        text = tail.decode("utf-8", "replace")
    return text


def pod_phase(
    restart_policy: str, inits: list[ContainerRecord], mains: list[ContainerRecord]
) -> str:
    """The pod phase, following the kubelet's rules."""
    for init in inits:
        if init.terminated is not None and init.terminated.exit_code == 0:
            continue
        if init.terminated is not None and restart_policy == "Never":
            return "Failed"
        return "Pending"
    running = waiting = failed = 0
    for c in mains:
        if c.running or (c.terminated is None and c.last_terminated is not None):
            running += 1
        elif c.terminated is None:
            waiting += 1
        elif c.terminated.exit_code != 0:
            failed += 1
    if running:
        return "Running"
    if waiting:
        return "Pending"
    if restart_policy == "Always" or (failed and restart_policy == "OnFailure"):
        return "Running"
    return "Failed" if failed else "Succeeded"


def update_conditions(
    previous: dict[str, tuple[str, datetime]], desired: dict[str, str], when: datetime
) -> dict[str, tuple[str, datetime]]:
    """Condition statuses with their last transition times (kept while the status is unchanged)."""
    out = dict(previous)
    for kind, status in desired.items():
        if kind not in out or out[kind][0] != status:
            out[kind] = (status, when)
    return out


def pod_status(
    phase: str,
    inits: list[ContainerRecord],
    mains: list[ContainerRecord],
    conditions: dict[str, tuple[str, datetime]],
    start_time: datetime,
    message: str = "",
    reason: str = "",
) -> Obj:
    """The pod's `status` as an API dict (podIP and hostIP are 127.0.0.1)."""
    status: Obj = {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": format_time(start_time),
        "conditions": [
            {
                "type": kind,
                "status": st,
                "lastTransitionTime": format_time(t),
                "lastProbeTime": None,
            }
            for kind, (st, t) in sorted(conditions.items())
        ],
        "containerStatuses": [c.to_api() for c in mains],
    }
    if inits:
        status["initContainerStatuses"] = [c.to_api(init=True) for c in inits]
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    return status


def desired_conditions(
    phase: str, inits: list[ContainerRecord], mains: list[ContainerRecord]
) -> dict[str, str]:
    """PodScheduled, Initialized, ContainersReady and Ready for the current records."""
    initialized = all(i.terminated is not None and i.terminated.exit_code == 0 for i in inits)
    ready = phase == "Running" and all(c.running for c in mains)
    flag = "True" if ready else "False"
    return {
        "PodScheduled": "True",
        "Initialized": "True" if initialized else "False",
        "ContainersReady": flag,
        "Ready": flag,
    }
