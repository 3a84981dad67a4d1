"""Errors that decide the trainer's exit code (kubetune_crd.trainer_contract.ExitCode)."""

from __future__ import annotations


class TrainerError(Exception):
    """Base class: the message is shown to users (keep it actionable and secret-free)."""


class BadInputError(TrainerError):
    """Bad dataset or configuration: retrying cannot help (exit 42)."""


class RetryableError(TrainerError):
    """A transient failure (network, storage): the Job retries and resumes (exit 75)."""


class PreemptedError(TrainerError):
    """SIGTERM received; a checkpoint was saved when training had started (exit 143)."""
