"""`make cluster-up` / `make cluster-down` / `make clean`: the local cluster's lifecycle.

The first `up` in a state dir makes a cluster: free 127.0.0.1 ports, an admin token, a CA and
certificates, a kubeconfig, all recorded in `<state>/cluster.json` (`record`). Every later
`up` -- after `down`, a crash, a reboot -- starts that same cluster again: same ports, same
certificates and kubeconfig, same etcd data (synced to disk) and the same volume root; it
never deletes data. `up` starts a supervisor (`supervisor`) that runs etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and the node agent and restarts whichever crashes;
a healthy cluster is left as it is, a broken one is repaired. `down` stops the supervisor
(it stops the node agent, which stops its pods, then the rest) and sweeps any process still
carrying this cluster's marker; the data stays. `clean` (or `up --fresh`) is the one way to
start from scratch: it stops everything and deletes the state dir's data.
Usage: `python -m kubetune_local.cluster up [--fresh] [--no-fsync] | down | clean | status
[--state-dir DIR]`; the state dir defaults to $KUBETUNE_CLUSTER_DIR or `<repo>/.local/cluster`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubetune_local import certs, procs
from kubetune_local.components import K8S_VERSION, binaries, extra_env, k8s_bin_dir
from kubetune_local.nodeagent import cgroups
from kubetune_local.record import (
    COMPONENT_ENV,
    COMPONENTS,
    MARKER_ENV,
    NODE_NAME,
    RECORD_VERSION,
    REPO,
    ClusterError,
    LocalCluster,
    default_state_dir,
    find_component,
    kubeconfig_text,
    live_pids,
    node_ready,
    write_json,
)

__all__ = [
    "K8S_VERSION",
    "NODE_NAME",
    "REPO",
    "ClusterError",
    "LocalCluster",
    "binaries",
    "clean",
    "default_state_dir",
    "down",
    "free_ports",
    "k8s_bin_dir",
    "kubeconfig_text",
    "node_ready",
    "up",
]

PORT_NAMES = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "node-agent")
PORT_OWNER = {"etcd-peer": "etcd"}
STATE_FILES = ("cluster.json", "pids.json", "tokens.csv", "kubeconfig")
STATE_DIRS = ("etcd", "pods", "logs", "certs", "hold")


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` (a TIME_WAIT socket does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def create(
    state: Path, gpus: int, node_name: str, pv_root: Path | None, fsync: bool
) -> LocalCluster:
    """Record a new cluster in `state`: ports, token, paths (nothing runs yet)."""
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    cluster = LocalCluster(
        state_dir=state,
        kubeconfig=state / "kubeconfig",
        server=f"https://127.0.0.1:{ports['apiserver']}",
        api_port=ports["apiserver"],
        pv_root=pv_root or state / "pv",
        node_name=node_name,
        token=secrets.token_hex(16),
        ca_file=state / "certs" / "ca.crt",
        ports=ports,
        gpus=gpus,
        fsync=fsync,
    )
    cluster.save()
    return cluster


def ensure_files(cluster: LocalCluster) -> None:
    """Certificates, token file and kubeconfig: made when missing, otherwise kept as they are."""
    certs.ensure(cluster.ca_file.parent, cluster.node_name)
    tokens = cluster.state_dir / "tokens.csv"
    line = f'{cluster.token},admin,admin,"system:masters"\n'
    if not tokens.is_file() or tokens.read_text() != line:
        tokens.write_text(line)
        tokens.chmod(0o600)
    if not cluster.kubeconfig.is_file():
        cluster.kubeconfig.write_text(
            kubeconfig_text(cluster.server, cluster.ca_file, cluster.token)
        )
        cluster.kubeconfig.chmod(0o600)
    cluster.pv_root.mkdir(parents=True, exist_ok=True)


def check_ports(cluster: LocalCluster) -> None:
    """Each stopped component's port must be free: the cluster's address never changes."""
    marker = str(cluster.state_dir)
    for key, port in cluster.ports.items():
        owner = PORT_OWNER.get(key, key)
        if find_component(marker, owner) or port_free(port):
            continue
        raise ClusterError(
            f"port {port} ({key}) of the cluster recorded in {cluster.state_dir} is taken by "
            "another program: stop it, or start a new cluster with `make clean` (deletes the "
            "cluster's data)"
        )


def stop_strays(marker: str) -> None:
    """Control-plane processes of this cluster without a component marker (started by an
    older kubetune): stopped so the supervisor can start them properly."""
    tags = (COMPONENT_ENV, "KUBETUNE_POD_UID", "KUBETUNE_SHIM", "KUBETUNE_DEV_SERVICE")
    strays = [p for p in procs.find(marker) if not any(t in procs.environ(p) for t in tags)]
    if strays:
        procs.terminate(strays, 10.0)


def start_supervisor(cluster: LocalCluster) -> int:
    """Start the supervisor in its own session; it outlives this command."""
    state = cluster.state_dir
    (state / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, MARKER_ENV: str(state), COMPONENT_ENV: "supervisor"}
    env.update(extra_env("supervisor"))
    with (state / "logs" / "supervisor.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune_local.supervisor", f"--state-dir={state}"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def wait_recorded(cluster: LocalCluster, supervisor: int, timeout: float = 60.0) -> None:
    """Wait until the supervisor just started has written its PIDs (it adopts running
    components first), so what `up` returns never names the supervisor it replaced."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if live_pids(cluster.state_dir).get("supervisor") == supervisor:
            return
        if not procs.alive(supervisor):
            raise ClusterError(f"the supervisor exited:\n{_log_tail(cluster, 'supervisor')}")
        time.sleep(0.1)
    raise ClusterError(f"the supervisor recorded no PIDs in {timeout:.0f} s")


