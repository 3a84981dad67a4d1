"""Resumable training state on the output volume.

A checkpoint is written to `checkpoint-<step>.tmp-<pid>`, fsynced, renamed to
`checkpoint-<step>` and only then marked with a `COMPLETE` file (written and fsynced last).
On start the newest directory WITH the marker and the same run fingerprint is used:
half-written directories (a pod killed mid-save) are skipped and cleaned up. Only the newest
`keep` complete checkpoints are kept.

Contents: the trainable parameters (safetensors), optimizer and scheduler state, the RNG
states and `state.json` (step, tokens, losses, eval loss before training).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"
STATE = "state.json"
PARAMS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
RNG = "rng.pt"
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
    train_seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        data = json.loads(text)
        data["losses"] = [(int(s), float(v)) for s, v in data.get("losses", [])]
        return cls(**data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for file in path.iterdir():
        if file.is_file():
            with file.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


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


def save_checkpoint(
    root: Path,
    state: TrainState,
    trainable: dict[str, Any],
    optimizer: Any,
    scheduler: Any,
    keep: int,
) -> Path:
    """Write a complete checkpoint atomically; prune older and half-written ones."""
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{state.step:08d}"
    if (final / MARKER).is_file():  # this step is saved already (SIGTERM after a periodic save)
        return final
    tmp = root / f"{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, tmp / PARAMS)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
    torch.save(scheduler.state_dict(), tmp / SCHEDULER)
    torch.save(rng_state(), tmp / RNG)
    (tmp / STATE).write_text(state.to_json(), encoding="utf-8")
    _fsync_tree(tmp)
    if final.exists():  # a half-written directory of the same step
        shutil.rmtree(final)
    tmp.rename(final)
    with (final / MARKER).open("w", encoding="utf-8") as f:
        f.write(f"{state.step}\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(root)
    prune(root, keep)
    return final


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


def load_checkpoint(
    path: Path, optimizer: Any, scheduler: Any
) -> tuple[TrainState, dict[str, Any]]:
    """State and trainable tensors; optimizer and scheduler are restored in place."""
    import torch
    from safetensors.torch import load_file

    state = TrainState.from_json((path / STATE).read_text(encoding="utf-8"))
    tensors = load_file(path / PARAMS)
    optimizer.load_state_dict(torch.load(path / OPTIMIZER, weights_only=False))
    scheduler.load_state_dict(torch.load(path / SCHEDULER, weights_only=False))
    set_rng_state(torch.load(path / RNG, weights_only=False))
    return state, tensors


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
