"""Resumable training state on the output volume.

A checkpoint is written to `checkpoint-<step>.tmp-<pid>`, fsynced, renamed to
`checkpoint-<step>` and only then marked with a `COMPLETE` file (written and fsynced last).
On start the newest directory WITH the marker and the same run fingerprint is used:
half-written directories (a pod killed mid-save) are skipped and cleaned up. Only the newest
`keep` complete checkpoints are kept.

Contents: the trainable parameters (safetensors), optimizer and scheduler state, the RNG
states and `state.json` (step, tokens, losses, eval loss before training, and the world size
and sharding of the run that wrote it). This module is the layout and the single-process
writer; `checkpointing.py` writes and reads them for a run of several processes (FSDP runs
store the model and optimizer with torch.distributed.checkpoint under `dcp/` instead).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubetune_trainer.durable import fsync_dir, fsync_file

MARKER = "COMPLETE"
STATE = "state.json"
PARAMS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
RNG = "rng.pt"
DCP = "dcp"
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainState:
    """Progress that a resumed run continues from."""

    fingerprint: str
    step: int = 0
    total_steps: int = 0
    real_tokens: int = 0
    label_tokens: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_loss_before: float | None = None
    reward_margin_before: float | None = None
    reward_accuracy_before: float | None = None
    train_seconds: float = 0.0
    world_size: int = 1
    sharded: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        data = json.loads(text)
        data["losses"] = [(int(s), float(v)) for s, v in data.get("losses", [])]
        return cls(**data)


def _fsync_tree(path: Path) -> None:
    for file in path.iterdir():
        if file.is_file():
            fsync_file(file)
    fsync_dir(path)


def complete_checkpoints(root: Path, fingerprint: str | None = None) -> list[tuple[int, Path]]:
    """(step, dir) of complete checkpoints, oldest first; optionally of one fingerprint only."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if not match or not (child / MARKER).is_file():
            continue
        if fingerprint is not None:
            try:
                state = TrainState.from_json((child / STATE).read_text(encoding="utf-8"))
            except (OSError, ValueError, TypeError):
                continue
            if state.fingerprint != fingerprint:
                continue
        found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: Path, fingerprint: str | None = None) -> Path | None:
    found = complete_checkpoints(root, fingerprint)
    return found[-1][1] if found else None


def final_dir(root: Path, step: int) -> Path:
    return root / f"checkpoint-{step:08d}"


def rng_file(rank: int) -> str:
    return RNG if rank == 0 else f"rng-{rank}.pt"


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_tensors(directory: Path, trainable: dict[str, Any], optimizer: Any) -> None:
    """The trainable parameters and the optimizer state (a full, unsharded copy)."""
    import torch
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, directory / PARAMS)
    torch.save(optimizer.state_dict(), directory / OPTIMIZER)


def write_run_state(directory: Path, state: TrainState, scheduler: Any) -> None:
    import torch

    torch.save(scheduler.state_dict(), directory / SCHEDULER)
    (directory / STATE).write_text(state.to_json(), encoding="utf-8")


def write_rng(directory: Path, rank: int) -> None:
    import torch

    torch.save(rng_state(), directory / rng_file(rank))
    fsync_file(directory / rng_file(rank))


def commit(root: Path, tmp: Path, step: int, keep: int) -> Path:
    """Fsync `tmp`, rename it to the step's directory and mark it complete; then prune."""
    final = final_dir(root, step)
    _fsync_tree(tmp)
    if final.exists():  # a half-written directory of the same step
        shutil.rmtree(final)
    tmp.rename(final)
    with (final / MARKER).open("w", encoding="utf-8") as f:
        f.write(f"{step}\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(root)
    prune(root, keep)
    return final


def save_checkpoint(
    root: Path,
    state: TrainState,
    trainable: dict[str, Any],
    optimizer: Any,
    scheduler: Any,
    keep: int,
) -> Path:
    """Write a complete checkpoint atomically (one process); prune older and half-written
    ones."""
    final = final_dir(root, state.step)
    if (final / MARKER).is_file():  # this step is saved already (SIGTERM after a periodic save)
        return final
    tmp = fresh_dir(root / f"{final.name}.tmp-{os.getpid()}")
    write_tensors(tmp, trainable, optimizer)
    write_run_state(tmp, state, scheduler)
    write_rng(tmp, 0)
    return commit(root, tmp, state.step, keep)


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop older ones and stale temporaries."""
    complete = complete_checkpoints(root)
    for _, path in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
    newest = complete[-1][0] if complete else -1
    for child in root.iterdir():
        match = _NAME.match(child.name)
        half_written = match is not None and not (child / MARKER).exists()
        if ".tmp-" in child.name or (half_written and match and int(match.group(1)) < newest):
            shutil.rmtree(child, ignore_errors=True)


def remove_incomplete(root: Path) -> list[Path]:
    """Delete checkpoint dirs without a marker (a previous pod died while saving)."""
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if (_NAME.match(child.name) and not (child / MARKER).exists()) or ".tmp-" in child.name:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def read_state(path: Path) -> TrainState:
    return TrainState.from_json((path / STATE).read_text(encoding="utf-8"))


def load_checkpoint(
    path: Path, optimizer: Any, scheduler: Any, rank: int = 0
) -> tuple[TrainState, dict[str, Any]]:
    """State and trainable tensors; optimizer, scheduler and this rank's RNG are restored in
    place (an unsharded checkpoint)."""
    import torch
    from safetensors.torch import load_file

    state = read_state(path)
    tensors = load_file(path / PARAMS)
    optimizer.load_state_dict(torch.load(path / OPTIMIZER, weights_only=False))
    load_run_state(path, scheduler, rank)
    return state, tensors


def load_run_state(path: Path, scheduler: Any, rank: int) -> None:
    import torch

    scheduler.load_state_dict(torch.load(path / SCHEDULER, weights_only=False))
    set_rng_state(torch.load(path / rng_file(rank), weights_only=False))


def rng_state() -> dict[str, Any]:
    import random

    import numpy as np
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
