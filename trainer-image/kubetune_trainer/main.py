"""`kubetune-trainer`: the trainer container's entry point.

Configuration: a `TrainerRunConfig` (camelCase JSON, the FineTuneJob spec plus what the
operator resolved) from `--config FILE` or the `KUBETUNE_RUN_CONFIG` environment variable.

Outputs: progress JSON lines on stdout (and POSTs to `progressUrl`), human logs on stderr,
a `TrainerResult` JSON document in the termination message file (`/dev/termination-log`, or
`KUBETUNE_TERMINATION_MESSAGE_PATH` / `--termination-log` for local runs), and the exit code:

    0   success: the model and its manifest are stored (or validation passed)
    1   unexpected error (retried up to spec.maxRetries)
    42  bad input: dataset, configuration or output name; retrying cannot help
    75  retryable: network or storage trouble; the next attempt resumes from a checkpoint
    143 preempted: SIGTERM received, checkpoint saved; the next attempt resumes from it

`kubetune-trainer publish ...` points an alias at a stored model (`publish.py`).

`--validate-only` checks the data (rows, tokens, steps, ETA) without loading model weights.

Processes: one, unless torchrun's `PET_*` variables ask for more (`launcher.py`); then this
process launches them (each runs `kubetune-trainer` again as a torchrun worker), waits, and
reports the root cause of a failure. Validation always runs in one process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from kubetune_crd.trainer_contract import (
    RUN_CONFIG_ENV,
    TERMINATION_ENV,
    TERMINATION_MESSAGE_PATH,
    ExitCode,
    TrainerResult,
    TrainerRunConfig,
)

from kubetune_trainer import distributed
from kubetune_trainer.errors import BadInputError, classify
from kubetune_trainer.launcher import RankFailedError, Topology
from kubetune_trainer.runtime import prepare_environment
from kubetune_trainer.termination import body_of, fit_result

log = logging.getLogger("kubetune_trainer")


def load_config(path: str | None) -> TrainerRunConfig:
    """The run config from a file or the environment; BadInputError when absent or invalid."""
    from pydantic import ValidationError

    if path:
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInputError(f"cannot read --config {path}: {exc}") from None
    else:
        raw = os.environ.get(RUN_CONFIG_ENV, "")
        if not raw.strip():
            raise BadInputError(f"no run config: set {RUN_CONFIG_ENV} or pass --config FILE")
    try:
        return TrainerRunConfig.model_validate_json(raw)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BadInputError(f"invalid run config: {errors}") from None


def write_termination_message(result: TrainerResult, path: str | None) -> None:
    """Write the result where Kubernetes reads it (best effort; never raises)."""
    target = path or os.environ.get(TERMINATION_ENV) or TERMINATION_MESSAGE_PATH
    if target == TERMINATION_MESSAGE_PATH and not Path(target).exists():
        return  # not in a container: nothing reads it
    body = body_of(fit_result(result))
    try:
        Path(target).write_text(body, encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", target, exc)


def _print_json(event: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"event": event, **payload}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetune-trainer", description="Fine-tune a causal LM for a FineTuneJob."
    )
    parser.add_argument("--config", help=f"TrainerRunConfig JSON file (default: ${RUN_CONFIG_ENV})")
    parser.add_argument(
        "--validate-only",
        action="store_true",
        help="check the data and print rows, tokens, steps and an ETA; train nothing",
    )
    parser.add_argument(
        "--termination-log",
        help=(
            f"where to write the TrainerResult "
            f"(default: ${TERMINATION_ENV} or {TERMINATION_MESSAGE_PATH})"
        ),
    )
    parser.add_argument(
        "--assumed-flops", type=float, default=None, help="training FLOP/s for the ETA estimate"
    )
    parser.add_argument(
        "--target-device",
        choices=("cpu", "cuda"),
        default=None,
        help="validate-only: the device the run will train on (default: this machine's)",
    )
    parser.add_argument(
        "--gpu-memory-gib",
        type=float,
        default=None,
        help="validate-only: memory of one GPU; a run that clearly cannot fit fails (exit 42)",
    )
    return parser


def _attempt(
    args: argparse.Namespace, topology: Topology, worker: bool
) -> tuple[TrainerResult, ExitCode, dict[str, Any], distributed.Dist]:
    """Run the job in this process (alone, or as one torchrun worker); never raises."""
    from kubetune_trainer.pipeline import run_job
    from kubetune_trainer.progress import ProgressReporter, SilentReporter
    from kubetune_trainer.runtime import quiet_libraries
    from kubetune_trainer.train import StopFlag

    stop = StopFlag()
    stop.install()
    reporter: ProgressReporter | None = None
    details: dict[str, Any] = {}
    dist = distributed.SINGLE
    try:
        cfg = load_config(args.config)
        quiet_libraries()
        dist = distributed.init() if worker else distributed.SINGLE
        reporter = (
            ProgressReporter(cfg.progress_url, cfg.progress_token_path)
            if dist.main
            else SilentReporter()
        )
        result, details = run_job(
            cfg,
            reporter,
            stop,
            validate_only=args.validate_only,
            assumed_flops=args.assumed_flops,
            dist=dist,
            world_size=topology.world_size,
            target_device=args.target_device,
            gpu_memory_gib=args.gpu_memory_gib,
        )
        code = ExitCode.SUCCESS
        distributed.shutdown(dist)
    except Exception as exc:
        result, code = classify(exc)
    finally:
        if reporter is not None:
            reporter.close()
    return result, code, details, dist


def _finish(result: TrainerResult, code: ExitCode, args: argparse.Namespace) -> int:
    """Print the result line, log a failure and write the termination message."""
    _print_json(
        "result", {"exitCode": int(code), **result.model_dump(by_alias=True, exclude_none=True)}
    )
    if code != ExitCode.SUCCESS:
        log.error("%s (exit %d)", result.message, int(code))
    write_termination_message(result, args.termination_log)
    return int(code)


def _single(args: argparse.Namespace, topology: Topology) -> int:
    result, code, details, _ = _attempt(args, topology, worker=False)
    if args.validate_only and details:
        _print_json("validation", details)
    return _finish(result, code, args)


def _gang_member(args: argparse.Namespace, topology: Topology) -> None:
    """A torchrun worker; raises RankFailedError (recorded in its error file) on failure."""
    result, code, _, dist = _attempt(args, topology, worker=True)
    if code != ExitCode.SUCCESS:
        raise RankFailedError(dist.rank, code, result)
    if dist.main:
        _finish(result, code, args)


def _worker(args: argparse.Namespace, topology: Topology) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    try:
        record(_gang_member)(args, topology)
    except RankFailedError as failed:
        log.error("rank %d: %s (exit %d)", failed.rank, failed.result.message, failed.code)
        return failed.code
    return int(ExitCode.SUCCESS)


def _launch(args: argparse.Namespace, topology: Topology) -> int:
    from kubetune_trainer.launcher import launch

    cfg = load_config(args.config)  # a bad config fails here, before any process starts
    forwarded = []
    for flag, value in (("--config", args.config), ("--termination-log", args.termination_log)):
        if value:
            forwarded += [flag, value]
    result, code = launch(topology, forwarded, f"{cfg.namespace}.{cfg.job_name}.{cfg.uid or ''}")
    return int(code) if result is None else _finish(result, code, args)


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["publish"]:  # the operator's pointer Job: the one pointer writer
        from kubetune_trainer import publish

        return publish.main(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    worker = distributed.is_worker(os.environ)
    try:
        topology = Topology.from_env(os.environ)
        prepare_environment(topology.nproc_per_node)
        if worker:
            return _worker(args, topology)
        if topology.world_size > 1 and not args.validate_only:
            return _launch(args, topology)
    except BadInputError as exc:
        result, code = classify(exc)
        return _finish(result, code, args)
    return _single(args, topology)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
