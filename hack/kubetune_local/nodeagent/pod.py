"""One thread per pod: prepare volumes, run init containers, then the containers, report.

Follows the kubelet's pod lifecycle closely enough for Jobs, Deployments and the operator:
init containers run one after the other, then all containers side by side, each restarted
per `restartPolicy` (back-off 1 s doubling to 30 s, shorter than the kubelet's); status goes
Pending -> Running -> Succeeded/Failed with each container's real exit code. On deletion the
whole process group gets SIGTERM, then SIGKILL after the pod's grace period capped at
`max_grace_seconds` (so a deleted pod's processes are gone within 5 s), and the pod object
is removed with grace period 0. `securityContext` is ignored: every container runs as root.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubetune_local.nodeagent.cgroups import cluster_prefix
from kubetune_local.nodeagent.config import AgentConfig
from kubetune_local.nodeagent.envvars import (
    ConfigError,
    expand_command,
    parse_quantity,
    resolve_env,
)
from kubetune_local.nodeagent.kube import Kube
from kubetune_local.nodeagent.process import ContainerProcess, LaunchSpec
from kubetune_local.nodeagent.status import (
    FALLBACK_LOG_LINES,
    ContainerRecord,
    Terminated,
    desired_conditions,
    exit_code_of,
    now,
    pod_phase,
    pod_status,
    terminated_reason,
    termination_message,
    update_conditions,
)
from kubetune_local.nodeagent.volumes import Mount, VolumeBuilder, mount_plan

Obj = dict[str, Any]
log = logging.getLogger(__name__)

# Passed through from the agent to every container: host quirks, not configuration.
PASSTHROUGH = (
    "OMP_WAIT_POLICY",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
)


def host_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The agent's host quirks every container inherits. This node shares its few cores with
    the control plane: OpenMP threads sleep instead of spinning unless the host says otherwise
    (spinning slows a trainer 10-20x there; in a real Job the trainer keeps the library's default).
    """
    env = {k: environ[k] for k in PASSTHROUGH if k in environ}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def default_argv(image: str, args: list[str], path: str) -> list[str]:
    """What runs when a container has no `command` (the image's ENTRYPOINT is unknown here).

    Args that start with a program on PATH run as they are (images like `python` have no
    ENTRYPOINT); otherwise the image's base name, when it is a program on PATH (the
    `kubetune-trainer` image runs `kubetune-trainer`), is put in front of them.
    """
    if args and shutil.which(args[0], path=path):
        return args
    name = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return [name, *args] if name and shutil.which(name, path=path) else []


def tail_lines(path: Path, lines: int) -> str:
    """The last `lines` lines of a container log, without their timestamps."""
    try:
        data = path.read_text(errors="replace").splitlines(keepends=True)[-lines:]
    except OSError:
        return ""
    return "".join(line.split(" ", 1)[1] if " " in line else line for line in data)


