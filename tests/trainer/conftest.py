"""Fixtures for the trainer tests: the tiny model, sample data, run configs, a subprocess runner
(one trainer, or a torchrun gang through the real launcher: `gang_env`), a fault-injection
environment for the distributed tests (`fault_env`, see faults/sitecustomize.py) and a moto S3
server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
FAULTS_DIR = Path(__file__).resolve().parent / "faults"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    from kubetune_trainer.samples import copy_samples

    root = tmp_path / "datasets"
    copy_samples(root)
    return root


@pytest.fixture
def make_config(tmp_path: Path, tiny_model: Path, data_root: Path) -> Callable[..., dict[str, Any]]:
    """A TrainerRunConfig dict (camelCase); keyword args override spec parts."""

    def build(
        *,
        dataset: dict[str, Any] | None = None,
        method: dict[str, Any] | None = None,
        hyperparameters: dict[str, Any] | None = None,
        checkpoint: dict[str, Any] | None = None,
        output: dict[str, Any] | None = None,
        distributed: dict[str, Any] | None = None,
        name: str = "tiny-ft",
        job: str = "job-a",
        root: Path | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        base = root or tmp_path
        hp = {
            "epochs": 1,
            "batchSize": 4,
            "learningRate": 1e-3,
            "maxSeqLength": 128,
            "loggingSteps": 1,
            **(hyperparameters or {}),
        }
        config: dict[str, Any] = {
            "jobName": job,
            "namespace": "default",
            "uid": f"uid-{job}",
            "spec": {
                "model": "tiny",
                "dataset": {"url": "data/frigo_training.csv", **(dataset or {})},
                "method": method or {"type": "full"},
                "hyperparameters": hp,
                "output": output or {"pvc": {"claimName": "kubetune-models"}},
                "checkpoint": checkpoint or {"everySteps": 0},
                "distributed": distributed or {"strategy": "auto"},
            },
            "baseModel": str(tiny_model),
            "baseModelAlias": "tiny",
            "modelName": name,
            "dataRoot": str(data_root),
            "outputDir": str(base / "models"),
            "checkpointDir": str(base / "checkpoints" / job),
        }
        config.update(extra)
        return config

    return build


class TrainerRun:
    """A `kubetune-trainer` subprocess with its parsed stdout lines."""

    def __init__(self, config: dict[str, Any], workdir: Path, args: list[str], env: dict[str, str]):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "run-config.json"
        self.config_path.write_text(json.dumps(config), encoding="utf-8")
        self.termination = workdir / "termination-log"
        self.stdout_path = workdir / "stdout.jsonl"
        self.stderr_path = workdir / "stderr.log"
        full_env = {
            **os.environ,
            "KUBETUNE_RUN_CONFIG": json.dumps(config),
            "KUBETUNE_TERMINATION_MESSAGE_PATH": str(self.termination),
            **env,
        }
        self._out = self.stdout_path.open("w")
        self._err = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubetune_trainer", *args],
            stdout=self._out,
            stderr=self._err,
            env=full_env,
            cwd=workdir,
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def progress(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == "progress"]

    def wait_for_step(self, step: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p["step"] >= step for p in self.progress()):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"trainer exited early: {self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"no progress to step {step} in {timeout}s")

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()
            self._err.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)

    def kill_tree(self, sig: int = signal.SIGKILL) -> None:
        """Signal the trainer and every process under it at once, as the container runtime
        does when a pod is lost (torchrun's workers run in sessions of their own)."""
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def result_lines(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == "result"]

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")

    def result(self) -> dict[str, Any]:
        return dict(json.loads(self.termination.read_text(encoding="utf-8")))


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gang_env(
    nproc: int, nnodes: int = 1, node_rank: int = 0, port: int | None = None
) -> dict[str, str]:
    """torchrun's PET_* variables as the operator (or Kubeflow Trainer) sets them in a pod."""
    from kubetune_crd import names

    env = {names.ENV_NNODES: str(nnodes), names.ENV_NPROC_PER_NODE: str(nproc)}
    if nnodes > 1:
        env[names.ENV_NODE_RANK] = str(node_rank)
        env[names.ENV_MASTER_ADDR] = "127.0.0.1"
        env[names.ENV_MASTER_PORT] = str(port or free_port())
    return env


def fault_env(spec: str) -> dict[str, str]:
    """Inject a fault into one worker (faults/sitecustomize.py documents `spec`)."""
    path = os.pathsep.join(p for p in (str(FAULTS_DIR), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "KUBETUNE_TEST_FAULT": spec}


@pytest.fixture
def start_trainer(tmp_path: Path) -> Iterator[Callable[..., TrainerRun]]:
    runs: list[TrainerRun] = []

    def start(
        config: dict[str, Any], *args: str, env: dict[str, str] | None = None, tag: str = ""
    ) -> TrainerRun:
        run = TrainerRun(config, tmp_path / f"run{len(runs)}{tag}", list(args), env or {})
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.kill_tree()
            run.proc.wait(10)


@pytest.fixture
def run_trainer(
    start_trainer: Callable[..., TrainerRun],
) -> Callable[..., TrainerRun]:
    def run(config: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> TrainerRun:
        trainer = start_trainer(config, *args, env=env)
        trainer.wait()
        return trainer

    return run


class ProgressSink(BaseHTTPRequestHandler):
    """The operator's progress endpoint: keeps (path, Authorization, body) of each POST."""

    received: list[tuple[str, str | None, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def progress_server() -> Iterator[str]:
    """A progress endpoint on 127.0.0.1 (ProgressSink.received); yields its base URL."""
    ProgressSink.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ProgressSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (HTTP); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_server}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3(s3_env: dict[str, str]) -> Any:
    from kubetune_trainer.sources import s3_client

    return s3_client(s3_env["AWS_ENDPOINT_URL"])
