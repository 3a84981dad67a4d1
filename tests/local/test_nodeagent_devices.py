"""The node's GPUs: the machine's real ones when `nvidia-smi` lists some (a fake nvidia-smi
on PATH here), fake ones otherwise; each container sees only the GPUs allocated to it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from kubetune_local.nodeagent.config import AgentConfig
from kubetune_local.nodeagent.container import ContainerSpecs
from kubetune_local.nodeagent.devices import Allocator, node_gpus
from kubetune_local.nodeagent.envvars import ConfigError
from kubetune_local.nodeagent.node import capacity
from kubetune_local.nodeagent.status import ContainerRecord
from kubetune_local.nodeagent.volumes import VolumeBuilder

ROWS = (
    "0, GPU-4c3a1f0e-0000-1111-2222-333344445555, NVIDIA H200, 143771\n"
    "1, GPU-9d8e7f6a-aaaa-bbbb-cccc-ddddeeeeffff, NVIDIA H200, 143771\n"
)
UUIDS = [row.split(", ")[1] for row in ROWS.splitlines()]


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `nvidia-smi` on PATH that prints two H200s and records how it was called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    calls = tmp_path / "calls.txt"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\ncat <<EOF\n{ROWS}EOF\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return calls


def test_real_gpus_are_advertised_with_their_product(fake_nvidia_smi: Path) -> None:
    gpus = node_gpus(fake_count=5)
    assert gpus.real and gpus.count == 2 and gpus.ids == UUIDS
    assert capacity(gpus)["nvidia.com/gpu"] == "2"
    labels = gpus.labels()
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H200"
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["nvidia.com/gpu.memory"] == "143771"
    called = fake_nvidia_smi.read_text()
    assert "--query-gpu=index,uuid,name,memory.total" in called
    assert "--format=csv,noheader,nounits" in called


def test_fake_gpus_without_nvidia_smi_or_when_forced(
    fake_nvidia_smi: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forced = node_gpus(fake_count=3, force_fake=True)
    assert not forced.real and capacity(forced)["nvidia.com/gpu"] == "3"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    none = node_gpus(fake_count=2)
    assert not none.real and none.count == 2 and none.labels() == {"kubetune.dev/gpus": "fake"}
    assert none.env(["fake-gpu-0"]) == {}  # fake GPUs set no variable


def test_allocations_are_disjoint_stable_saved_and_released(
    fake_nvidia_smi: Path, tmp_path: Path
) -> None:
    gpus = node_gpus(fake_count=0)
    allocator = Allocator(gpus)
    a = allocator.allocate("pod-a", "trainer", 1, tmp_path / "a")
    b = allocator.allocate("pod-b", "trainer", 1, tmp_path / "b")
    assert sorted(a + b) == sorted(UUIDS)
    assert allocator.allocate("pod-a", "trainer", 1, tmp_path / "a") == a  # a restart: same
    with pytest.raises(ConfigError, match=re.escape("1 nvidia.com/gpu wanted, 0 free of 2")):
        allocator.allocate("pod-c", "trainer", 1, tmp_path / "c")
    # A restarted agent takes the saved allocation back.
    again = Allocator(gpus)
    again.restore("pod-a", tmp_path / "a")
    assert again.allocate("pod-c", "trainer", 1, tmp_path / "c") == b
    allocator.release("pod-a")
    assert allocator.allocate("pod-c", "trainer", 1, tmp_path / "c") == a
    assert gpus.env(a) == {"CUDA_VISIBLE_DEVICES": a[0]}


def _pod(containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {"containers": containers},
    }


def test_each_container_sees_only_its_gpus(fake_nvidia_smi: Path, tmp_path: Path) -> None:
    gpu = {
        "name": "trainer",
        "image": "python",
        "command": ["python3"],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
        # a value from the pod spec does not widen what the device plugin gave
        "env": [{"name": "CUDA_VISIBLE_DEVICES", "value": "0,1"}],
    }
    plain = {"name": "sidecar", "image": "python", "command": ["python3"]}
    pod = _pod([gpu, plain])
    cfg = AgentConfig(kubeconfig=tmp_path / "kc", state_dir=tmp_path, pv_root=tmp_path / "pv")
    volumes = VolumeBuilder(pod, tmp_path / "pod", cfg.pv_root, lambda *a: None, lambda *a: ("", 0))
    allocator = Allocator(node_gpus(0))
    specs = ContainerSpecs(pod, cfg, tmp_path / "pod", tmp_path / "logs", lambda *a: None, volumes)
    specs.allocator = allocator
    first = specs.build(gpu, ContainerRecord("trainer", "python"))
    side = specs.build(plain, ContainerRecord("sidecar", "python"))
    assert first.env["CUDA_VISIBLE_DEVICES"] == UUIDS[0]
    assert side.env["CUDA_VISIBLE_DEVICES"] == ""
    # the allocation is the device plugin's: kept in the pod's dir for a restarted agent
    assert (tmp_path / "pod" / "devices.json").read_text() == f'{{"trainer": ["{UUIDS[0]}"]}}'
