"""The CPU pre-flight's report: what the trainer's `--validate-only` measured before any GPU.

Before the GPU Job, the operator runs the trainer once on CPU (a Job of its own, no GPU
request) to validate the dataset (every bad row with its line), resolve the model reference
and estimate the run: rows, tokens, steps, ETA and the GPU memory one training process needs.
An hf:// base model is fetched into the shared model cache there (so the GPU pod finds it
cached): the report says which commit and whether the cache had it. The trainer returns this
report in its `TrainerResult` (termination message); the operator copies it into
`status.preflight`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubetune_crd.base import StatusModel

PreflightOutcome = Literal["Validating", "Passed", "Failed"]


class PreflightReport(StatusModel):
    """The pre-flight's outcome and figures (the trainer fills the figures)."""

    outcome: PreflightOutcome | None = Field(
        default=None, description="Validating while the pre-flight Job runs, then Passed/Failed."
    )
    job_name: str | None = Field(default=None, description="The pre-flight batch/v1 Job.")
    message: str | None = Field(default=None, description="The trainer's one-line verdict.")
    rows: int | None = Field(default=None, ge=0, description="Rows in the dataset.")
    train_rows: int | None = Field(default=None, ge=0, description="Rows trained on.")
    eval_rows: int | None = Field(default=None, ge=0, description="Held-out rows.")
    train_tokens: int | None = Field(default=None, ge=0, description="Train tokens per epoch.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    world_size: int | None = Field(default=None, ge=1, description="Processes planned for.")
    eta_seconds: float | None = Field(
        default=None, ge=0.0, description="Rough training time on the target device."
    )
    device: str | None = Field(default=None, description="Device the ETA is for (cuda, cpu).")
    parameters: int | None = Field(
        default=None, ge=0, description="Base model parameters (from its config, no weights)."
    )
    estimated_gpu_memory_gib: float | None = Field(
        default=None,
        ge=0.0,
        description="Estimated GPU memory per training process (weights, grads, optimizer, "
        "activations), GiB.",
    )
    gpu_memory_gib: float | None = Field(
        default=None, ge=0.0, description="Memory of one GPU it was checked against, GiB."
    )
    base_model_revision: str | None = Field(
        default=None, description="hf:// base model: the commit the pre-flight resolved."
    )
    base_model_cache: Literal["hit", "miss"] | None = Field(
        default=None,
        description=(
            "hf:// base model: hit (already in the shared model cache) or miss (the pre-flight "
            "downloaded it there)."
        ),
    )
    duration_seconds: float | None = Field(
        default=None, ge=0.0, description="How long the pre-flight Job ran."
    )
