"""`make dev-up`, `make dev-down` and `make demo`: the whole product on the local cluster.

dev-up starts (or finds healthy) the local cluster, installs the CRD, creates the models and
data claims in the dev namespace, seeds them (the offline tiny base model, the sample
refrigeration datasets at the seed's path `data/frigo_training.csv`), then runs the operator
and the API (authentication off, said loudly) as background processes whose PIDs and logs
live in `<repo>/.local/dev/`. dev-down stops exactly those processes, then the cluster; the
cluster's data (jobs, models and their files) stays for the next dev-up. `clean` stops
everything and deletes that data. demo = dev-up, then `demo.run_demo`: SmolLM2 fine-tuned
over HTTP with a live progress bar, its answers and figures before and after, and its alias.
Usage: `python -m kubetune_local.devstack up|down|demo|clean`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kubetune_local import procs
from kubetune_local.cluster import (
    NODE_NAME,
    REPO,
    ClusterError,
    LocalCluster,
    clean,
    default_state_dir,
    down,
    up,
)
from kubetune_local.demo import run_demo
from kubetune_local.workspace import (
    DATA_CLAIM,
    TINY_MODEL_SUBDIR,
    create_claims,
    install_crd,
    seed_claims,
)

DEV_DIR = REPO / ".local" / "dev"
VENV_BIN = REPO / ".venv" / "bin"
NAMESPACE = os.environ.get("KUBETUNE_DEV_NAMESPACE", "default")
API_PORT = int(os.environ.get("KUBETUNE_DEV_API_PORT", "5002"))
OPERATOR_PROGRESS_PORT = int(os.environ.get("KUBETUNE_DEV_PROGRESS_PORT", "18081"))
OPERATOR_LIVENESS_PORT = int(os.environ.get("KUBETUNE_DEV_LIVENESS_PORT", "18080"))


def say(message: str) -> None:
    print(f"[kubetune] {message}", flush=True)


@dataclass(frozen=True)
class Service:
    """A background process of the dev stack: command, environment, health URL, PID file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str

    @property
    def pid_file(self) -> Path:
        return DEV_DIR / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return DEV_DIR / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID recorded for this service, if that process still runs as ours."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        ours = procs.environ(pid).get("KUBETUNE_DEV_SERVICE") == self.name
        return pid if ours and procs.alive(pid) else None

    def start(self, timeout: float = 90.0) -> None:
        if self.pid() is not None and _healthy(self.health_url):
            say(f"{self.name} already running (pid {self.pid()})")
            return
        self.stop()
        DEV_DIR.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETUNE_")}
        env.update(self.env)
        env["KUBETUNE_DEV_SERVICE"] = self.name
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                self.argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {proc.returncode}; log: {self.log_file}\n"
                    + _tail(self.log_file)
                )
            if _healthy(self.health_url):
                say(f"{self.name} running (pid {proc.pid}, log {self.log_file})")
                return
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not healthy after {timeout:.0f} s; log: {self.log_file}")

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            procs.terminate([pid], 10.0)
            say(f"{self.name} stopped (pid {pid})")
        self.pid_file.unlink(missing_ok=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def services(cluster: LocalCluster) -> list[Service]:
    """The operator and the API, configured for the local cluster."""
    marker = {"KUBETUNE_LOCAL_CLUSTER": str(cluster.state_dir)}  # cluster-down sweeps them too
    data_dir = cluster.pv_root / NAMESPACE / DATA_CLAIM
    operator = Service(
        name="operator",
        argv=[str(VENV_BIN / "kubetune-operator")],
        env={
            **marker,
            "KUBECONFIG": str(cluster.kubeconfig),
            "KUBETUNE_NAMESPACES": json.dumps([NAMESPACE]),
            "KUBETUNE_PROGRESS_BIND": "127.0.0.1",
            "KUBETUNE_PROGRESS_PORT": str(OPERATOR_PROGRESS_PORT),
            "KUBETUNE_LIVENESS_PORT": str(OPERATOR_LIVENESS_PORT),
            "KUBETUNE_LOG_FORMAT": "json",
        },
        health_url=f"http://127.0.0.1:{OPERATOR_LIVENESS_PORT}/healthz",
    )
    api = Service(
        name="api",
        argv=[str(VENV_BIN / "kubetune-api")],
        env={
            **marker,
            "KUBECONFIG": str(cluster.kubeconfig),
            "KUBETUNE_API_HOST": "127.0.0.1",
            "KUBETUNE_API_PORT": str(API_PORT),
            "KUBETUNE_API_NAMESPACE": NAMESPACE,
            "KUBETUNE_API_AUTH_DISABLED": "true",
            "KUBETUNE_API_DATA_ROOT": str(data_dir),
            "KUBETUNE_API_CHECK_DATASET_EXISTS": "true",
        },
        health_url=f"http://127.0.0.1:{API_PORT}/readyz",
    )
    return [operator, api]


def prepare_namespace(cluster: LocalCluster) -> None:
    """CRD, claims, and their seeded contents (tiny base model, sample datasets)."""
    install_crd(cluster.kubeconfig, timeout=60)
    create_claims(cluster.kubeconfig, NAMESPACE, size="5Gi", wait_bound=60)
    tiny = DEV_DIR / "kubetune-tiny"
    if not (tiny / "config.json").is_file():
        say("building the offline tiny base model (catalog alias `tiny`)")
        from kubetune_trainer.tiny_model import build_tiny_model  # torch: import only here

        shutil.rmtree(tiny, ignore_errors=True)
        build_tiny_model(tiny)
    models, data = seed_claims(cluster.pv_root, NAMESPACE, tiny)
    say(f"tiny base model: {models / TINY_MODEL_SUBDIR}")
    say(f"sample datasets: {data / 'data'} (the seed's data/frigo_training.csv)")


def dev_up() -> LocalCluster:
    state = default_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    gpus = os.environ.get("KUBETUNE_NODE_GPUS")
    cluster = up(state, int(gpus) if gpus else None, NODE_NAME, None)
    prepare_namespace(cluster)
    for service in services(cluster):
        service.start()
    say(
        "AUTHENTICATION IS OFF for local development (KUBETUNE_API_AUTH_DISABLED=true): every "
        f"request acts on namespace {NAMESPACE!r}"
    )
    say(f"API: http://127.0.0.1:{API_PORT}  (docs: http://127.0.0.1:{API_PORT}/docs)")
    say(f"try: curl http://127.0.0.1:{API_PORT}/api/finetune/info")
    say("stop everything with: make dev-down")
    return cluster


def dev_down() -> None:
    state = default_state_dir()
    cluster = LocalCluster.load(state)
    for service in reversed(services(cluster) if cluster else _detached_services()):
        service.stop()
    down(state)


def dev_clean() -> None:
    """Stop the dev stack, then delete the cluster's data and the dev stack's files."""
    state = default_state_dir()
    cluster = LocalCluster.load(state)
    for service in reversed(services(cluster) if cluster else _detached_services()):
        service.stop()
    clean(state)
    shutil.rmtree(DEV_DIR, ignore_errors=True)
    say(f"deleted the local cluster's data and {DEV_DIR}")


def _detached_services() -> list[Service]:
    """Services to stop when the cluster record is gone (only their PID files matter)."""
    return [Service(name, [], {}, "") for name in ("operator", "api")]


def demo() -> int:
    cluster = dev_up()
    api_url = f"http://127.0.0.1:{API_PORT}"
    cli = [str(VENV_BIN / "kubetune"), "--api-url", api_url]
    code = run_demo(cluster, NAMESPACE, DEV_DIR, api_url, cli)
    say(f"kubectl get ftj,ftm,mal -n {NAMESPACE}:")
    print(cluster.kubectl("get", "ftj,ftm,mal", "-n", NAMESPACE, check=False).stdout, end="")
    say(f"the API keeps running on {api_url}; stop everything with: make dev-down")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubetune_local.devstack", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "demo", "clean"])
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            cluster = dev_up()
            print(f"export KUBECONFIG={cluster.kubeconfig}")
            return 0
        if args.action == "down":
            dev_down()
            return 0
        if args.action == "clean":
            dev_clean()
            return 0
        return demo()
    except (ClusterError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"[kubetune] failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
