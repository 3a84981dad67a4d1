"""The local control plane's programs and their command lines, built from the cluster record.

Pure builders: the same record always gives the same command lines (same data dir, ports,
certificates and token file), which is what lets the supervisor restart a crashed component
and `cluster-up` restart a stopped cluster without changing anything a client sees.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from kubetune_local.record import REPO, ClusterError, LocalCluster

K8S_VERSION = "v1.20.2"


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


def etcd_url(cluster: LocalCluster) -> str:
    return f"http://127.0.0.1:{cluster.ports['etcd']}"


def etcd_argv(cluster: LocalCluster, etcd: str) -> list[str]:
    """etcd on the state dir's data; without fsync only when the record says so (tests)."""
    url, peer = etcd_url(cluster), f"http://127.0.0.1:{cluster.ports['etcd-peer']}"
    argv = [
        etcd,
        "--name=kubetune",
        f"--data-dir={cluster.state_dir / 'etcd'}",
        f"--listen-client-urls={url}",
        f"--advertise-client-urls={url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=kubetune={peer}",
        "--log-level=warn",
        "--logger=zap",
    ]
    if not cluster.fsync:
        argv.insert(3, "--unsafe-no-fsync")
    return argv


def apiserver_argv(cluster: LocalCluster, apiserver: str) -> list[str]:
    c = cluster.ca_file.parent
    return [
        apiserver,
        f"--etcd-servers={etcd_url(cluster)}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={cluster.api_port}",
        "--insecure-port=0",
        f"--cert-dir={c}",
        f"--tls-cert-file={c / 'apiserver.crt'}",
        f"--tls-private-key-file={c / 'apiserver.key'}",
        f"--token-auth-file={cluster.state_dir / 'tokens.csv'}",
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
    ]


def _kube_flags(cluster: LocalCluster) -> list[str]:
    return [
        f"--kubeconfig={cluster.kubeconfig}",
        f"--authentication-kubeconfig={cluster.kubeconfig}",
        f"--authorization-kubeconfig={cluster.kubeconfig}",
        "--bind-address=127.0.0.1",
        "--port=0",
        "--leader-elect=false",
        "--profiling=false",
    ]


def controller_manager_argv(cluster: LocalCluster, binary: str) -> list[str]:
    c = cluster.ca_file.parent
    return [
        binary,
        *_kube_flags(cluster),
        f"--secure-port={cluster.ports['controller-manager']}",
        "--controllers=*",
        f"--service-account-private-key-file={c / 'sa.key'}",
        f"--root-ca-file={c / 'ca.crt'}",
        "--pvclaimbinder-sync-period=2s",
        "--feature-gates=TTLAfterFinished=true",
    ]


def scheduler_argv(cluster: LocalCluster, binary: str) -> list[str]:
    return [binary, *_kube_flags(cluster), f"--secure-port={cluster.ports['scheduler']}"]


def node_agent_argv(cluster: LocalCluster) -> list[str]:
    c = cluster.ca_file.parent
    return [
        sys.executable,
        "-m",
        "kubetune_local.nodeagent",
        f"--kubeconfig={cluster.kubeconfig}",
        f"--state-dir={cluster.state_dir}",
        f"--pv-root={cluster.pv_root}",
        f"--node-name={cluster.node_name}",
        f"--gpus={cluster.gpus}",
        f"--port={cluster.ports['node-agent']}",
        f"--tls-cert={c / 'node.crt'}",
        f"--tls-key={c / 'node.key'}",
        f"--api-port={cluster.api_port}",
    ]


def commands(cluster: LocalCluster, bins: dict[str, str]) -> dict[str, list[str]]:
    """Every component's command line, keyed by component name."""
    return {
        "etcd": etcd_argv(cluster, bins["etcd"]),
        "apiserver": apiserver_argv(cluster, bins["kube-apiserver"]),
        "controller-manager": controller_manager_argv(cluster, bins["kube-controller-manager"]),
        "scheduler": scheduler_argv(cluster, bins["kube-scheduler"]),
        "node-agent": node_agent_argv(cluster),
    }


def extra_env(name: str) -> dict[str, str]:
    """Variables a component needs beyond the markers (the agent imports this package)."""
    if name in ("node-agent", "supervisor"):
        return {"PYTHONPATH": str(REPO / "hack")}
    return {}
