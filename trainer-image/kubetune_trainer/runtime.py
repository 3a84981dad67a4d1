"""Process-wide settings: quiet libraries, sane threads, device and precision choice.

Each training process of a pod gets one GPU (its local rank) or its share of the CPUs.

`prepare_environment()` must run before torch is imported (OpenMP reads its variables at load
time). The OpenMP wait policy is left to the environment: the library's default (spin a
little, then sleep) is the fastest when the trainer has its cores to itself, as in its Job
(tests/bench/trainer_bench.py); on a machine shared with other busy processes it slows
training 10-20x, so such machines set OMP_WAIT_POLICY=PASSIVE (the Makefile and the tests do
on the 2-core development machine, and the local node agent passes it on to its pods).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def cpu_budget() -> int:
    """CPUs this process may use: affinity, capped by a cgroup v2 quota when there is one."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def threads_per_process(processes: int = 1) -> int:
    """The CPUs of each of `processes` training processes sharing this pod's budget."""
    return max(1, cpu_budget() // max(processes, 1))


def prepare_environment(processes: int = 1) -> None:
    """Set the quiet/threading environment (without overriding what the user set).

    `processes`: training processes in this pod; they share its CPUs (torchrun inherits the
    launcher's environment, so the launcher sets the per-worker share)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(processes)))


def quiet_libraries() -> None:
    """Turn off library progress bars and chatty warnings.

    `datasets` is not imported for this (0.7 s; only trl's DPO path uses it): when it is not
    loaded yet, its own variables make it quiet when it is."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    datasets = sys.modules.get("datasets")
    if datasets is not None:
        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    else:  # read by datasets when it is imported
        os.environ["DATASETS_VERBOSITY"] = "error"
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    logging.getLogger("torch").setLevel(logging.ERROR)


@dataclass(frozen=True)
class DeviceInfo:
    device: Any  # torch.device
    bf16: bool
    name: str


def pick_device(local_rank: int = 0, local_processes: int = 1) -> DeviceInfo:
    """This process's device: GPU `local_rank` when there are GPUs (bf16 when it supports it;
    torchrun starts one process per GPU), else the CPU with this process's share of the
    cores."""
    import torch

    if torch.cuda.is_available():
        bf16 = bool(torch.cuda.is_bf16_supported())
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.set_device(local_rank)
        name = torch.cuda.get_device_name(local_rank)
        return DeviceInfo(torch.device("cuda", local_rank), bf16, name)
    torch.set_num_threads(threads_per_process(local_processes))
    return DeviceInfo(torch.device("cpu"), False, "cpu")


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators from one seed (a rerun is bit-identical)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