def heartbeat_since(node: Any, since: float) -> bool:
    """Node Ready with a heartbeat posted after `since` (a UNIX time): not a stale record."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("lastHeartbeatTime"):
            beat = datetime.strptime(cond["lastHeartbeatTime"], "%Y-%m-%dT%H:%M:%SZ")
            return beat.replace(tzinfo=timezone.utc).timestamp() >= int(since) - 1
    return False


def _log_tail(cluster: LocalCluster, name: str, chars: int = 2000) -> str:
    path = cluster.state_dir / "logs" / f"{name}.log"
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def wait_ready(cluster: LocalCluster, since: float, timeout: float = 120.0) -> None:
    """Wait for /readyz and a fresh node heartbeat; ClusterError with the logs otherwise."""
    deadline = time.monotonic() + timeout
    stage = "kube-apiserver"
    while time.monotonic() < deadline:
        if not find_component(str(cluster.state_dir), "supervisor"):
            raise ClusterError(f"the supervisor exited:\n{_log_tail(cluster, 'supervisor')}")
        with contextlib.suppress(Exception):
            if cluster.get("/readyz") == "ok":
                stage = f"node {cluster.node_name}"
                node = cluster.get(f"/api/v1/nodes/{cluster.node_name}")
                if node_ready(node) and heartbeat_since(node, since):
                    return
        time.sleep(0.2)
    component = "apiserver" if stage == "kube-apiserver" else "node-agent"
    raise ClusterError(
        f"{stage} not ready after {timeout:.0f} s; end of logs/{component}.log:\n"
        + _log_tail(cluster, component)
    )


def up(
    state: Path,
    gpus: int | None,
    node_name: str,
    pv_root: Path | None,
    *,
    fresh: bool = False,
    fsync: bool = True,
) -> LocalCluster:
    """Start the cluster recorded in `state` (making it the first time), or find it healthy."""
    if fresh:
        clean(state, quiet=True)
    state.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster.load(state)
    if cluster is not None and cluster.version < RECORD_VERSION:
        print("found a cluster started by an older kubetune: restarting it on the same data")
        down(state, quiet=True)
        cluster.version = RECORD_VERSION
        cluster.save()
    if cluster is not None and cluster.healthy():
        print(f"local cluster already up and healthy ({cluster.server}, state {state})")
        return cluster
    binaries()  # fail early, naming what is missing
    t0, since = time.monotonic(), time.time()
    if cluster is None:
        cluster = create(state, 2 if gpus is None else gpus, node_name, pv_root, fsync)
        print(f"new local cluster in {state}")
    else:
        if gpus is not None and gpus != cluster.gpus:
            cluster.gpus = gpus
            cluster.save()
        print(f"starting the local cluster recorded in {state} (its data, {cluster.server})")
    ensure_files(cluster)
    shutil.rmtree(state / "hold", ignore_errors=True)  # `up` means every component runs
    marker = str(state)
    stop_strays(marker)
    if not find_component(marker, "supervisor"):
        check_ports(cluster)
        wait_recorded(cluster, start_supervisor(cluster))
    wait_ready(cluster, since)
    started = LocalCluster.load(state) or cluster
    print(
        f"local cluster up in {time.monotonic() - t0:.1f}s: {started.server}, "
        f"node {started.node_name}, state {state}"
    )
    return started


def down(state: Path, quiet: bool = False) -> None:
    """Stop every process of the cluster in `state` (pods included); keep its data."""
    marker = str(state)
    cluster = LocalCluster.load(state)
    found = procs.find(marker)
    procs.terminate(find_component(marker, "supervisor"), 45.0)
    agents = find_component(marker, "node-agent")
    if cluster is not None and cluster.version < RECORD_VERSION:  # an older kubetune's agent
        old = cluster.pids.get("node-agent")
        if old and procs.environ(old).get(MARKER_ENV) == marker:
            agents.append(old)
    procs.terminate(agents, 20.0)
    procs.terminate([p for n in COMPONENTS[:-1] for p in find_component(marker, n)], 10.0)
    left = procs.find(marker)
    if left:
        procs.terminate(left, 2.0)
    cgroups.remove_stale(cgroups.cluster_prefix(marker))
    shutil.rmtree(state / "pods", ignore_errors=True)
    if (state / "pids.json").exists():
        write_json(state / "pids.json", {"pids": {}, "restarts": {}})
    if not quiet:
        print(
            f"local cluster stopped ({state}; its data is kept, `make clean` deletes it)"
            if found
            else f"no local cluster running ({state})"
        )


def clean(state: Path, quiet: bool = False) -> None:
    """Stop the cluster and delete its data: etcd, volumes, certificates, logs, the record."""
    cluster = LocalCluster.load(state)
    down(state, quiet=True)
    for sub in STATE_DIRS:
        shutil.rmtree(state / sub, ignore_errors=True)
    if cluster is None or cluster.pv_root == state / "pv":
        shutil.rmtree(state / "pv", ignore_errors=True)
    elif not quiet:
        print(f"kept the volume root {cluster.pv_root} (outside the state dir)")
    for name in STATE_FILES:
        (state / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        state.rmdir()
    if not quiet:
        print(f"local cluster deleted ({state})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubetune_local.cluster", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("action", choices=["up", "down", "clean", "status"])
    p.add_argument("--state-dir", type=Path, default=None)
    p.add_argument("--fresh", action="store_true", help="up: delete the old data first")
    p.add_argument(
        "--no-fsync", action="store_true", help="up (new cluster): etcd without fsync (tests)"
    )
    env_gpus = os.environ.get("KUBETUNE_NODE_GPUS")
    p.add_argument("--gpus", type=int, default=int(env_gpus) if env_gpus else None)
    p.add_argument("--node-name", default=os.environ.get("KUBETUNE_NODE_NAME", NODE_NAME))
    env_pv = os.environ.get("KUBETUNE_PV_ROOT")
    p.add_argument("--pv-root", type=Path, default=Path(env_pv) if env_pv else None)
    return p


def main(argv: list[str] | None = None) -> None:
    a = _parser().parse_args(argv)
    state = (a.state_dir or default_state_dir()).resolve()
    if a.action == "down":
        down(state)
        return
    if a.action == "clean":
        clean(state)
        return
    if a.action == "status":
        cluster = LocalCluster.load(state)
        ok = cluster is not None and cluster.healthy()
        print("up" if ok else "down")
        sys.exit(0 if ok else 1)
    pv_root = a.pv_root.resolve() if a.pv_root else None
    try:
        cluster = up(state, a.gpus, a.node_name, pv_root, fresh=a.fresh, fsync=not a.no_fsync)
    except ClusterError as exc:
        print(f"cluster-up failed: {exc}", file=sys.stderr)
        down(state, quiet=True)  # leave no half-started cluster behind (the data stays)
        sys.exit(2)
    print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)


if __name__ == "__main__":
    main()
