"""When the run checkpoints, and how all its processes write and resume one checkpoint.

Policy: every `checkpoint.everySteps` steps, after the last step (so that writing the model
can be retried from it) and when the run is preempted (`save`).

A checkpoint is written by every process together into one temporary directory on the shared
checkpoint volume: each rank its RNG state, then either rank 0 the full trainable tensors and
optimizer state (one process or DDP, whose replicas are identical) or every rank its shards
through torch.distributed.checkpoint (FSDP). Rank 0 renames the directory and writes the
completion marker only after a barrier, that is after every rank's files are on disk; a
checkpoint without its marker is ignored and removed, as for one process (`checkpoints.py`).

Resuming reads the newest complete checkpoint of the same run fingerprint. Its world size and
sharding must be those of the run: the data shards, the step count and the optimizer layout
all follow the world size, so a different one is refused with a BadInputError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_trainer import checkpoints
from kubetune_trainer.checkpoints import TrainState
from kubetune_trainer.distributed import Dist
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.modeling import trainable_parameters
from kubetune_trainer.parallel import Parallel

GANG_TMP = "tmp-gang"


@dataclass
class Checkpointer:
    """Checkpoints of one run (all ranks construct one and call it at the same steps)."""

    root: Path
    every: int
    keep: int
    par: Parallel
    optimizer: Any
    scheduler: Any
    dist: Dist

    def after_step(self, state: TrainState, last: bool) -> None:
        if last or (self.every and state.step % self.every == 0):
            self.save(state)

    def save(self, state: TrainState) -> Path:
        """Write the checkpoint of `state.step` (a no-op when it is complete already)."""
        final = checkpoints.final_dir(self.root, state.step)
        if self.dist.from_main((final / checkpoints.MARKER).is_file()):
            return final
        if not self.dist.active:
            trainable = trainable_parameters(self.par.model)
            return checkpoints.save_checkpoint(
                self.root, state, trainable, self.optimizer, self.scheduler, self.keep
            )
        state.world_size, state.sharded = self.dist.world_size, self.par.sharded
        tmp = self.root / f"{final.name}.{GANG_TMP}"
        if self.dist.main:
            checkpoints.fresh_dir(tmp)
        self.dist.barrier()
        checkpoints.write_rng(tmp, self.dist.rank)
        if self.par.sharded:
            self._save_sharded(tmp)
        elif self.dist.main:
            trainable = trainable_parameters(self.par.model)
            checkpoints.write_tensors(tmp, trainable, self.optimizer)
        if self.dist.main:
            checkpoints.write_run_state(tmp, state, self.scheduler)
        self.dist.barrier()  # every rank's files are written
        if self.dist.main:
            checkpoints.commit(self.root, tmp, state.step, self.keep)
        self.dist.barrier()  # the marker exists before any rank goes on (or exits)
        return final

    def _save_sharded(self, tmp: Path) -> None:
        from torch.distributed.checkpoint.state_dict_saver import save

        save(self._dcp_state(), checkpoint_id=tmp / checkpoints.DCP)

    def _dcp_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(ignore_frozen_params=True)
        model_state, optim_state = get_state_dict(self.par.model, self.optimizer, options=options)
        return {"model": model_state, "optim": optim_state}

    def clean(self) -> None:
        """Remove what a pod killed while saving left behind (rank 0; the others wait)."""
        if self.dist.main:
            checkpoints.remove_incomplete(self.root)
        self.dist.barrier()

    def resume(self, fingerprint: str) -> TrainState | None:
        """Restore the newest complete checkpoint of this run; its state, or None."""
        latest = self.dist.from_main(checkpoints.latest_checkpoint(self.root, fingerprint))
        if latest is None:
            return None
        saved = checkpoints.read_state(latest)
        self._check_layout(saved, latest)
        if saved.sharded:
            self._load_sharded(latest)
            checkpoints.load_run_state(latest, self.scheduler, self.dist.rank)
        else:
            _, tensors = checkpoints.load_checkpoint(
                latest, self.optimizer, self.scheduler, self.dist.rank
            )
            restore(self.par.model, tensors)
        return saved

    def _check_layout(self, saved: TrainState, path: Path) -> None:
        if saved.world_size != self.dist.world_size or saved.sharded != self.par.sharded:
            layout = f"{saved.world_size} process(es){', sharded' if saved.sharded else ''}"
            raise BadInputError(
                f"the checkpoint {path.name} was written by a run of {layout}; this run has "
                f"{self.dist.world_size} process(es), strategy {self.par.strategy}. Resuming "
                "needs the same resources.gpus x resources.nodes and distributed.strategy"
            )

    def _load_sharded(self, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
        from torch.distributed.checkpoint.state_dict_loader import load

        state = self._dcp_state()
        load(state, checkpoint_id=path / checkpoints.DCP)
        set_state_dict(
            self.par.model,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optim"],
            options=StateDictOptions(ignore_frozen_params=True),
        )


def restore(model: Any, tensors: dict[str, Any]) -> None:
    """Copy a checkpoint's trainable tensors into the model's trainable parameters."""
    import torch

    params = trainable_parameters(model)
    missing = set(params) - set(tensors)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} trainable tensors")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name].to(param.device, param.dtype))
