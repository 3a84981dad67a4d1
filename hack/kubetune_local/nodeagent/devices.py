"""The node's GPUs, and which of them each container got (what a device plugin does).

When `nvidia-smi` is on PATH and lists GPUs, the node advertises exactly those
(`nvidia.com/gpu` = their count, with product, count and memory labels as NVIDIA's GPU
feature discovery sets them), and every container sees only the GPUs allocated to it through
`CUDA_VISIBLE_DEVICES` (their UUIDs; empty for a container that asked for none). Without
one, the node advertises `--gpus` fake GPUs, as before: the scheduler counts them and no
variable is set. Allocations are kept per pod and container, stay the same across the
container's restarts, are saved in the pod's directory (a restarted agent keeps them) and
are released when the pod ends.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_local.nodeagent.envvars import ConfigError, parse_quantity

log = logging.getLogger(__name__)
RESOURCE = "nvidia.com/gpu"
QUERY = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
Runner = Callable[[list[str]], str]


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU of the machine, as nvidia-smi lists it."""

    index: int
    uuid: str
    name: str
    memory_mib: int


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def parse_gpus(text: str) -> list[Gpu]:
    """Rows of `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,...`."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        memory = int(float(parts[3])) if re.fullmatch(r"[\d.]+", parts[3]) else 0
        gpus.append(Gpu(int(parts[0]), parts[1], parts[2], memory))
    return gpus


def discover(run: Runner = _run) -> list[Gpu]:
    """The machine's NVIDIA GPUs (empty without nvidia-smi, or when it fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        return parse_gpus(run([exe, *QUERY]))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s): advertising fake GPUs", exc)
        return []


def label_value(text: str) -> str:
    """A valid label value: letters, digits, `-_.`, at most 63, alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip())[:63]
    return value.strip("-_.")


@dataclass(frozen=True)
class NodeGpus:
    """What the node advertises: real GPUs, or `fake_count` fake ones."""

    devices: tuple[Gpu, ...] = ()
    fake_count: int = 0

    @property
    def real(self) -> bool:
        return bool(self.devices)

    @property
    def count(self) -> int:
        return len(self.devices) if self.real else self.fake_count

    @property
    def ids(self) -> list[str]:
        if self.real:
            return [g.uuid for g in self.devices]
        return [f"fake-gpu-{i}" for i in range(self.fake_count)]

    def labels(self) -> dict[str, str]:
        """Node labels: GPU feature discovery's for real GPUs, a marker for fake ones."""
        if not self.real:
            return {"kubetune.dev/gpus": "fake"}
        first = self.devices[0]
        return {
            "kubetune.dev/gpus": "nvidia",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": label_value(first.name),
            "nvidia.com/gpu.count": str(len(self.devices)),
            "nvidia.com/gpu.memory": str(first.memory_mib),
        }

    def env(self, ids: list[str]) -> dict[str, str]:
        """The container's device variables for the GPUs `ids` (none for fake GPUs)."""
        if not self.real:
            return {}
        return {"CUDA_VISIBLE_DEVICES": ",".join(ids)}


def node_gpus(fake_count: int, force_fake: bool = False, run: Runner = _run) -> NodeGpus:
    """The node's GPUs: the real ones unless there are none (or fakes are forced)."""
    found = [] if force_fake else discover(run)
    return NodeGpus(tuple(found), fake_count)


def requested(container: dict[str, Any]) -> int:
    """How many GPUs a container asks for (its limit, else its request)."""
    res = container.get("resources") or {}
    amount = (res.get("limits") or {}).get(RESOURCE) or (res.get("requests") or {}).get(RESOURCE)
    return int(parse_quantity(amount)) if amount else 0


@dataclass
class Allocator:
    """GPU ids given to each (pod, container); saved per pod in `<pod dir>/devices.json`."""

    gpus: NodeGpus
    by_pod: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def restore(self, uid: str, pod_dir: Path) -> None:
        """Take back what a previous agent allocated to this pod."""
        try:
            saved = json.loads((pod_dir / "devices.json").read_text())
        except (OSError, ValueError):
            return
        with self._lock:
            self.by_pod[uid] = {str(k): [str(i) for i in v] for k, v in saved.items()}

    def allocate(self, uid: str, container: str, count: int, pod_dir: Path) -> list[str]:
        """The container's GPUs (the same ones on every restart); ConfigError when busy."""
        with self._lock:
            pod = self.by_pod.setdefault(uid, {})
            if container in pod:
                return list(pod[container])
            used = {g for pod_ids in self.by_pod.values() for ids in pod_ids.values() for g in ids}
            free = [i for i in self.gpus.ids if i not in used]
            if len(free) < count:
                raise ConfigError(
                    f"{count} {RESOURCE} wanted, {len(free)} free of {self.gpus.count} on the node"
                )
            pod[container] = free[:count]
            pod_dir.mkdir(parents=True, exist_ok=True)
            (pod_dir / "devices.json").write_text(json.dumps(pod))
            return list(pod[container])

    def release(self, uid: str) -> None:
        """The pod ended: its GPUs are free again."""
        with self._lock:
            self.by_pod.pop(uid, None)
