"""The Node object: registration with capacity (GPUs included) and the Ready heartbeat.

GPUs are the machine's NVIDIA GPUs when nvidia-smi lists some (their count, and labels
naming the product), else the configured number of fake ones (`devices`).

The scheduler places pods only on a Ready node whose allocatable resources fit, and the
node lifecycle controller marks a node NotReady (and taints it) after 40 s without a status
update, so the agent re-posts its conditions every `heartbeat_seconds` (10 s by default).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubetune_crd.names import now_rfc3339

from kubetune_local.nodeagent.config import AgentConfig
from kubetune_local.nodeagent.devices import RESOURCE, NodeGpus

Obj = dict[str, Any]
KUBELET_VERSION = "v1.20.2-kubetune-local"


def memory_kib() -> int:
    """Total memory of the machine in KiB."""
    with Path("/proc/meminfo").open() as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def capacity(gpus: NodeGpus) -> dict[str, str]:
    """What the node offers: the machine's CPUs and memory, 110 pods and its GPUs."""
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{memory_kib()}Ki",
        "pods": "110",
        "ephemeral-storage": "100Gi",
        RESOURCE: str(gpus.count),
    }


def node_status(cfg: AgentConfig, gpus: NodeGpus) -> Obj:
    """The node's full status, with fresh heartbeat times."""
    stamp = now_rfc3339()

    def cond(kind: str, status: str, reason: str, message: str) -> Obj:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    cap = capacity(gpus)
    return {
        "capacity": cap,
        "allocatable": cap,
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": cfg.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.port}},
        "nodeInfo": {
            "machineID": cfg.node_name,
            "systemUUID": cfg.node_name,
            "bootID": str(os.getpid()),
            "kernelVersion": platform.release(),
            "osImage": "kubetune local node agent",
            "containerRuntimeVersion": "kubetune-local://0.1",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
        "conditions": [
            cond("Ready", "True", "KubeletReady", "kubetune node agent is posting ready status"),
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
        ],
    }


class NodeRegistration:
    """Creates the Node if needed and keeps its status fresh."""

    def __init__(self, cfg: AgentConfig, api_client: client.ApiClient, gpus: NodeGpus) -> None:
        self.cfg = cfg
        self.gpus = gpus
        self.core: Any = client.CoreV1Api(api_client)
        self._transition: dict[str, str] = {}

    def register(self) -> None:
        """Create the Node (or adopt an existing one) and post its status."""
        labels = {
            "kubernetes.io/hostname": self.cfg.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubetune.dev/local-node": "true",
            **self.gpus.labels(),
        }
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.cfg.node_name, "labels": labels},
        }
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_node(self.cfg.node_name, {"metadata": {"labels": labels}})
        self.heartbeat()

    def heartbeat(self) -> None:
        """Post the node's status (Ready=True) with a fresh heartbeat time."""
        status = node_status(self.cfg, self.gpus)
        for condition in status["conditions"]:
            first = self._transition.setdefault(condition["type"], condition["lastTransitionTime"])
            condition["lastTransitionTime"] = first
        self.core.patch_node_status(self.cfg.node_name, {"status": status})
