"""The launcher's pure parts: reading torchrun's PET_* variables and picking the root cause
among the ranks' error-file payloads (the end-to-end runs are in test_distributed.py)."""

from __future__ import annotations

import json

import pytest
from kubetune_crd.trainer_contract import ExitCode, TrainerResult
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.launcher import (
    PAYLOAD_PREFIX,
    RankFailedError,
    RankFailure,
    Topology,
    rank_failure,
    root_cause,
)


def test_topology_from_the_indexed_job_environment() -> None:
    env = {
        "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": "8",
        "JOB_COMPLETION_INDEX": "2",
        "PET_MASTER_ADDR": "job-0.job",
        "PET_MASTER_PORT": "29400",
    }
    topology = Topology.from_env(env)
    assert topology == Topology(3, 8, 2, "job-0.job", 29400)
    assert topology.world_size == 24
    assert Topology.from_env({**env, "PET_NODE_RANK": "1"}).node_rank == 1  # PET_ first
    assert Topology.from_env({}).world_size == 1


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PET_NPROC_PER_NODE": "two"}, "PET_NPROC_PER_NODE='two'"),
        ({"PET_NNODES": "0"}, ">= 1"),
        ({"PET_NNODES": "2", "PET_NODE_RANK": "2"}, "node ranks are 0..1"),
    ],
)
def test_bad_topology_is_bad_input(env: dict[str, str], words: str) -> None:
    with pytest.raises(BadInputError, match=words.replace("(", r"\(").replace(".", r"\.")):
        Topology.from_env(env)


def _recorded(rank: int, code: ExitCode, outcome: str, message: str, at: float) -> RankFailure:
    """A failure as the launcher reads it back from `record`'s error file."""
    error = RankFailedError(rank, code, TrainerResult(outcome=outcome, message=message))  # type: ignore[arg-type]
    payload = json.loads(str(error))
    payload["time"] = at
    text = {"message": PAYLOAD_PREFIX + json.dumps(payload), "extraInfo": {}}
    return rank_failure(rank, int(code), 0, text)


def test_the_first_rank_to_fail_is_the_root_cause_and_names_itself() -> None:
    oom = _recorded(1, ExitCode.UNKNOWN_ERROR, "error", "out of memory: lower it", 10.0)
    lost_peer = _recorded(0, ExitCode.UNKNOWN_ERROR, "error", "Connection closed by peer", 10.4)
    assert root_cause([lost_peer, oom]) == (
        TrainerResult(outcome="error", message="rank 1: out of memory: lower it"),
        ExitCode.UNKNOWN_ERROR,
    )
    bad = _recorded(3, ExitCode.BAD_INPUT, "bad_input", "no dataset", 10.0)
    same_time = _recorded(2, ExitCode.UNKNOWN_ERROR, "error", "peer gone", 10.0)
    result, code = root_cause([same_time, bad])  # a classified failure wins a tie
    assert (result.outcome, code, result.message) == ("bad_input", 42, "rank 3: no dataset")


def test_a_rank_killed_without_an_error_file_is_an_unknown_error() -> None:
    killed = rank_failure(1, -9, 5, "<NONE>")
    assert (killed.rank, killed.code) == (1, ExitCode.UNKNOWN_ERROR)
    assert root_cause([killed])[0].message == "rank 1: the training process was killed by signal 9"
