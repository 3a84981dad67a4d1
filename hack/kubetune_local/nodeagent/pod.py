"""One thread per pod: prepare volumes, run init containers, then the containers, report.

Follows the kubelet's pod lifecycle closely enough for Jobs, Deployments and the operator:
init containers run one after the other, then all containers side by side, each restarted
per `restartPolicy` (back-off 1 s doubling to 30 s, shorter than the kubelet's); status goes
Pending -> Running -> Succeeded/Failed with each container's real exit code. On deletion the
whole process group gets SIGTERM, then SIGKILL after the pod's grace period capped at
`max_grace_seconds` (so a deleted pod's processes are gone within 5 s), and the pod object
is removed with grace period 0. Each container runs as its securityContext says (see
`security` and `launch`). A pod whose containers a previous agent started (they run on under
their shims) is re-adopted: its running containers are watched again, not started twice.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from kubetune_crd.names import parse_time, utc_now

from kubetune_local.nodeagent.config import AgentConfig
from kubetune_local.nodeagent.container import ContainerSpecs
from kubetune_local.nodeagent.devices import Allocator
from kubetune_local.nodeagent.envvars import ConfigError
from kubetune_local.nodeagent.kube import Kube
from kubetune_local.nodeagent.process import ContainerProcess
from kubetune_local.nodeagent.status import (
    FALLBACK_LOG_LINES,
    ContainerRecord,
    Terminated,
    desired_conditions,
    exit_code_of,
    pod_phase,
    pod_status,
    terminated_reason,
    termination_message,
    update_conditions,
)
from kubetune_local.nodeagent.volumes import VolumeBuilder

Obj = dict[str, Any]
log = logging.getLogger(__name__)
REPORT_RETRY_MIN_S = 1.0
REPORT_RETRY_MAX_S = 5.0
"""A failed status update is retried, 1 s then doubling up to 5 s, until it lands."""
Adopted = dict[str, tuple[Path, int]]
"""container name -> (launch spec path, shim PID) of containers a previous agent started."""


def tail_lines(path: Path, lines: int) -> str:
    """The last `lines` lines of a container log, without their timestamps."""
    try:
        data = path.read_text(errors="replace").splitlines(keepends=True)[-lines:]
    except OSError:
        return ""
    return "".join(line.split(" ", 1)[1] if " " in line else line for line in data)


def previous_end(terminated: Obj, when: datetime) -> Terminated:
    """A container's end as a previous agent reported it."""
    return Terminated(
        int(terminated.get("exitCode") or 0),
        str(terminated.get("reason") or "Error"),
        parse_time(terminated.get("startedAt")) or when,
        parse_time(terminated.get("finishedAt")) or when,
        str(terminated.get("message") or ""),
        terminated.get("signal"),
    )


