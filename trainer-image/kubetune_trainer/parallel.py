"""How the processes of a run share the model: PyTorch's DDP or FSDP2, never home-made.

- `ddp`: every process holds the whole model; DistributedDataParallel averages the gradients
  (once per optimizer step: the other micro-batches run under `no_sync`).
- `fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`) on each transformer block and on the
  root: parameters, gradients and optimizer state are sharded across the processes, so a model
  whose full fine-tune does not fit on one device still trains on several.
- `auto` (`spec.distributed.strategy`): ddp for LoRA (the trainable state is small), fsdp for
  full fine-tuning. One process trains the plain model (`single`).

`Parallel.model` stays the Hugging Face (or peft) model: its config, its evaluation and its
saving go through it; `Parallel.forward` is what a training step calls (the DDP wrapper).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from kubetune_crd.method import ADAPTER_METHODS, MethodSpec

from kubetune_trainer.distributed import Dist
from kubetune_trainer.runtime import DeviceInfo

Plan = Literal["single", "ddp", "fsdp"]


def resolve_strategy(requested: str, method: str, world_size: int) -> Plan:
    """The strategy a run uses: `single` for one process, `auto` resolved by the method."""
    if world_size <= 1:
        return "single"
    if requested == "auto":
        return "ddp" if method in ADAPTER_METHODS else "fsdp"
    if requested in ("ddp", "fsdp"):
        return "ddp" if requested == "ddp" else "fsdp"
    raise ValueError(f"unknown distributed strategy {requested!r}")


@dataclass
class Parallel:
    model: Any
    forward: Any
    strategy: Plan

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    @contextmanager
    def micro_batch(self, sync: bool) -> Iterator[None]:
        """Gradients are exchanged on the last micro-batch of a step only (`sync`)."""
        if self.strategy == "ddp" and not sync:
            with self.forward.no_sync():
                yield
            return
        if self.strategy == "fsdp":
            self.model.set_requires_gradient_sync(sync)
        yield


def _block_classes(model: Any) -> set[str]:
    """Class names of the model's transformer blocks (transformers lists them as the modules
    never to split across devices)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


def wrap(model: Any, strategy: Plan, device: DeviceInfo, dist: Dist) -> Parallel:
    """The model ready for `strategy` on this process's device."""
    if strategy == "single":
        return Parallel(model, model, strategy)
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.device.index] if device.device.type == "cuda" else None
        # Buffers (rotary tables) are the same everywhere: no broadcast before each forward.
        ddp = DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
        return Parallel(model, ddp, strategy)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.device.type, (dist.world_size,))
    blocks = _block_classes(model)
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return Parallel(model, model, strategy)


def model_for_saving(
    par: Parallel, base_model: str, method: MethodSpec, device: DeviceInfo, dist: Dist
) -> Any | None:
    """On rank 0, a plain (unsharded, unwrapped) model holding the trained weights; None on
    the other ranks. FSDP gathers the full state dict to rank 0's CPU (every rank must call
    this) and loads it into a fresh copy of the model, which saves like a single-process one."""
    if not par.sharded:
        return par.model if dist.main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from kubetune_trainer.modeling import load_model

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(par.model, options=options)
    if not dist.main:
        return None
    import torch

    plain = load_model(
        base_model, method, DeviceInfo(torch.device("cpu"), device.bf16, "cpu"), False
    )
    plain.load_state_dict(state)
    return plain
