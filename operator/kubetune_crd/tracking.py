"""Experiment tracking: where a run's params and curves go besides the job's own status.

`spec.tracking` asks for MLflow (a tracking server the trainer logs to: params, every logging
step's metrics, eval metrics, the model's location) and/or TensorBoard event files written
next to the model. Tracking is a side channel: its failures never fail the training job; the
trainer reports them in `TrackingReport`, which the operator copies into the status and turns
into the `TrackingHealthy` condition.
"""

from __future__ import annotations

from pydantic import Field

from kubetune_crd.base import CamelModel, SecretRef, StatusModel

TRACKING_URI = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"
"""An MLflow tracking server over HTTP(S): host and optional path; no user info (credentials
come from a Secret), query or fragment."""
EXPERIMENT_NAME = r"^[^\x00-\x1f]{1,256}$"

MLFLOW_SECRET_KEYS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
"""The keys of `credentialsSecretRef` passed to the trainer (each optional), MLflow's own names."""

DEFAULT_EXPERIMENT = "kubetune"


class MlflowTracking(CamelModel):
    """Log the run to an MLflow tracking server."""

    tracking_uri: str = Field(
        pattern=TRACKING_URI, max_length=512, description="http(s)://host[:port][/path] of MLflow."
    )
    experiment: str = Field(
        default=DEFAULT_EXPERIMENT,
        pattern=EXPERIMENT_NAME,
        description="Experiment name (created when missing).",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
            "MLFLOW_TRACKING_TOKEN (never copied into a status, event or log)."
        ),
    )


class TrackingSpec(CamelModel):
    """Experiment tracking of one job (both off unless asked for)."""

    mlflow: MlflowTracking | None = Field(default=None, description="Log to MLflow.")
    tensorboard: bool = Field(
        default=False,
        description="Write TensorBoard event files into the model's `tensorboard/` folder.",
    )


class TrackingReport(StatusModel):
    """What tracking did: the MLflow run, and the first problem when it failed."""

    mlflow_run_id: str | None = Field(default=None, max_length=64, description="MLflow run id.")
    mlflow_experiment_id: str | None = Field(
        default=None, max_length=64, description="MLflow experiment id."
    )
    tensorboard: str | None = Field(
        default=None, max_length=1024, description="Where the event files are (model-relative)."
    )
    error: str | None = Field(
        default=None, max_length=512, description="Why tracking stopped (training went on)."
    )
