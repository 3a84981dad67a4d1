"""What a local cluster is, as recorded in its state dir, so every `up` finds the same one.

`<state>/cluster.json` is written once, when the cluster is first made, and kept: its ports,
its admin token, its paths and settings. Every later `cluster-up` (after `cluster-down`, a
crash or a reboot) starts the same cluster from it -- same API address, same kubeconfig, same
certificates, same etcd data -- and only `clean` (or `up --fresh`) removes it.
`<state>/pids.json` is the supervisor's live view: the PID of each running component and
how often it was restarted.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubetune_local import procs

REPO = Path(__file__).resolve().parents[2]
NODE_NAME = "kubetune-local-0"
RECORD_VERSION = 2
COMPONENTS = ("etcd", "apiserver", "controller-manager", "scheduler", "node-agent")
"""The control plane in start order; the supervisor (`supervisor`) runs them."""
MARKER_ENV = "KUBETUNE_LOCAL_CLUSTER"
COMPONENT_ENV = "KUBETUNE_COMPONENT"


class ClusterError(RuntimeError):
    """The cluster could not be started (missing binaries, a component that died...)."""


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a record."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


@dataclass
class LocalCluster:
    """A local cluster, as recorded in `<state>/cluster.json` (plus the live PIDs)."""

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
    gpus: int = 2
    """Fake `nvidia.com/gpu` to advertise when the machine has no NVIDIA GPU."""
    fsync: bool = True
    """etcd syncs its writes (durable); test clusters may turn it off for speed."""
    version: int = RECORD_VERSION

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
        """Write the record (everything but the live PIDs, which the supervisor owns)."""
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        data.pop("pids")
        write_json(self.state_dir / "cluster.json", data)

    @classmethod
    def load(cls, state_dir: Path) -> LocalCluster | None:
        """The recorded cluster of `state_dir` with its live PIDs, or None."""
        try:
            data: dict[str, Any] = json.loads((state_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return None
        for key in ("state_dir", "kubeconfig", "pv_root", "ca_file"):
            data[key] = Path(data[key])
        data.setdefault("version", 1)
        known = set(cls.__dataclass_fields__)
        cluster = cls(**{k: v for k, v in data.items() if k in known})
        if cluster.version >= RECORD_VERSION:
            cluster.pids = live_pids(state_dir)
        return cluster

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

    def running(self) -> bool:
        """The supervisor and every component alive (and ours)."""
        marker = str(self.state_dir)
        wanted = ("supervisor", *COMPONENTS)
        return all(
            name in self.pids and is_component(self.pids[name], marker, name) for name in wanted
        )

    def healthy(self) -> bool:
        """Every process alive (and ours), the API ready and the node Ready."""
        if not self.running():
            return False
        for _ in range(3):  # a loaded 2-core machine can be slow to answer: retry first
            try:
                node = self.get(f"/api/v1/nodes/{self.node_name}", timeout=10)
                return self.get("/readyz", timeout=10) == "ok" and node_ready(node)
            except Exception:
                time.sleep(1)
        return False


def live_pids(state_dir: Path) -> dict[str, int]:
    """The PIDs the supervisor last recorded (empty when it never ran or was stopped)."""
    try:
        data = json.loads((state_dir / "pids.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in (data.get("pids") or {}).items()}


def is_component(pid: int, marker: str, name: str) -> bool:
    """Whether `pid` is alive and is component `name` of the cluster marked `marker`."""
    env = procs.environ(pid)
    return procs.alive(pid) and env.get(MARKER_ENV) == marker and env.get(COMPONENT_ENV) == name


def find_component(marker: str, name: str) -> list[int]:
    """Live processes of component `name` of this cluster (not pods started from it)."""
    return [
        p
        for p in procs.find(marker, {COMPONENT_ENV: name})
        if procs.alive(p) and "KUBETUNE_POD_UID" not in procs.environ(p)
    ]


def node_ready(node: Any) -> bool:
    """Whether a Node (API dict) has Ready=True."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def default_state_dir() -> Path:
    return Path(os.environ.get("KUBETUNE_CLUSTER_DIR") or REPO / ".local" / "cluster").resolve()


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
