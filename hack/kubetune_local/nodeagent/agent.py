"""The agent's main loop: register the node, watch its pods, hand each to a PodWorker.

Robustness rules: the pod watch re-lists on any error or expired resourceVersion (410) and
reconciles (pods gone from the list are stopped); the heartbeat re-registers a deleted
Node. On start-up (after a crash: the supervisor restarts the agent), containers a previous
agent started run on under their shims and are re-adopted by their pods' workers, never
started twice; container processes whose shim is gone, and shims of pods that no longer
exist, are killed, and those pods are reported per restartPolicy (see
`PodWorker._adopt_previous_status`). On SIGTERM/SIGINT the agent stops every container
process and exits; pod objects stay.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from kubetune_local import procs
from kubetune_local.nodeagent import cgroups
from kubetune_local.nodeagent.config import AgentConfig, parse_args
from kubetune_local.nodeagent.devices import Allocator, node_gpus
from kubetune_local.nodeagent.kube import Kube
from kubetune_local.nodeagent.logserver import LogServer
from kubetune_local.nodeagent.node import NodeRegistration
from kubetune_local.nodeagent.pod import Adopted, PodWorker
from kubetune_local.nodeagent.process import (
    CONTAINER_ENV,
    SHIM_ENV,
    SHIM_POD_ENV,
    running_shims,
)
from kubetune_local.provisioner import LocalProvisioner
from kubetune_local.record import REPO

Obj = dict[str, Any]
log = logging.getLogger("kubetune.nodeagent")


class Agent:
    """One node: registration, heartbeat, log server, claim provisioner and pod workers."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        api_client = kube_config.new_client_from_config(str(cfg.kubeconfig))
        self.kube = Kube(api_client)
        self.gpus = node_gpus(cfg.gpus, cfg.fake_gpus)
        self.allocator = Allocator(self.gpus)
        self.node = NodeRegistration(cfg, api_client, self.gpus)
        self.provisioner = LocalProvisioner(api_client, cfg.pv_root)
        self.workers: dict[str, PodWorker] = {}
        self.adoptable: dict[str, Adopted] = {}
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def find_survivors(self) -> None:
        """Containers a previous agent left: keep those under a live shim for their pods to
        re-adopt, stop the processes whose shim is gone."""
        marker = self.cfg.cluster_marker
        self.adoptable = running_shims(marker)
        orphans = []
        for pid in procs.find(marker):
            env = procs.environ(pid)
            uid = env.get("KUBETUNE_POD_UID")
            if uid is None or SHIM_ENV in env:
                continue
            if env.get(CONTAINER_ENV, "") not in self.adoptable.get(uid, {}):
                orphans.append(pid)
        if orphans:
            log.info("stopping %d container processes whose shim is gone", len(orphans))
            procs.terminate(orphans, 2.0)
        if self.adoptable:
            log.info("%d pods have running containers to re-adopt", len(self.adoptable))
        cgroups.remove_stale(cgroups.cluster_prefix(marker))

    def stop_unclaimed(self) -> None:
        """After the first pod list: containers of pods that are gone or finished are stopped."""
        with self._lock:
            left, self.adoptable = self.adoptable, {}
        marker = self.cfg.cluster_marker
        for uid in left:
            pids = procs.find(marker, {"KUBETUNE_POD_UID": uid}) + procs.find(
                marker, {SHIM_POD_ENV: uid}
            )
            log.info("stopping the containers of pod %s (no longer on this node)", uid)
            procs.terminate(pids, 2.0)

    def run(self) -> None:
        """Start everything and block until SIGTERM/SIGINT."""
        self.find_survivors()
        self.cfg.logs_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.pv_root.mkdir(parents=True, exist_ok=True)
        server = LogServer(self.cfg.port, self.cfg.logs_dir, self.cfg.tls_cert, self.cfg.tls_key)
        server.start()
        self._register()
        log.info(
            "node %s registered (%d %s GPUs), logs on 127.0.0.1:%d",
            self.cfg.node_name,
            self.gpus.count,
            "NVIDIA" if self.gpus.real else "fake",
            self.cfg.port,
        )
        threading.Thread(
            target=self.provisioner.run, args=(self.stop,), name="provisioner", daemon=True
        ).start()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._watch, name="pod-watch", daemon=True).start()
        self.stop.wait()
        log.info("shutting down: stopping %d pods", len(self.workers))
        with self._lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.stopping.set()
        for worker in workers:
            worker.stop_and_wait(timeout=self.cfg.max_grace_seconds + 2)
        server.shutdown()

    def _register(self) -> None:
        """Register the node, waiting for the API server (the agent may start before it)."""
        deadline = time.monotonic() + 120
        while True:
            try:
                self.node.register()
                return
            except Exception as exc:
                if time.monotonic() > deadline or self.stop.is_set():
                    raise
                log.debug("API server not ready yet: %s", exc)
                time.sleep(0.2)

    def _heartbeat(self) -> None:
        while not self.stop.wait(self.cfg.heartbeat_seconds):
            try:
                self.node.heartbeat()
            except ApiException as exc:
                log.warning("heartbeat failed: %s", exc.reason)
                if exc.status == 404:
                    self._try(self.node.register)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    @staticmethod
    def _try(fn: Any) -> None:
        try:
            fn()
        except Exception as exc:
            log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)

    def _watch(self) -> None:
        rv: str | None = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    pods, rv = self.kube.list_pods(self.cfg.node_name)
                    self._reconcile(pods)
                    self.stop_unclaimed()
                for kind, obj in self.kube.watch_pods(self.cfg.node_name, rv):
                    if kind == "ERROR":
                        rv = None
                        break
                    rv = str(obj["metadata"].get("resourceVersion") or rv)
                    if kind == "DELETED":
                        self._deleted(obj)
                    elif kind in ("ADDED", "MODIFIED"):
                        self.dispatch(obj)
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("pod watch failed: %s", exc.reason)
                    time.sleep(1.0)
                rv = None
            except Exception as exc:
                log.warning("pod watch failed: %s", exc)
                time.sleep(1.0)
                rv = None

    def _reconcile(self, pods: list[Obj]) -> None:
        uids = {p["metadata"]["uid"] for p in pods}
        with self._lock:
            gone = [w for uid, w in self.workers.items() if uid not in uids]
        for worker in gone:
            self._deleted(worker.pod)
        for pod in pods:
            self.dispatch(pod)

    def dispatch(self, pod: Obj) -> None:
        """React to a pod's current state: start it, stop it, or finish its deletion."""
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            worker = self.workers.get(uid)
            if meta.get("deletionTimestamp"):
                if worker is not None and not worker.finished:
                    worker.request_stop(meta.get("deletionGracePeriodSeconds"))
                else:
                    threading.Thread(target=self._delete, args=(pod,), daemon=True).start()
                return
            if worker is not None or (pod.get("status") or {}).get("phase") in (
                "Succeeded",
                "Failed",
            ):
                return
            adopted = self.adoptable.pop(uid, None)
            worker = PodWorker(pod, self.cfg, self.kube, self.allocator, adopted)
            self.workers[uid] = worker
        log.info("starting pod %s/%s", meta["namespace"], meta["name"])
        worker.start()

    def _delete(self, pod: Obj) -> None:
        meta = pod["metadata"]
        self._try(lambda: self.kube.delete_pod(meta["namespace"], meta["name"], meta["uid"]))

    def _deleted(self, pod: Obj) -> None:
        with self._lock:
            worker = self.workers.pop(pod["metadata"]["uid"], None)
        if worker is not None and not worker.finished:
            worker.request_stop(0)


def python_env_problem() -> str | None:
    """Why a container running as a non-root user could not run the project's Python.

    The launcher makes the directories on the way reachable (see `launch.unhide`), but the
    files themselves must be readable by others; the agent never changes their permissions.
    """
    exe = Path(os.path.realpath(sys.executable))
    wanted = [
        (exe, stat.S_IROTH | stat.S_IXOTH),
        (Path(sys.prefix) / "pyvenv.cfg", stat.S_IROTH),
        (REPO / "hack" / "kubetune_local" / "__init__.py", stat.S_IROTH),
    ]
    for path, bits in wanted:
        with contextlib.suppress(OSError):
            if path.stat().st_mode & bits != bits:
                return f"{path} is not readable by other users (chmod o+rX)"
    return None


def main(argv: list[str] | None = None) -> None:
    """Parse flags, run the agent until a signal stops it."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    agent = Agent(parse_args(argv))
    problem = python_env_problem()
    if problem:
        log.warning("pods that run as a non-root user will fail to start: %s", problem)

    def _stop(signum: int, frame: FrameType | None) -> None:
        agent.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run()
