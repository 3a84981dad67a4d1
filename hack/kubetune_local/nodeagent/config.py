"""The node agent's settings: command-line flags, each with an environment fallback."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to know about its node and its surroundings."""

    kubeconfig: Path
    state_dir: Path
    pv_root: Path
    node_name: str = "kubetune-local-0"
    gpus: int = 2
    """Fake GPUs to advertise when the machine has no NVIDIA GPU (see `devices`)."""
    fake_gpus: bool = False
    """Advertise the fake GPUs even when nvidia-smi finds real ones."""
    port: int = 10250
    tls_cert: Path | None = None
    tls_key: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 6443
    cluster_marker: str = ""
    heartbeat_seconds: float = 10.0
    max_grace_seconds: float = 4.0
    python_bin: Path = field(default_factory=lambda: Path(sys.executable).parent)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs" / "pods"

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None = None) -> AgentConfig:
    """Parse flags (`--help` lists them); KUBETUNE_* variables give the defaults."""
    p = argparse.ArgumentParser(
        prog="kubetune-node-agent", description="Run pods bound to a node as local processes."
    )
    p.add_argument("--kubeconfig", default=_env("KUBECONFIG", ""), help="kubeconfig of the cluster")
    p.add_argument("--state-dir", default=_env("KUBETUNE_CLUSTER_DIR", ".local/cluster"))
    p.add_argument(
        "--pv-root",
        default=_env("KUBETUNE_PV_ROOT", ""),
        help="host dirs of claims (default STATE/pv)",
    )
    p.add_argument("--node-name", default=_env("KUBETUNE_NODE_NAME", "kubetune-local-0"))
    p.add_argument(
        "--gpus",
        type=int,
        default=int(_env("KUBETUNE_NODE_GPUS", "2")),
        help="fake nvidia.com/gpu to advertise when nvidia-smi finds no GPU",
    )
    p.add_argument(
        "--fake-gpus",
        action="store_true",
        default=_env("KUBETUNE_FAKE_GPUS", "") in ("1", "true", "yes"),
        help="advertise the fake GPUs even on a machine with NVIDIA GPUs",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(_env("KUBETUNE_NODE_PORT", "10250")),
        help="kubelet (log) port",
    )
    p.add_argument("--tls-cert", default=_env("KUBETUNE_NODE_TLS_CERT", ""))
    p.add_argument("--tls-key", default=_env("KUBETUNE_NODE_TLS_KEY", ""))
    p.add_argument(
        "--api-port",
        type=int,
        default=int(_env("KUBETUNE_API_PORT", "6443")),
        help="apiserver port given to pods",
    )
    p.add_argument("--heartbeat-seconds", type=float, default=10.0)
    p.add_argument(
        "--max-grace-seconds", type=float, default=4.0, help="cap on a deleted pod's grace period"
    )
    a = p.parse_args(argv)
    state = Path(a.state_dir).resolve()
    return AgentConfig(
        kubeconfig=Path(a.kubeconfig).resolve(),
        state_dir=state,
        pv_root=Path(a.pv_root).resolve() if a.pv_root else state / "pv",
        node_name=a.node_name,
        gpus=a.gpus,
        fake_gpus=a.fake_gpus,
        port=a.port,
        tls_cert=Path(a.tls_cert) if a.tls_cert else None,
        tls_key=Path(a.tls_key) if a.tls_key else None,
        api_port=a.api_port,
        cluster_marker=os.environ.get("KUBETUNE_LOCAL_CLUSTER", str(state)),
        heartbeat_seconds=a.heartbeat_seconds,
        max_grace_seconds=a.max_grace_seconds,
    )
