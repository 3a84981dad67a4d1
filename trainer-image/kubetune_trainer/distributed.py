"""The training processes of one run and the few collectives the trainer needs.

`torchrun` (`launcher.py`) starts one worker per device and gives each its place in the
gang through `RANK`, `WORLD_SIZE`, `LOCAL_RANK` and `LOCAL_WORLD_SIZE`; `init()` joins the
process group with NCCL on GPUs and gloo on CPU. A run of one process has no process group:
`SINGLE` answers every collective locally, so the single-process path runs exactly the code
it ran before distributed training existed.

Collectives carry a timeout (`KUBETUNE_COLLECTIVE_TIMEOUT_SECONDS`, default 30 minutes):
a rank whose peers are gone fails instead of waiting forever, and the launcher then stops
the others.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

TIMEOUT_ENV = "KUBETUNE_COLLECTIVE_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_S = 1800
WORKER_ENV = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")
"""Set by torchrun in each worker: a process that has them is a worker, not a launcher."""


def is_worker(env: Mapping[str, str]) -> bool:
    return any(key in env for key in WORKER_ENV)


@dataclass(frozen=True)
class Dist:
    """This process's place in the run; the collectives are no-ops for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the one process that reports, writes the model and the result."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def _device(self) -> Any:
        import torch

        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else None

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over all ranks (float64, so token counts stay exact)."""
        if not self.active:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._device())
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (agreeing on a stop)."""
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def from_main(self, value: Any) -> Any:
        """Rank 0's value of a picklable object, on every rank."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._device())
        return box[0]


SINGLE = Dist()


def collective_timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "")
    seconds = int(raw) if raw.strip().isdigit() and int(raw) > 0 else DEFAULT_TIMEOUT_S
    return timedelta(seconds=seconds)


def init(env: Mapping[str, str] | None = None) -> Dist:
    """Join the process group torchrun set up (SINGLE outside torchrun or for one process)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE
    import torch
    import torch.distributed as dist

    local_rank = int(env.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "timeout": collective_timeout()}
    if cuda:
        torch.cuda.set_device(local_rank)
        kwargs["device_id"] = torch.device("cuda", local_rank)
    dist.init_process_group(**kwargs)
    return Dist(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")),
        backend=backend,
    )


def shutdown(state: Dist) -> None:
    if not state.active:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
