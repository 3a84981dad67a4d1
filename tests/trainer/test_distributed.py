"""Training on several processes of one pod: `kubetune-trainer` with torchrun's PET_* variables
launches the gang through torch.distributed's own launcher (gloo on CPU, the tiny model).

Loss parity tolerance (rel 1e-5, see `assert_same_losses`): with W ranks x batch b each
optimizer step holds exactly the rows of one process x batch W*b (schedule.py) and its loss is
normalised by the same label-token count, so the two runs compute the same sums in another
order (the all-reduce adds per-rank partial gradients). fp32 rounding of that reordering is
~1e-7 relative per step and AdamW carries it through the few steps here: measured <= 1.1e-7
(DDP and FSDP). Training on the wrong rows, without averaging the gradients or clipping the
wrong set of parameters moves the losses by 1e-4 to 1e-2 relative (an FSDP run whose gradient
clipping missed the root module's parameters drifted by 5e-4 after 6 steps).
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubetune_crd.names import OUT_OF_MEMORY_MARKERS
from kubetune_crd.trainer_contract import ExitCode
from kubetune_trainer import checkpoints

from trainer.conftest import ProgressSink, TrainerRun, fault_env, gang_env

Config = Callable[..., dict[str, Any]]
Start = Callable[..., TrainerRun]

LORA = {"type": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
FULL = {"type": "full"}
PARITY_REL = 1e-5
PARITY_HP = {"maxSteps": 6, "loggingSteps": 1, "seed": 7}


def losses(run: TrainerRun) -> dict[int, float]:
    return {p["step"]: p["loss"] for p in run.progress()}


def assert_same_losses(got: dict[int, float], want: dict[int, float]) -> None:
    assert sorted(got) == sorted(want)
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, rel=PARITY_REL), step


def one_process_reference(
    start: Start, make_config: Config, method: dict[str, Any], batch: int, root: Path
) -> TrainerRun:
    """One process with the whole batch: what W ranks x batch/W each must reproduce."""
    config = make_config(
        method=method, hyperparameters={**PARITY_HP, "batchSize": batch}, root=root
    )
    run = start(config, tag="one")
    assert run.wait() == 0, run.stderr()
    return run


@pytest.mark.slow
def test_two_processes_train_one_model_and_rank_0_alone_reports(
    make_config: Config, start_trainer: Start, progress_server: str, tmp_path: Path
) -> None:
    method = {"type": "lora", "lora": {"r": 4, "alpha": 8}}
    config = make_config(
        method=method,
        hyperparameters={"batchSize": 2, "epochs": 1},
        progressUrl=f"{progress_server}/progress/default/job-a",
    )
    plan = start_trainer(config, "--validate-only", env=gang_env(2), tag="plan")
    assert plan.wait() == 0, plan.stderr()
    report = next(line for line in plan.lines() if line["event"] == "validation")
    assert report["worldSize"] == 2 and report["effectiveBatchSize"] == 2 * 1 * 2
    shard = math.ceil(report["packedSequences"] / 2)
    assert report["stepsPerEpoch"] == math.ceil(shard / 2) == report["totalSteps"]

    run = start_trainer(config, env=gang_env(2))
    assert run.wait() == ExitCode.SUCCESS, run.stderr()
    # Each step is printed once: one reporter (two would print every step twice).
    steps = [p["step"] for p in run.progress()]
    assert steps == list(range(1, report["totalSteps"] + 1))
    assert all(p["tokensPerSecond"] > 0 for p in run.progress())
    assert len(run.result_lines()) == 1
    bodies = [b for _, _, b in ProgressSink.received]
    posted = [b["step"] for b in bodies if b.get("stage") == "training"]
    assert posted and posted == sorted(posted)  # one sender: the status never goes back
    # One sender: each step's metric point is delivered once (two would deliver it twice).
    points = [p["step"] for b in bodies for p in b["points"] if p.get("kind", "train") == "train"]
    assert points == list(range(1, report["totalSteps"] + 1))

    result = run.result()
    assert result["outcome"] == "succeeded" and "on 2 processes (ddp)" in result["message"]
    # Every training example once over the two shards: token counts are sums over the ranks.
    assert result["metrics"]["trainTokens"] == report["trainTokens"]
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir()] == ["tiny-ft"]  # one model, no leftovers
    manifest = json.loads((models / "tiny-ft" / "kubetune-model.json").read_text())
    assert manifest["trainer"]["worldSize"] == 2
    assert manifest["trainer"]["effectiveBatchSize"] == 4
    assert not Path(config["checkpointDir"]).exists()

    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(models / "tiny-ft")
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "method"), [("ddp", LORA), ("fsdp", FULL)])
def test_two_ranks_match_one_process_with_twice_the_batch(
    make_config: Config, start_trainer: Start, tmp_path: Path, strategy: str, method: dict[str, Any]
) -> None:
    one = one_process_reference(start_trainer, make_config, method, 4, tmp_path / "one")
    config = make_config(
        method=method,
        hyperparameters={**PARITY_HP, "batchSize": 2},
        distributed={"strategy": strategy},
        root=tmp_path / "two",
    )
    two = start_trainer(config, env=gang_env(2), tag="two")
    assert two.wait() == 0, two.stderr()
    assert f"on 2 processes ({strategy})" in two.result()["message"]

    assert_same_losses(losses(two), losses(one))
    want, got = one.result()["metrics"], two.result()["metrics"]
    for key in ("trainLoss", "evalLossBefore", "evalLossAfter"):
        assert got[key] == pytest.approx(want[key], rel=PARITY_REL), key

    # The same artifact as one process writes, holding the same weights (FSDP: gathered).
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    loader = AutoModelForCausalLM if method is FULL else AutoPeftModelForCausalLM
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        a = loader.from_pretrained(tmp_path / "one" / "models" / "tiny-ft")(input_ids=ids).logits
        b = loader.from_pretrained(tmp_path / "two" / "models" / "tiny-ft")(input_ids=ids).logits
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_sigterm_checkpoints_every_rank_exits_143_and_resumes_exactly(
    make_config: Config, start_trainer: Start, tmp_path: Path
) -> None:
    hp = {"maxSteps": 8, "batchSize": 2, "loggingSteps": 1, "seed": 7}
    reference = start_trainer(
        make_config(hyperparameters=hp, root=tmp_path / "ref"), env=gang_env(2)
    )
    assert reference.wait() == 0, reference.stderr()

    config = make_config(hyperparameters=hp)  # full fine-tuning: auto is FSDP
    ckpt_dir = Path(config["checkpointDir"])
    run = start_trainer(config, env=gang_env(2), tag="term")
    run.wait_for_step(3)
    run.kill(signal.SIGTERM)  # to the launcher only, as the kubelet does; torchrun forwards it
    assert run.wait(120) == ExitCode.PREEMPTED
    result = run.result()
    stopped = max(losses(run))
    assert result["outcome"] == "preempted"
    assert (
        result["message"]
        == f"rank 0: stopped by signal 15 during training (checkpoint at step {stopped})"
    )
    assert [step for step, _ in checkpoints.complete_checkpoints(ckpt_dir)] == [stopped]
    saved = checkpoints.final_dir(ckpt_dir, stopped)
    state = checkpoints.read_state(saved)
    assert (state.step, state.world_size, state.sharded) == (stopped, 2, True)
    # Each rank wrote its own shard and RNG state before rank 0 marked the checkpoint complete.
    assert {p.name for p in (saved / "dcp").glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    assert (saved / "rng.pt").is_file() and (saved / "rng-1.pt").is_file()

    alone = start_trainer(config, tag="alone")  # one process cannot take over two ranks' state
    assert alone.wait() == ExitCode.BAD_INPUT
    assert "written by a run of 2 process(es), sharded" in alone.result()["message"]

    again = start_trainer(config, env=gang_env(2), tag="again")
    assert again.wait() == 0, again.stderr()
    resumed = next(line for line in again.lines() if line.get("stage") == "resuming")
    assert resumed["step"] == stopped
    got = losses(again)
    assert sorted(got) == list(range(stopped + 1, 9))
    assert got == {s: losses(reference)[s] for s in got}  # bit-identical to the uninterrupted run
    metrics = again.result()["metrics"]
    assert metrics["evalLossAfter"] == reference.result()["metrics"]["evalLossAfter"]
    assert metrics["evalLossBefore"] == reference.result()["metrics"]["evalLossBefore"]


@pytest.mark.slow
def test_out_of_memory_on_rank_1_only_fails_the_run_as_out_of_memory_naming_rank_1(
    make_config: Config, start_trainer: Start, tmp_path: Path
) -> None:
    config = make_config(hyperparameters={"maxSteps": 20, "batchSize": 2})
    run = start_trainer(config, env={**gang_env(2), **fault_env("oom:1:2")})
    assert run.wait(180) == ExitCode.UNKNOWN_ERROR  # rank 0, waiting on rank 1, was stopped
    result = run.result()
    assert result["outcome"] == "error"
    assert result["message"].startswith("rank 1: ")
    assert OUT_OF_MEMORY_MARKERS[0] in result["message"]  # the operator's OutOfMemory marker
    assert run.result_lines() == [{"event": "result", "exitCode": 1, **result}]
    assert not (tmp_path / "models" / "tiny-ft").exists()


@pytest.mark.slow
def test_bad_input_on_rank_1_only_exits_42_naming_rank_1(
    make_config: Config, start_trainer: Start
) -> None:
    run = start_trainer(make_config(), env={**gang_env(2), **fault_env("bad_input:1")})
    assert run.wait(180) == ExitCode.BAD_INPUT
    result = run.result()
    assert result["outcome"] == "bad_input"
    assert result["message"].startswith("rank 1: dataset 'data/frigo_training.csv' not found")
