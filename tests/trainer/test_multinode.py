"""Two pods on loopback: two `kubetune-trainer` launchers with exactly the environment an
Indexed Job gives its pods (PET_NNODES=2, PET_NPROC_PER_NODE=2, PET_NODE_RANK 0 and 1, the
master address and port), sharing the checkpoint and model volumes as a ReadWriteMany claim
would. The loss tolerance is test_distributed.py's (same rows per step, another summation
order)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubetune_crd.trainer_contract import ExitCode
from kubetune_trainer import checkpoints

from trainer.conftest import TrainerRun, free_port, gang_env
from trainer.test_distributed import (
    LORA,
    PARITY_HP,
    assert_same_losses,
    losses,
    one_process_reference,
)

Config = Callable[..., dict[str, Any]]
Start = Callable[..., TrainerRun]


def start_nodes(start: Start, config: dict[str, Any], tag: str) -> list[TrainerRun]:
    port = free_port()
    return [
        start(config, env=gang_env(2, nnodes=2, node_rank=rank, port=port), tag=f"{tag}-node{rank}")
        for rank in (0, 1)
    ]


@pytest.mark.slow
def test_two_nodes_train_one_model_together(
    make_config: Config, start_trainer: Start, tmp_path: Path
) -> None:
    one = one_process_reference(start_trainer, make_config, LORA, 4, tmp_path / "one")
    config = make_config(method=LORA, hyperparameters={**PARITY_HP, "batchSize": 1})
    node0, node1 = start_nodes(start_trainer, config, "pair")
    assert node0.wait() == 0, node0.stderr()
    assert node1.wait() == 0, node1.stderr()
    assert "on 4 processes (ddp)" in node0.result()["message"]
    # Rank 0 (on node 0) reports and writes the result; node 1's ranks report nothing.
    assert not node1.lines() and not node1.termination.exists()
    # 4 ranks x batch 1 train on the rows of 1 process x batch 4: the same losses, one model.
    assert_same_losses(losses(node0), losses(one))
    got, want = node0.result()["metrics"], one.result()["metrics"]
    assert got["evalLossAfter"] == pytest.approx(want["evalLossAfter"], rel=1e-5)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny-ft"]


@pytest.mark.slow
def test_a_lost_node_fails_both_pods_and_the_restarted_gang_resumes(
    make_config: Config, start_trainer: Start
) -> None:
    config = make_config(
        method=LORA,
        hyperparameters={"maxSteps": 16, "batchSize": 1, "loggingSteps": 1},
        checkpoint={"everySteps": 3, "keep": 2},
    )
    ckpt_dir = Path(config["checkpointDir"])
    node0, node1 = start_nodes(start_trainer, config, "lost")
    node0.wait_for_step(5, timeout=240)
    node1.kill_tree(signal.SIGKILL)  # the pod is gone: its launcher and workers at once
    started = time.monotonic()
    assert node1.wait(30) == -signal.SIGKILL
    code = node0.wait(120)  # no hang: node 0's ranks lose their peers and stop
    assert code not in (ExitCode.SUCCESS, ExitCode.PREEMPTED)
    assert time.monotonic() - started < 120
    assert node0.result()["message"].startswith("rank ")
    done = [step for step, _ in checkpoints.complete_checkpoints(ckpt_dir)]
    assert done and done[-1] >= 3 and done[-1] % 3 == 0

    again0, again1 = start_nodes(start_trainer, config, "restart")
    assert again0.wait() == 0, again0.stderr()
    assert again1.wait() == 0, again1.stderr()
    resumed = next(line for line in again0.lines() if line.get("stage") == "resuming")
    assert resumed["step"] == done[-1]
    assert sorted(losses(again0)) == list(range(done[-1] + 1, 17))
    assert again0.result()["outcome"] == "succeeded"
