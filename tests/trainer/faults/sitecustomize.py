"""Test-only fault injection into trainer processes: never part of the product.

The distributed tests put this directory on PYTHONPATH, so Python imports this module in every
process it starts (the torchrun launcher and each of its workers, which inherit the
environment). It does nothing unless `KUBETUNE_TEST_FAULT` is set, and then only in the worker
whose torchrun `RANK` it names:

    KUBETUNE_TEST_FAULT=oom:<rank>:<step>   that rank runs out of memory in training step <step>
    KUBETUNE_TEST_FAULT=bad_input:<rank>    that rank finds no dataset (as if its node lacked it)

It patches the trainer's own functions, so everything around the fault (classification, the
error file, the launcher's root cause, the other ranks' teardown) is the real code.
"""

from __future__ import annotations

import os
from typing import Any


def _install(kind: str, rank: int, step: int) -> None:
    if os.environ.get("RANK") != str(rank):
        return
    if kind == "oom":
        from kubetune_trainer import train

        real = train.loss_sum
        calls = {"training": 0}

        def loss_sum(model: Any, batch: Any, device: Any, forward: Any = None) -> Any:
            if model.training:
                calls["training"] += 1
                if calls["training"] >= step:
                    import torch

                    raise torch.OutOfMemoryError(
                        "CUDA out of memory. Tried to allocate 20.00 GiB (test fault injection)"
                    )
            return real(model, batch, device, forward)

        train.loss_sum = loss_sum
    elif kind == "bad_input":
        from kubetune_trainer import plan
        from kubetune_trainer.errors import BadInputError

        def fetch_dataset(url: str, data_root: Any, work_dir: Any) -> Any:
            raise BadInputError(f"dataset {url!r} not found under {data_root} on this node")

        plan.fetch_dataset = fetch_dataset


_spec = os.environ.get("KUBETUNE_TEST_FAULT", "")
if _spec:
    _parts = _spec.split(":")
    _install(_parts[0], int(_parts[1]), int(_parts[2]) if len(_parts) > 2 else 0)
