"""Starting the training processes of a pod with torchrun's own launcher, and how they ended.

The operator (or Kubeflow Trainer) describes the run with torchrun's `PET_*` variables:
`PET_NNODES` pods of `PET_NPROC_PER_NODE` processes, this pod being `PET_NODE_RANK`, rank 0's
pod reachable at `PET_MASTER_ADDR:PET_MASTER_PORT`. When that is more than one process,
`kubetune-trainer` starts them with `torch.distributed.launcher` (the engine of `torchrun`):
one pod: a standalone rendezvous on a free local port; several: the static rendezvous at the
master address. `max_restarts` is 0: when a process fails the launcher stops the others and
the Job restarts the whole gang, which resumes from the last complete checkpoint.

Every worker runs `kubetune-trainer` again (it sees torchrun's `LOCAL_RANK`) under
torch.distributed.elastic's `record` (`main.py`): a failing rank raises `RankFailedError`, whose
text is its `TrainerResult` and exit code, into its `TORCHELASTIC_ERROR_FILE`. The launcher
reads those files and reports the root cause: the first rank to fail (the others usually fail
after it, losing their peer). Its termination message names the rank, and it exits with that
rank's code (42 bad input, 75 retryable, 143 preempted, 1 otherwise; an out-of-memory message
keeps the operator's OutOfMemory markers). On success rank 0 has written the result itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_crd import names
from kubetune_crd.trainer_contract import ExitCode, TrainerResult

from kubetune_trainer.errors import MESSAGE_MAX, BadInputError

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 120
"""How long the launcher waits for workers to checkpoint after SIGTERM before killing them
(torch's TORCH_ELASTIC_SHUTDOWN_TIMEOUT, when set, decides instead)."""
RENDEZVOUS_TIMEOUT_S = 900


@dataclass(frozen=True)
class Topology:
    """The run's processes, from torchrun's `PET_*` variables (one process when unset)."""

    nnodes: int = 1
    nproc_per_node: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = names.DEFAULT_MASTER_PORT

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Topology:
        def number(key: str, default: int, low: int = 1) -> int:
            raw = (env.get(key) or "").strip()
            if not raw:
                return default
            if key == names.ENV_NPROC_PER_NODE and raw in ("auto", "gpu"):
                return _gpu_count()
            if not raw.isdigit() or int(raw) < low:
                raise BadInputError(f"{key}={raw!r} is not a whole number >= {low}")
            return int(raw)

        rank_default = number(names.JOB_COMPLETION_INDEX_ENV, 0, low=0)
        topology = cls(
            nnodes=number(names.ENV_NNODES, 1),
            nproc_per_node=number(names.ENV_NPROC_PER_NODE, 1),
            node_rank=number(names.ENV_NODE_RANK, rank_default, low=0),
            master_addr=(env.get(names.ENV_MASTER_ADDR) or "").strip() or cls.master_addr,
            master_port=number(names.ENV_MASTER_PORT, names.DEFAULT_MASTER_PORT),
        )
        if topology.node_rank >= topology.nnodes:
            raise BadInputError(
                f"{names.ENV_NODE_RANK}={topology.node_rank} but {names.ENV_NNODES}="
                f"{topology.nnodes}: node ranks are 0..{topology.nnodes - 1}"
            )
        return topology


def _gpu_count() -> int:
    import torch

    return max(torch.cuda.device_count(), 1)


class RankFailedError(Exception):
    """Raised by a failing worker under `record`: its text is what the launcher reads back."""

    def __init__(self, rank: int, code: int, result: TrainerResult) -> None:
        self.rank, self.code, self.result = rank, code, result
        payload = {
            "rank": rank,
            "exitCode": int(code),
            "time": time.time(),
            "result": result.model_dump(by_alias=True, exclude_none=True),
        }
        super().__init__(json.dumps(payload))


PAYLOAD_PREFIX = f"{RankFailedError.__name__}: "
"""How `record` starts the message of an exception it writes to the error file."""


@dataclass(frozen=True)
class RankFailure:
    rank: int
    code: int
    time: float
    result: TrainerResult


def _payload(message: Any) -> dict[str, Any] | None:
    """Our payload from an error file's message (None when the rank died another way)."""
    if isinstance(message, dict):
        message = message.get("message", "")
    if not isinstance(message, str) or not message.startswith(PAYLOAD_PREFIX):
        return None
    try:
        value = json.loads(message[len(PAYLOAD_PREFIX) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def rank_failure(rank: int, exitcode: int, timestamp: float, message: Any) -> RankFailure:
    """How one rank ended, from what torch reports (its error file's message, if any)."""
    payload = _payload(message)
    if payload is not None:
        result = TrainerResult.model_validate(payload["result"])
        return RankFailure(int(payload["rank"]), int(payload["exitCode"]), payload["time"], result)
    if exitcode < 0:
        text = f"the training process was killed by signal {-exitcode}"
    else:
        text = f"the training process exited with code {exitcode}"
        if isinstance(message, dict):
            text = str(message.get("message") or text)
    return RankFailure(rank, int(ExitCode.UNKNOWN_ERROR), float(timestamp), _error(text))


def _error(text: str) -> TrainerResult:
    return TrainerResult(outcome="error", message=text[:MESSAGE_MAX])


def root_cause(failures: list[RankFailure]) -> tuple[TrainerResult, ExitCode]:
    """The first rank to fail (a classified failure before an unknown one at the same time):
    its result, the rank named in the message, and its exit code."""
    first = min(failures, key=lambda f: (f.time, f.result.outcome == "error", f.rank))
    message = f"rank {first.rank}: {first.result.message}"[:MESSAGE_MAX]
    return first.result.model_copy(update={"message": message}), ExitCode(first.code)


def _logged_failures(log_dir: Path) -> list[RankFailure]:
    """The failures the workers recorded in their error files (after the launcher itself was
    signalled, when torch reports no per-rank failures)."""
    found = []
    for path in log_dir.rglob("error.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        payload = _payload(data.get("message"))
        if payload is not None:
            found.append(rank_failure(-1, 1, 0.0, data.get("message")))
    return found


def _preempted(log_dir: Path, signum: int) -> tuple[TrainerResult, ExitCode]:
    failures = [f for f in _logged_failures(log_dir) if f.result.outcome == "preempted"]
    if failures:
        result, _ = root_cause(sorted(failures, key=lambda f: f.rank)[:1])
        return result, ExitCode.PREEMPTED
    text = f"stopped by signal {signum} before the training processes saved anything"
    return TrainerResult(outcome="preempted", message=text), ExitCode.PREEMPTED


def launch_config(topology: Topology, log_dir: Path, run_id: str) -> Any:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    if topology.nnodes == 1:  # like `torchrun --standalone`: a free local port
        backend, endpoint, configs = "c10d", "localhost:0", {}
    else:
        backend = "static"
        endpoint = f"{topology.master_addr}:{topology.master_port}"
        configs = {"rank": topology.node_rank}
    return LaunchConfig(
        min_nodes=topology.nnodes,
        max_nodes=topology.nnodes,
        nproc_per_node=topology.nproc_per_node,
        run_id=run_id,
        role="trainer",
        rdzv_backend=backend,
        rdzv_endpoint=endpoint,
        rdzv_configs={**configs, "timeout": RENDEZVOUS_TIMEOUT_S},
        max_restarts=0,
        monitor_interval=0.1,
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir)),
        shutdown_timeout=None if _env_grace() else SHUTDOWN_GRACE_S,
    )


def _env_grace() -> bool:
    return bool(os.environ.get(names.ENV_SHUTDOWN_TIMEOUT))


def launch(
    topology: Topology, worker_args: list[str], run_id: str
) -> tuple[TrainerResult | None, ExitCode]:
    """Run `kubetune-trainer worker_args` on every process of this pod; on failure the root
    cause's result and code (None and SUCCESS when every process succeeded). `run_id`: the
    same on every pod of the run (the rendezvous keys its store with it)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    log_dir = Path(tempfile.mkdtemp(prefix="kubetune-torchrun-"))
    config = launch_config(topology, log_dir, run_id)
    log.info(
        "starting %d training processes (node %d of %d)",
        topology.nproc_per_node,
        topology.node_rank,
        topology.nnodes,
    )
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "kubetune_trainer", *worker_args)
        return None, ExitCode.SUCCESS
    except ChildFailedError as exc:
        failures = [
            rank_failure(rank, f.exitcode, f.timestamp, f.message)
            for rank, f in exc.failures.items()
        ]
        return root_cause(failures)
    except SignalException as exc:
        return _preempted(log_dir, int(exc.sigval))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