class PodWorker(threading.Thread):
    """Runs one pod to completion (or deletion)."""

    def __init__(
        self,
        pod: Obj,
        cfg: AgentConfig,
        kube: Kube,
        allocator: Allocator | None = None,
        adopted: Adopted | None = None,
    ) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.pod = pod
        self.cfg = cfg
        self.kube = kube
        self.ns: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        spec = pod["spec"]
        self.policy: str = spec.get("restartPolicy") or "Always"
        self.init_specs: list[Obj] = spec.get("initContainers") or []
        self.specs: list[Obj] = spec.get("containers") or []
        self.inits = [ContainerRecord(c["name"], c.get("image", "")) for c in self.init_specs]
        self.mains = [ContainerRecord(c["name"], c.get("image", "")) for c in self.specs]
        key = f"{self.ns}_{self.pod_name}_{self.uid}"
        self.pod_dir = cfg.pods_dir / key
        self.log_dir = cfg.logs_dir / key
        self.conditions: dict[str, Any] = {}
        self.start_time = parse_time((pod.get("status") or {}).get("startTime")) or utc_now()
        self.allocator = allocator
        self.stopping = threading.Event()
        self.grace = float(spec.get("terminationGracePeriodSeconds", 30))
        self.processes: dict[str, ContainerProcess] = {}
        self.volumes: VolumeBuilder | None = None
        self.containers: ContainerSpecs | None = None
        self.finished = False
        self.delete_when_stopped = False
        self._lock = threading.RLock()
        self._report_retrying = False
        if allocator is not None:
            allocator.restore(self.uid, self.pod_dir)
        self._adopt_previous_status(pod.get("status") or {}, adopted or {})

    # ---- lifecycle -------------------------------------------------------------------
    def request_stop(self, grace: float | None = None) -> None:
        """The pod is being deleted: stop its containers, then remove it."""
        if grace is not None:
            self.grace = grace
        self.delete_when_stopped = True
        self.stopping.set()
        with self._lock:
            procs = list(self.processes.values())
        for proc in procs:
            proc.signal(signal.SIGTERM)

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: worker failed", self.ns, self.pod_name)
        finally:
            self._kill_all()
            self._release_devices()
            self.finished = True
            if self.delete_when_stopped:
                self.kube.delete_pod(self.ns, self.pod_name, self.uid)
                shutil.rmtree(self.pod_dir, ignore_errors=True)

    def _run(self) -> None:
        self._report()
        if self._phase() == "Failed":
            return
        self.volumes = VolumeBuilder(
            self.pod,
            self.pod_dir,
            self.cfg.pv_root,
            self.kube.lookup,
            self._token,
            os.cpu_count() or 1,
        )
        self.containers = ContainerSpecs(
            self.pod,
            self.cfg,
            self.pod_dir,
            self.log_dir,
            self.kube.lookup,
            self.volumes,
            self.allocator,
        )
        while not self.stopping.is_set():
            try:
                self.volumes.build()
                break
            except ConfigError as exc:
                self._waiting_all("CreateContainerConfigError", str(exc))
                self.stopping.wait(2.0)
        for spec, rec in zip(self.init_specs, self.inits, strict=True):
            if rec.terminated is not None and rec.terminated.exit_code == 0:
                continue
            self._supervise(spec, rec, init=True)
            if self.stopping.is_set() or rec.terminated is None or rec.terminated.exit_code != 0:
                return
        threads = [
            threading.Thread(
                target=self._supervise,
                args=(spec, rec),
                name=f"{self.name}/{rec.name}",
                daemon=True,
            )
            for spec, rec in zip(self.specs, self.mains, strict=True)
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=5.0)
            if self.volumes is not None and not self.stopping.is_set():
                try:
                    self.volumes.refresh_tokens()
                except Exception:
                    log.exception("pod %s/%s: token refresh failed", self.ns, self.pod_name)
        self._release_devices()
        if not self.stopping.is_set():
            self._report()

    def _supervise(self, spec: Obj, rec: ContainerRecord, init: bool = False) -> None:
        """Run one container, restarting it per the pod's restartPolicy."""
        backoff = 1.0
        while not self.stopping.is_set():
            result = self._run_once(spec, rec)
            if self.stopping.is_set():
                return
            failed = result is None or result != 0
            restart = (
                result
                is None  # configuration errors are retried whatever the policy, as the kubelet does
                or (self.policy == "Always" and not init)
                or (failed and self.policy in ("Always", "OnFailure"))
            )
            if not restart:
                return
            if not failed:
                backoff = 1.0
            if result is None:
                rec.waiting_reason = "CreateContainerConfigError"
            elif rec.terminated is not None:
                rec.waiting_reason = "CrashLoopBackOff"
                rec.waiting_message = f"back-off {backoff:.0f}s restarting failed container"
            self._report()
            if self.stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)

    def _start(self, spec: Obj, rec: ContainerRecord) -> ContainerProcess | None:
        """The container's process: the one re-adopted from a previous agent, else a new run.
        None when it could not start (the reason is in `rec`)."""
        with self._lock:
            adopted = self.processes.get(rec.name)
        if adopted is not None and rec.running:
            return adopted
        try:
            assert self.containers is not None
            launch = self.containers.build(spec, rec)
            with self._lock:
                if self.stopping.is_set():
                    return None
                proc = ContainerProcess.start(launch)
                self.processes[rec.name] = proc
        except ConfigError as exc:
            rec.waiting_reason, rec.waiting_message = "CreateContainerConfigError", str(exc)
            self._report()
            return None
        except Exception as exc:
            log.exception("pod %s/%s: cannot start container %s", self.ns, self.pod_name, rec.name)
            rec.waiting_reason, rec.waiting_message = "RunContainerError", str(exc)
            self._report()
            return None
        with self._lock:
            rec.waiting_message = ""
            rec.start(proc.pid, utc_now())
        return proc

    def _run_once(self, spec: Obj, rec: ContainerRecord) -> int | None:
        """Start the container, wait for it, record how it ended. None: it could not start."""
        proc = self._start(spec, rec)
        if proc is None:
            return None
        self._report()
        started = rec.started_at or utc_now()
        returncode, oom = proc.wait()
        code, sig = exit_code_of(returncode)
        tlog = proc.spec_path.with_suffix(".termination-log")
        message = termination_message(
            tlog,
            spec.get("terminationMessagePolicy") or "File",
            code != 0,
            tail_lines(proc.log_path, FALLBACK_LOG_LINES),
        )
        with self._lock:
            self.processes.pop(rec.name, None)
            reason = terminated_reason(code, oom)
            rec.finish(Terminated(code, reason, started, utc_now(), message, sig))
        log.info("pod %s/%s container %s exited %s", self.ns, self.pod_name, rec.name, code)
        if not self.stopping.is_set():
            self._report()
        return code

    def _token(self, audience: str | None, expiration: int) -> tuple[str, float]:
        return self.kube.token(self.pod, audience, expiration)

    # ---- stopping ----------------------------------------------------------------------
    def _kill_all(self) -> None:
        """SIGTERM every container, SIGKILL after the (capped) grace period."""
        with self._lock:
            procs = list(self.processes.values())
        if not procs:
            return
        for proc in procs:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, min(self.grace, self.cfg.max_grace_seconds))
        while time.monotonic() < deadline and any(p.running() for p in procs):
            time.sleep(0.05)
        for proc in procs:
            proc.signal(signal.SIGKILL)

    def stop_and_wait(self, grace: float | None = None, timeout: float = 10.0) -> None:
        """Stop the pod's processes and wait for the worker (the agent is shutting down)."""
        self.stopping.set()
        if grace is not None:
            self.grace = grace
        self._kill_all()
        self.join(timeout)

    # ---- status ------------------------------------------------------------------------
    def _adopt_previous_status(self, status: Obj, adopted: Adopted) -> None:
        """A pod already Running when the agent starts was run by a previous agent.

        Containers whose shims still run are re-adopted: running, same PID, same restart
        count. Any other started container counts as ended (exit 137): its processes were
        stopped at start-up, and restartPolicy decides whether it runs again.
        """
        if status.get("phase") != "Running":
            return
        initialized = any(
            c.get("type") == "Initialized" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        when = utc_now()
        previous = {
            c["name"]: c
            for c in (status.get("initContainerStatuses") or [])
            + (status.get("containerStatuses") or [])
        }
        for rec in self.inits + self.mains:
            old = previous.get(rec.name) or {}
            rec.restart_count = int(old.get("restartCount") or 0)
            state = old.get("state") or {}
            if rec.name in adopted and self._readopt(rec, state, *adopted[rec.name]):
                continue
            if initialized and any(rec is init for init in self.inits):
                rec.finish(Terminated(0, "Completed", when, when))
            elif "terminated" in state:
                rec.finish(previous_end(state["terminated"], when))
            elif "running" in state or rec.restart_count:
                rec.pid = 0
                rec.finish(
                    Terminated(137, "Error", when, when, "stopped: the node agent restarted")
                )

    def _readopt(self, rec: ContainerRecord, state: Obj, spec_path: Path, shim: int) -> bool:
        proc = ContainerProcess.adopt(spec_path, shim)
        if proc is None:
            return False
        running = state.get("running") or {}
        rec.start(proc.pid, parse_time(running.get("startedAt")) or utc_now())
        self.processes[rec.name] = proc
        log.info(
            "pod %s/%s: re-adopted container %s (pid %d)",
            self.ns,
            self.pod_name,
            rec.name,
            proc.pid,
        )
        return True

    def _release_devices(self) -> None:
        if self.allocator is not None:
            self.allocator.release(self.uid)

    def _waiting_all(self, reason: str, message: str) -> None:
        for rec in self.inits + self.mains:
            if rec.started_at is None and rec.terminated is None:
                rec.waiting_reason, rec.waiting_message = reason, message
        self._report()

    def _phase(self) -> str:
        return pod_phase(self.policy, self.inits, self.mains)

    def _current_status(self) -> Obj:
        """The pod status from the current records (conditions brought up to date)."""
        with self._lock:
            phase = self._phase()
            self.conditions = update_conditions(
                self.conditions, desired_conditions(phase, self.inits, self.mains), utc_now()
            )
            return pod_status(phase, self.inits, self.mains, self.conditions, self.start_time)

    def _report(self) -> None:
        """Patch the pod's status from the current records."""
        status = self._current_status()
        try:
            self.kube.patch_pod_status(self.ns, self.pod_name, status)
        except Exception as exc:
            # The apiserver may be away (a restart, an outage): a container that ended
            # meanwhile must still be reported, or its Job never completes. Retry, with the
            # latest status each time, until a patch lands (a deleted pod answers 404: done).
            log.warning("pod %s/%s: status update failed: %s", self.ns, self.pod_name, exc)
            self._retry_report_later()

    def _retry_report_later(self) -> None:
        with self._lock:
            if self._report_retrying:
                return
            self._report_retrying = True
        threading.Thread(target=self._retry_report, daemon=True, name="status-retry").start()

    def _retry_report(self) -> None:
        delay = REPORT_RETRY_MIN_S
        while True:
            time.sleep(delay)
            status = self._current_status()
            try:
                self.kube.patch_pod_status(self.ns, self.pod_name, status)
            except Exception as exc:
                log.debug("pod %s/%s: status retry failed: %s", self.ns, self.pod_name, exc)
                delay = min(delay * 2, REPORT_RETRY_MAX_S)
                continue
            log.info("pod %s/%s: status reported after a failed update", self.ns, self.pod_name)
            with self._lock:
                self._report_retrying = False
            return
