"""Experiment tracking (spec.tracking): MLflow and TensorBoard, beside the job's own status.

Rank 0 alone tracks. Tracking is a side channel, so nothing here may fail or slow training:
- MLflow calls run on one background thread, each logging step's metrics batched into one
  `log_batch`, with short HTTP timeouts and few retries; the first error stops that tracker
  and is kept (redacted to one line) for `TrackingReport.error`, which the operator turns
  into the `TrackingHealthy` condition;
- the MLflow run is found again by the job's uid tag when a pod is retried or resumed, so one
  job is one run; a resumed TensorBoard writer purges the steps it will train again;
- TensorBoard event files are written under the job's checkpoint folder (kept across pod
  restarts) and copied into the stored model's `tensorboard/` folder.
Credentials come from the environment (MLflow's own `MLFLOW_TRACKING_*` variables, from the
Secret the operator mounts) and are never logged.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kubetune_crd.status import Metrics, Progress
from kubetune_crd.tracking import MlflowTracking, TrackingReport
from kubetune_crd.trainer_contract import TrainerRunConfig

JOB_UID_TAG = "kubetune.job-uid"
MODEL_URI_TAG = "kubetune.model-uri"
TENSORBOARD_DIR = "tensorboard"
"""The event files' folder, under the checkpoint folder and in the stored model."""
FINISH_TIMEOUT_S = 60.0
MAX_BATCH = 900  # MLflow takes at most 1000 metrics per log_batch
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # stdout holds JSON lines only
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
_SECRETISH = re.compile(r"(?i)(token|password|authorization|secret)[^\s,;]*[=:]\s*\S+")


def one_line(exc: BaseException) -> str:
    """An error as one short line, with anything that looks like a credential cut out."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return _SECRETISH.sub(r"\1=<redacted>", text)[:400]


def public_url(url: str) -> str:
    """A URL without user info, query or fragment (presigned URLs carry keys there)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def refuse_link_local(uri: str) -> None:
    """Checked again where used (the API checked it too): a tracking server is never on a
    link-local address, which is where clouds serve a node's credentials."""
    host = urlsplit(uri).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return  # unresolvable: MLflow's own connection error says so
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip.is_link_local:
            raise ValueError(f"tracking host {host!r} is a link-local address ({ip})")


def run_params(cfg: TrainerRunConfig) -> dict[str, str]:
    """What MLflow shows as the run's params: the method, the model, the data, every
    hyperparameter (no credentials, no Secret names)."""
    spec = cfg.spec
    params: dict[str, Any] = {
        "base_model": cfg.base_model_alias or cfg.base_model,
        "method": spec.method.type,
        "dataset": public_url(spec.dataset.url),
        "model_name": cfg.model_name,
        "strategy": spec.distributed.strategy,
        **spec.hyperparameters.model_dump(),
    }
    if spec.method.adapter:
        lora = spec.method.lora
        params.update(lora_r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout)
    if spec.method.objective == "dpo":
        params.update(objective="dpo", dpo_beta=spec.method.dpo.beta)
    return {k: str(v)[:500] for k, v in params.items() if v is not None}


