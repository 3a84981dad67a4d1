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

`--validate-only` checks the data (rows, tokens, steps, ETA) without loading model weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from kubetune_crd.trainer_contract import (
    RUN_CONFIG_ENV,
    TERMINATION_MESSAGE_PATH,
    ExitCode,
    TrainerResult,
    TrainerRunConfig,
)

from kubetune_trainer.errors import BadInputError, PreemptedError, RetryableError
from kubetune_trainer.runtime import prepare_environment

TERMINATION_ENV = "KUBETUNE_TERMINATION_MESSAGE_PATH"
MAX_TERMINATION_BYTES = 4096
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
    body = result.model_dump_json(by_alias=True, exclude_none=True)
    while len(body.encode()) > MAX_TERMINATION_BYTES and len(result.message) > 16:
        result = result.model_copy(update={"message": result.message[: len(result.message) // 2]})
        body = result.model_dump_json(by_alias=True, exclude_none=True)
    try:
        Path(target).write_text(body, encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", target, exc)


def _print_json(event: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"event": event, **payload}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    prepare_environment()

    from kubetune_trainer.pipeline import run_job
    from kubetune_trainer.progress import ProgressReporter
    from kubetune_trainer.runtime import quiet_libraries
    from kubetune_trainer.train import StopFlag

    stop = StopFlag()
    stop.install()
    reporter: ProgressReporter | None = None
    details: dict[str, Any] = {}
    try:
        cfg = load_config(args.config)
        quiet_libraries()
        reporter = ProgressReporter(cfg.progress_url, cfg.progress_token_path)
        result, details = run_job(
            cfg, reporter, stop, validate_only=args.validate_only, assumed_flops=args.assumed_flops
        )
        code = ExitCode.SUCCESS
    except BadInputError as exc:
        result, code = (
            TrainerResult(outcome="bad_input", message=str(exc)[:2048]),
            ExitCode.BAD_INPUT,
        )
    except RetryableError as exc:
        result, code = (
            TrainerResult(outcome="retryable", message=str(exc)[:2048]),
            ExitCode.RETRYABLE,
        )
    except PreemptedError as exc:
        result, code = (
            TrainerResult(outcome="preempted", message=str(exc)[:2048]),
            ExitCode.PREEMPTED,
        )
    except MemoryError:
        result = TrainerResult(outcome="error", message="out of memory")
        code = ExitCode.UNKNOWN_ERROR
    except Exception as exc:
        traceback.print_exc()
        text = f"{type(exc).__name__}: {exc}"
        if "out of memory" in text.lower():
            text = (
                "out of memory: lower hyperparameters.batchSize or maxSeqLength, or enable "
                f"gradientCheckpointing ({text[:300]})"
            )
        result, code = TrainerResult(outcome="error", message=text[:2048]), ExitCode.UNKNOWN_ERROR
    finally:
        if reporter is not None:
            reporter.close()
    if args.validate_only and details:
        _print_json("validation", details)
    _print_json(
        "result", {"exitCode": int(code), **result.model_dump(by_alias=True, exclude_none=True)}
    )
    if code != ExitCode.SUCCESS:
        log.error("%s (exit %d)", result.message, int(code))
    write_termination_message(result, args.termination_log)
    return int(code)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
