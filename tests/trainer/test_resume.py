"""Checkpoints: resume after kill -9 from the newest COMPLETE checkpoint with the same losses as
an uninterrupted run; SIGTERM saves a checkpoint and exits 143."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetune_crd.trainer_contract import ExitCode
from kubetune_trainer import checkpoints

from trainer.conftest import TrainerRun

Config = Callable[..., dict[str, Any]]

HP = {"maxSteps": 16, "batchSize": 2, "loggingSteps": 1, "seed": 7}


def losses(run: TrainerRun) -> dict[int, float]:
    return {p["step"]: p["loss"] for p in run.progress()}


def test_kill_9_resumes_from_last_complete_checkpoint_with_identical_losses(
    make_config: Config, start_trainer: Callable[..., TrainerRun], tmp_path: Path
) -> None:
    # LoRA (dropout consumes RNG: the RNG state must be restored too).
    method = {"type": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}
    reference = start_trainer(
        make_config(
            method=method, hyperparameters=HP, checkpoint={"everySteps": 4}, root=tmp_path / "ref"
        ),
        tag="ref",
    )
    assert reference.wait() == 0, reference.stderr()
    expected = losses(reference)
    assert sorted(expected) == list(range(1, 17))

    config = make_config(method=method, hyperparameters=HP, checkpoint={"everySteps": 4, "keep": 2})
    ckpt_dir = Path(config["checkpointDir"])
    first = start_trainer(config, tag="killed")
    first.wait_for_step(10)
    first.kill(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    done = checkpoints.complete_checkpoints(ckpt_dir)
    assert done, "no complete checkpoint before the kill"
    last_complete = done[-1][0]
    # A pod killed while saving leaves a newer directory without its marker: it must be skipped.
    half = ckpt_dir / f"checkpoint-{last_complete + 4:08d}"
    half.mkdir(exist_ok=True)
    (half / "state.json").write_text("{truncated")

    second = start_trainer(config, tag="resumed")
    assert second.wait() == 0, second.stderr()
    resumed = next(line for line in second.lines() if line.get("stage") == "resuming")
    assert resumed["step"] == last_complete
    got = losses(second)
    assert sorted(got) == list(range(last_complete + 1, 17))  # ends at the same step count
    assert {s: expected[s] for s in got} == got  # bit-for-bit the uninterrupted losses
    result = second.result()
    assert result["outcome"] == "succeeded"
    assert result["metrics"]["evalLossAfter"] == reference.result()["metrics"]["evalLossAfter"]
    # The eval loss before training survives the restart (it is in the checkpoint state).
    assert result["metrics"]["evalLossBefore"] == reference.result()["metrics"]["evalLossBefore"]


def test_sigterm_checkpoints_and_exits_143_then_resumes(
    make_config: Config, start_trainer: Callable[..., TrainerRun]
) -> None:
    config = make_config(hyperparameters={**HP, "maxSteps": 30}, checkpoint={"everySteps": 0})
    ckpt_dir = Path(config["checkpointDir"])
    run = start_trainer(config, tag="term")
    run.wait_for_step(3)
    run.kill(signal.SIGTERM)
    assert run.wait(60) == ExitCode.PREEMPTED
    result = run.result()
    assert result["outcome"] == "preempted"
    reported = max(p["step"] for p in run.progress())
    done = checkpoints.complete_checkpoints(ckpt_dir)
    assert [step for step, _ in done] == [reported]  # everySteps 0: only the SIGTERM checkpoint

    again = start_trainer(config, tag="again")
    assert again.wait() == 0, again.stderr()
    steps = [p["step"] for p in again.progress()]
    assert steps[0] == reported + 1 and steps[-1] == 30


def test_checkpoint_selection_skips_incomplete_and_other_runs(tmp_path: Path) -> None:
    import torch
    from kubetune_trainer.checkpoints import TrainState, latest_checkpoint, save_checkpoint

    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([param])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, TrainState("run-a", step=step), {"p": param}, opt, sched, keep=2)
    assert [s for s, _ in checkpoints.complete_checkpoints(tmp_path)] == [4, 6]
    (tmp_path / "checkpoint-00000008").mkdir()  # half-written: no marker
    (tmp_path / "checkpoint-00000010.tmp-123").mkdir()
    assert latest_checkpoint(tmp_path, "run-a") == tmp_path / "checkpoint-00000006"
    assert latest_checkpoint(tmp_path, "run-b") is None  # other data/hyperparameters
    checkpoints.remove_incomplete(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-00000004",
        "checkpoint-00000006",
    ]
