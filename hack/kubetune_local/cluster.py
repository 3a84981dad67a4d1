"""`make cluster-up` / `make cluster-down`: the local control plane and its node agent.

`up` starts etcd (temporary data, no fsync), kube-apiserver, kube-controller-manager,
kube-scheduler and the node agent on free 127.0.0.1 ports, writes a token kubeconfig and
records everything in `<state>/cluster.json`; it is idempotent (a healthy cluster is left
as is). `down` stops the agent first (it stops its pods), then the control plane, then
sweeps any process still carrying this cluster's marker variable; running it twice is safe.
Usage: `python -m kubetune_local.cluster up|down|status [--state-dir DIR]`; the state dir
defaults to $KUBETUNE_CLUSTER_DIR or `<repo>/.local/cluster`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubetune_local import certs, procs
from kubetune_local.nodeagent import cgroups

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "v1.20.2"
NODE_NAME = "kubetune-local-0"


class ClusterError(RuntimeError):
    """The cluster could not be started (missing binaries, a component that died...)."""


@dataclass
class LocalCluster:
    """A running local cluster, as recorded in `<state>/cluster.json`."""

    state_dir: Path
    kubeconfig: Path
    server: str
    api_port: int
    pv_root: Path
    node_name: str
    token: str
    ca_file: Path
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Variables that point tools at this cluster (KUBECONFIG and the marker)."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "KUBETUNE_CLUSTER_DIR": str(self.state_dir),
            "KUBETUNE_PV_ROOT": str(self.pv_root),
        }

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; returns the completed process (text output)."""
        env = {**os.environ, **self.env}
        return subprocess.run(
            ["kubectl", *args],
            env=env,
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def save(self) -> None:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        (self.state_dir / "cluster.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> LocalCluster | None:
        """The recorded cluster of `state_dir`, or None."""
        try:
            data: dict[str, Any] = json.loads((state_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return None
        for key in ("state_dir", "kubeconfig", "pv_root", "ca_file"):
            data[key] = Path(data[key])
        return cls(**data)

    def get(self, path: str, timeout: float = 2.0) -> Any:
        """GET an API path with the admin token; the decoded JSON (or text)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(  # noqa: S310 - an https URL built here
            self.server + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:  # noqa: S310
            body = resp.read().decode()
        try:
            return json.loads(body)
        except ValueError:
            return body

    def healthy(self) -> bool:
        """Every recorded process alive (and ours), the API ready and the node Ready."""
        marker = str(self.state_dir)
        for pid in self.pids.values():
            if not procs.alive(pid) or procs.environ(pid).get("KUBETUNE_LOCAL_CLUSTER") != marker:
                return False
        for _ in range(3):  # a loaded 2-core machine can be slow to answer: retry first
            try:
                node = self.get(f"/api/v1/nodes/{self.node_name}", timeout=10)
                return self.get("/readyz", timeout=10) == "ok" and node_ready(node)
            except Exception:
                time.sleep(1)
        return False


def node_ready(node: Any) -> bool:
    """Whether a Node (API dict) has Ready=True."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def default_state_dir() -> Path:
    return Path(os.environ.get("KUBETUNE_CLUSTER_DIR") or REPO / ".local" / "cluster").resolve()


def k8s_bin_dir() -> Path:
    cache = Path(os.environ.get("KUBETUNE_CACHE") or Path.home() / ".cache" / "kubetune")
    return Path(os.environ.get("KUBETUNE_K8S_BIN") or cache / f"k8s-{K8S_VERSION}" / "bin")


def binaries() -> dict[str, str]:
    """Paths of the control-plane programs; ClusterError naming what is missing."""
    bin_dir = k8s_bin_dir()
    found = {
        name: str(bin_dir / name)
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    }
    found["etcd"] = shutil.which("etcd") or "/usr/bin/etcd"
    found["openssl"] = shutil.which("openssl") or ""
    missing = [p for p in found.values() if not p or not os.access(p, os.X_OK)]
    if missing:
        raise ClusterError(
            f"missing {', '.join(missing) or 'openssl'}: run `bash hack/build-k8s.sh`"
        )
    return found


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


def kubeconfig_text(server: str, ca_file: Path, token: str) -> str:
    """A token kubeconfig (JSON is valid YAML)."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubetune-local",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": "kubetune-local",
                "context": {"cluster": "kubetune-local", "user": "admin", "namespace": "default"},
            }
        ],
        "current-context": "kubetune-local",
    }
    return json.dumps(cfg, indent=2) + "\n"


def _spawn(name: str, argv: list[str], state: Path, extra_env: dict[str, str] | None = None) -> int:
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KUBETUNE_LOCAL_CLUSTER": str(state), **(extra_env or {})}
    with (logs / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def _wait(what: str, check: Any, timeout: float, cluster: LocalCluster, component: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - polling: any failure means "not yet"
            pass
        pid = cluster.pids.get(component)
        if pid is not None and not procs.alive(pid):
            break
        time.sleep(0.1)
    log = cluster.state_dir / "logs" / f"{component}.log"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise ClusterError(f"{what} did not come up; end of {log}:\n{tail}")


def up(state: Path, gpus: int, node_name: str, pv_root: Path | None) -> LocalCluster:
    """Start the cluster in `state` (or find it healthy); returns its description."""
    existing = LocalCluster.load(state)
    if existing is not None and existing.healthy():
        print(f"local cluster already up and healthy ({existing.server}, state {state})")
        return existing
    if existing is not None:
        print("found a stale local cluster: stopping it first")
    down(state, quiet=True)
    bins = binaries()
    t0 = time.monotonic()
    cert_dir = state / "certs"
    certs.ensure(cert_dir, node_name)
    pv = pv_root or state / "pv"
    if pv_root is None:
        shutil.rmtree(
            pv, ignore_errors=True
        )  # a fresh etcd has no claims: start with no stale data
    for sub in ("etcd", "pods", "logs"):
        shutil.rmtree(state / sub, ignore_errors=True)
    token = secrets.token_hex(16)
    (state / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    etcd_port, peer_port, api_port, cm_port, sched_port, node_port = free_ports(6)
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = state / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(server, cert_dir / "ca.crt", token))
    kubeconfig.chmod(0o600)
    cluster = LocalCluster(
        state_dir=state,
        kubeconfig=kubeconfig,
        server=server,
        api_port=api_port,
        pv_root=pv,
        node_name=node_name,
        token=token,
        ca_file=cert_dir / "ca.crt",
        ports={
            "etcd": etcd_port,
            "etcd-peer": peer_port,
            "apiserver": api_port,
            "controller-manager": cm_port,
            "scheduler": sched_port,
            "node-agent": node_port,
        },
    )
    etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
    cluster.pids["etcd"] = _spawn(
        "etcd",
        [
            bins["etcd"],
            "--name=kubetune",
            f"--data-dir={state / 'etcd'}",
            "--unsafe-no-fsync",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kubetune={peer_url}",
            "--log-level=warn",
            "--logger=zap",
        ],
        state,
    )
    c = cert_dir
    cluster.pids["apiserver"] = _spawn(
        "apiserver",
        [
            bins["kube-apiserver"],
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            "--insecure-port=0",
            f"--cert-dir={c}",
            f"--tls-cert-file={c / 'apiserver.crt'}",
            f"--tls-private-key-file={c / 'apiserver.key'}",
            f"--token-auth-file={state / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={c / 'sa.pub'}",
            f"--service-account-signing-key-file={c / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--feature-gates=TTLAfterFinished=true",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--kubelet-preferred-address-types=InternalIP",
        ],
        state,
    )
    kube_flags = [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--port=0",
        "--leader-elect=false",
        "--profiling=false",
    ]
    cluster.pids["controller-manager"] = _spawn(
        "controller-manager",
        [
            bins["kube-controller-manager"],
            *kube_flags,
            f"--secure-port={cm_port}",
            "--controllers=*",
            f"--service-account-private-key-file={c / 'sa.key'}",
            f"--root-ca-file={c / 'ca.crt'}",
            "--pvclaimbinder-sync-period=2s",
            "--feature-gates=TTLAfterFinished=true",
        ],
        state,
    )
    cluster.pids["scheduler"] = _spawn(
        "scheduler", [bins["kube-scheduler"], *kube_flags, f"--secure-port={sched_port}"], state
    )
    cluster.pids["node-agent"] = _spawn(
        "node-agent",
        [
            sys.executable,
            "-m",
            "kubetune_local.nodeagent",
            f"--kubeconfig={kubeconfig}",
            f"--state-dir={state}",
            f"--pv-root={pv}",
            f"--node-name={node_name}",
            f"--gpus={gpus}",
            f"--port={node_port}",
            f"--tls-cert={c / 'node.crt'}",
            f"--tls-key={c / 'node.key'}",
            f"--api-port={api_port}",
        ],
        state,
        {"PYTHONPATH": str(REPO / "hack")},
    )
    cluster.save()
    _wait("kube-apiserver", lambda: cluster.get("/readyz") == "ok", 60, cluster, "apiserver")
    _wait(
        f"node {node_name}",
        lambda: node_ready(cluster.get(f"/api/v1/nodes/{node_name}")),
        60,
        cluster,
        "node-agent",
    )
    print(
        f"local cluster up in {time.monotonic() - t0:.1f}s: {server}, "
        f"node {node_name} ({gpus} GPUs), state {state}"
    )
    return cluster


def down(state: Path, quiet: bool = False) -> None:
    """Stop everything the cluster in `state` started; safe when nothing runs."""
    cluster = LocalCluster.load(state)
    marker = str(state)
    if cluster is not None:
        agent = cluster.pids.get("node-agent")
        if agent and procs.environ(agent).get("KUBETUNE_LOCAL_CLUSTER") == marker:
            procs.terminate([agent], 10.0)
        others = [
            p
            for n, p in cluster.pids.items()
            if n != "node-agent" and procs.environ(p).get("KUBETUNE_LOCAL_CLUSTER") == marker
        ]
        procs.terminate(others, 5.0)
    left = procs.find(marker)
    if left:
        procs.terminate(left, 2.0)
    cgroups.remove_stale(cgroups.cluster_prefix(marker))
    for sub in ("etcd", "pods"):
        shutil.rmtree(state / sub, ignore_errors=True)
    (state / "cluster.json").unlink(missing_ok=True)
    if not quiet:
        print(
            f"local cluster stopped ({state})"
            if cluster or left
            else f"no local cluster running ({state})"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="kubetune_local.cluster", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--state-dir", type=Path, default=None)
    p.add_argument("--gpus", type=int, default=int(os.environ.get("KUBETUNE_NODE_GPUS", "2")))
    p.add_argument("--node-name", default=os.environ.get("KUBETUNE_NODE_NAME", NODE_NAME))
    p.add_argument(
        "--pv-root",
        type=Path,
        default=Path(os.environ["KUBETUNE_PV_ROOT"])
        if os.environ.get("KUBETUNE_PV_ROOT")
        else None,
    )
    a = p.parse_args(argv)
    state = (a.state_dir or default_state_dir()).resolve()
    state.mkdir(parents=True, exist_ok=True)
    if a.action == "down":
        down(state)
        return
    if a.action == "status":
        cluster = LocalCluster.load(state)
        ok = cluster is not None and cluster.healthy()
        print("up" if ok else "down")
        sys.exit(0 if ok else 1)
    try:
        cluster = up(state, a.gpus, a.node_name, a.pv_root.resolve() if a.pv_root else None)
    except ClusterError as exc:
        print(f"cluster-up failed: {exc}", file=sys.stderr)
        down(state, quiet=True)  # leave no half-started cluster behind
        sys.exit(2)
    print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)


if __name__ == "__main__":
    main()