class PodWorker(threading.Thread):
    """Runs one pod to completion (or deletion)."""

    def __init__(self, pod: Obj, cfg: AgentConfig, kube: Kube) -> None:
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
        self.start_time = now()
        self.stopping = threading.Event()
        self.grace = float(spec.get("terminationGracePeriodSeconds", 30))
        self.processes: dict[str, ContainerProcess] = {}
        self.volumes: VolumeBuilder | None = None
        self.finished = False
        self.delete_when_stopped = False
        self._lock = threading.RLock()
        self._adopt_previous_status(pod.get("status") or {})

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

    def _run_once(self, spec: Obj, rec: ContainerRecord) -> int | None:
        """Start the container, wait for it, record how it ended. None: it could not start."""
        try:
            launch = self._launch_spec(spec, rec)
            with self._lock:
                if self.stopping.is_set():
                    return None
                proc = ContainerProcess(launch)
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
            rec.start(proc.pid, now())
        self._report()
        started = rec.started_at or now()
        returncode, oom = proc.wait()
        code, sig = exit_code_of(returncode)
        tlog = launch.spec_path.with_suffix(".termination-log")
        message = termination_message(
            tlog,
            spec.get("terminationMessagePolicy") or "File",
            code != 0,
            tail_lines(launch.log_path, FALLBACK_LOG_LINES),
        )
        with self._lock:
            self.processes.pop(rec.name, None)
            rec.finish(Terminated(code, terminated_reason(code, oom), started, now(), message, sig))
        log.info("pod %s/%s container %s exited %s", self.ns, self.pod_name, rec.name, code)
        if not self.stopping.is_set():
            self._report()
        return code

    def _launch_spec(self, spec: Obj, rec: ContainerRecord) -> LaunchSpec:
        path = f"{self.cfg.python_bin}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
        env = resolve_env(
            self.pod, spec, self._base_env(path), self.kube.lookup, os.cpu_count() or 1
        )
        command, args = expand_command(spec, env)
        argv = command + args if command else default_argv(rec.image, args, env.get("PATH", path))
        if not argv:
            raise ConfigError(
                f"container {rec.name!r} has no command and image {rec.image!r} maps to no program"
            )
        run = rec.restart_count + (1 if rec.terminated is not None else 0)
        cdir = self.pod_dir / "containers" / rec.name
        cdir.mkdir(parents=True, exist_ok=True)
        assert self.volumes is not None
        mounts = mount_plan(spec, self.volumes.paths, self.volumes.kinds, env)
        tlog = cdir / f"{run}.termination-log"
        tlog.write_bytes(b"")
        mounts.append(
            Mount(tlog, spec.get("terminationMessagePath") or "/dev/termination-log", False)
        )
        # Without a workingDir the container starts in a directory of the agent, opened
        # before the volumes are mounted: a mountPath over its parent (an emptyDir at /tmp
        # with the state dir under /tmp) must not hide it.
        host_workdir = not spec.get("workingDir")
        workdir = spec.get("workingDir") or str(cdir / "work")
        if host_workdir:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        launcher_env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETUNE_POD")}
        launcher_env.update(self._markers())
        return LaunchSpec(
            argv=argv,
            env=env,
            workdir=workdir,
            host_workdir=host_workdir,
            mounts=mounts,
            log_path=self.log_dir / rec.name / f"{run}.log",
            spec_path=cdir / f"{run}.json",
            launcher_env=launcher_env,
            cgroup_name=f"{cluster_prefix(self.cfg.cluster_marker)}{self.uid}-{rec.name}-{run}",
            memory_limit=int(parse_quantity(limit)) if limit else None,
        )

    def _markers(self) -> dict[str, str]:
        """Variables that let the agent and cluster-down find every process of this pod."""
        return {"KUBETUNE_LOCAL_CLUSTER": self.cfg.cluster_marker, "KUBETUNE_POD_UID": self.uid}

    def _base_env(self, path: str) -> dict[str, str]:
        env = host_env(os.environ)
        port = str(self.cfg.api_port)
        env.update(
            {
                "PATH": path,
                "HOME": "/root",
                "HOSTNAME": self.pod_name,
                "PYTHONUNBUFFERED": "1",
                "KUBERNETES_SERVICE_HOST": self.cfg.api_host,
                "KUBERNETES_SERVICE_PORT": port,
                "KUBERNETES_SERVICE_PORT_HTTPS": port,
                "KUBERNETES_PORT": f"tcp://{self.cfg.api_host}:{port}",
            }
        )
        env.update(self._markers())
        return env

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
    def _adopt_previous_status(self, status: Obj) -> None:
        """A pod already Running when the agent starts was run by a previous agent.

        Its processes were stopped at start-up, so each started container counts as ended
        (exit 137); restartPolicy then decides whether it runs again.
        """
        if status.get("phase") != "Running":
            return
        initialized = any(
            c.get("type") == "Initialized" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        when = now()
        if initialized:
            for rec in self.inits:
                rec.finish(Terminated(0, "Completed", when, when))
        previous = {c["name"]: c for c in status.get("containerStatuses") or []}
        for rec in self.mains:
            old = previous.get(rec.name)
            if old is None or (
                "waiting" in (old.get("state") or {}) and not old.get("restartCount")
            ):
                continue
            rec.restart_count = int(old.get("restartCount") or 0)
            rec.pid = 0
            rec.finish(Terminated(137, "Error", when, when, "stopped: the node agent restarted"))

    def _waiting_all(self, reason: str, message: str) -> None:
        for rec in self.inits + self.mains:
            if rec.started_at is None and rec.terminated is None:
                rec.waiting_reason, rec.waiting_message = reason, message
        self._report()

    def _phase(self) -> str:
        return pod_phase(self.policy, self.inits, self.mains)

    def _report(self) -> None:
        """Patch the pod's status from the current records."""
        with self._lock:
            phase = self._phase()
            when = now()
            self.conditions = update_conditions(
                self.conditions, desired_conditions(phase, self.inits, self.mains), when
            )
            status = pod_status(phase, self.inits, self.mains, self.conditions, self.start_time)
        try:
            self.kube.patch_pod_status(self.ns, self.pod_name, status)
        except Exception:
            log.exception("pod %s/%s: status update failed", self.ns, self.pod_name)