def final_metrics(metrics: Metrics) -> dict[str, float]:
    """The held-out figures of the finished run (before/after), as MLflow metrics; not the
    final train loss: `train_loss` is the curve's name, already logged at every step."""
    return {
        k: float(v)
        for k, v in metrics.model_dump(exclude={"train_loss"}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


MetricPoint = tuple[str, float, int, int]
"""(key, value, milliseconds since the epoch, step)."""
Job = Callable[[], None] | list[MetricPoint] | None
"""What the MLflow thread is handed: a call, one step's metrics, or None (the end)."""


class MlflowLogger:
    """One MLflow run fed from a background thread; stops itself at the first error."""

    def __init__(self, spec: MlflowTracking, cfg: TrainerRunConfig) -> None:
        self.spec = spec
        self.cfg = cfg
        self.error: str | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._client: Any = None
        self._held: list[Job] = []
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="mlflow", daemon=True)
        self._thread.start()
        self._jobs.put(self._open)

    # -- what the trainer calls (never blocks on the server) --------------------------------
    def params(self, params: dict[str, str]) -> None:
        self._call(lambda: self._log_params(params))

    def metrics(self, values: dict[str, float], step: int) -> None:
        """Queued as plain tuples: MLflow is imported and called on the background thread."""
        if self.error is None:
            now = _millis()
            self._jobs.put([(k, v, now, step) for k, v in values.items()])

    def finish(self, model_uri: str | None, succeeded: bool | None) -> None:
        """Tag the model's location, end the run (None: leave it running for the pod that
        resumes it), and wait (bounded) for all of it."""

        def end() -> None:
            if model_uri:
                self._client.set_tag(self.run_id, MODEL_URI_TAG, model_uri)
            if succeeded is not None:
                self._client.set_terminated(self.run_id, "FINISHED" if succeeded else "FAILED")

        self._call(end)
        self._jobs.put(None)
        self._thread.join(FINISH_TIMEOUT_S)
        if self._thread.is_alive() and self.error is None:
            self.error = f"MLflow did not answer within {FINISH_TIMEOUT_S:.0f}s"

    # -- the background thread ----------------------------------------------------------------
    def _call(self, fn: Callable[[], None]) -> None:
        if self.error is None:
            self._jobs.put(fn)

    def _open(self) -> None:
        refuse_link_local(self.spec.tracking_uri)
        for name, value in MLFLOW_ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)
        from mlflow.tracking import MlflowClient

        self._client = client = MlflowClient(tracking_uri=self.spec.tracking_uri)
        experiment = client.get_experiment_by_name(self.spec.experiment)
        self.experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(self.spec.experiment)
        )
        uid = self.cfg.uid or f"{self.cfg.namespace}/{self.cfg.job_name}"
        found = client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{JOB_UID_TAG}` = '{uid}'", max_results=1
        )
        if found:
            self.run_id = found[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {
                JOB_UID_TAG: uid,
                "kubetune.job": self.cfg.job_name,
                "kubetune.namespace": self.cfg.namespace,
            }
            run = client.create_run(self.experiment_id, run_name=self.cfg.job_name, tags=tags)
            self.run_id = run.info.run_id

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes 100 params per batch
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def _work(self) -> None:
        while True:
            job = self._held.pop() if self._held else self._jobs.get()
            if job is None:
                return
            if self.error is not None:
                continue  # drain: the tracker has stopped
            try:
                if isinstance(job, list):
                    self._client.log_batch(self.run_id, metrics=self._batch(job))
                else:
                    job()
            except Exception as exc:  # any failure stops tracking, never training
                self.error = f"MLflow: {one_line(exc)}"

    def _batch(self, first: list[MetricPoint]) -> list[Any]:
        """This step's metrics and those queued behind them, up to one batch."""
        from mlflow.entities import Metric

        points = list(first)
        while len(points) < MAX_BATCH:
            try:
                nxt = self._jobs.get_nowait()
            except queue.Empty:
                break
            if not isinstance(nxt, list):
                self._held.append(nxt)  # a call (or the end) after these metrics, in order
                break
            points.extend(nxt)
        return [Metric(key, value, when, step) for key, value, when, step in points]


class TensorBoardLogger:
    """Event files under the checkpoint folder; `folder` is what the stored model gets."""

    def __init__(self, folder: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.error: str | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(log_dir=str(folder), purge_step=resume_step or None)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        self._writer.close()


class Tracking:
    """The trackers spec.tracking asks for (none on ranks other than 0)."""

    def __init__(
        self,
        mlflow: MlflowLogger | None,
        tensorboard: TensorBoardLogger | None,
        tensorboard_error: str | None = None,
    ):
        self.mlflow = mlflow
        self.tensorboard = tensorboard
        self._tb_error = tensorboard_error

    @classmethod
    def open(cls, cfg: TrainerRunConfig, main: bool, resume_step: int | None) -> Tracking:
        spec = cfg.spec.tracking
        if spec is None or not main:
            return cls(None, None)
        mlflow = MlflowLogger(spec.mlflow, cfg) if spec.mlflow is not None else None
        tensorboard, error = None, None
        if spec.tensorboard:
            try:
                folder = Path(cfg.checkpoint_dir) / TENSORBOARD_DIR
                tensorboard = TensorBoardLogger(folder, resume_step)
            except Exception as exc:
                error = f"TensorBoard: {one_line(exc)}"
        if mlflow is not None:
            mlflow.params(run_params(cfg))
        return cls(mlflow, tensorboard, error)

    @property
    def active(self) -> bool:
        return self.mlflow is not None or self.tensorboard is not None

    def train(self, progress: Progress) -> None:
        """One logging step's train loss, learning rate, tokens/s and epoch."""
        if not self.active:
            return
        values = {
            "train_loss": progress.loss,
            "learning_rate": progress.learning_rate,
            "tokens_per_second": progress.tokens_per_second,
            "epoch": progress.epoch,
        }
        self._log({k: float(v) for k, v in values.items() if v is not None}, progress.step)

    def eval(self, step: int, loss: float | None) -> None:
        if loss is not None:
            self._log({"eval_loss": float(loss)}, step)

    def close_files(self, metrics: Metrics, step: int) -> Path | None:
        """The final figures into the event files, closed: the folder the stored model gets
        (None without TensorBoard, or when it failed)."""
        tb = self.tensorboard
        if tb is None or self._tb_error is not None:
            return None
        values = {f"final/{k}": v for k, v in final_metrics(metrics).items()}
        self._guard_tb(lambda: tb.scalars(values, step))
        self._guard_tb(tb.close)
        return None if self._tb_error else tb.folder

    def finish(
        self,
        model_uri: str | None,
        metrics: Metrics | None,
        step: int = 0,
        succeeded: bool | None = True,
    ) -> TrackingReport | None:
        """End every tracker; what they did, for the trainer's result."""
        if not self.active and self._tb_error is None:
            return None
        if metrics is not None and self.mlflow is not None:
            self.mlflow.metrics(final_metrics(metrics), step)
        if self.tensorboard is not None:  # a second close does nothing
            self._guard_tb(self.tensorboard.close)
        report = TrackingReport(tensorboard=TENSORBOARD_DIR if self.tensorboard else None)
        if self.mlflow is not None:
            self.mlflow.finish(model_uri, succeeded)
            report.mlflow_run_id = self.mlflow.run_id
            report.mlflow_experiment_id = self.mlflow.experiment_id
        errors = [e for e in (self.mlflow and self.mlflow.error, self._tb_error) if e]
        report.error = "; ".join(errors)[:512] or None
        return report

    def _log(self, values: dict[str, float], step: int) -> None:
        if not values or not self.active:
            return
        if self.mlflow is not None:
            self.mlflow.metrics(values, step)
        if self.tensorboard is not None and self._tb_error is None:
            tb = self.tensorboard
            self._guard_tb(lambda: tb.scalars({_tb_key(k): v for k, v in values.items()}, step))

    def _guard_tb(self, fn: Callable[[], None]) -> None:
        if self._tb_error is not None:
            return
        try:
            fn()
        except Exception as exc:
            self._tb_error = f"TensorBoard: {one_line(exc)}"


def _tb_key(key: str) -> str:
    """TensorBoard groups by the part before `/`: train/loss, train/learning_rate, eval/loss."""
    group, _, name = key.partition("_")
    return f"{group}/{name}" if group in ("train", "eval") else f"train/{key}"


def _millis() -> int:
    import time

    return int(time.time() * 1000)
