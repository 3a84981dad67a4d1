"""The whole product in one namespace of the local cluster, for the end-to-end scenarios.

`E2EStack` seeds the namespace's claims (the offline tiny base model at the catalog's `tiny`
path, the sample datasets at the seed's `data/...` paths), runs the real operator (with the
real `kubetune-trainer` as the container command) and the real API as subprocesses, and
reads what the scenarios check: FineTuneJobs, Jobs, pods, the pods' processes, the
trainer logs the node agent keeps (also for deleted pods) and the stored models.

Every wait polls a condition and, on timeout, fails with the FineTuneJob's status, the Jobs
and pods, and the tails of the operator, API and trainer logs (`diagnostics()`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from api.api_proc import ApiProcess
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubetune_crd.names import COMPONENT_TRAINER, LABEL_COMPONENT
from kubetune_crd.names import LABEL_FINETUNEJOB as FTJ_LABEL
from kubetune_crd.names import TRAINER_CONTAINER as CONTAINER
from kubetune_crd.resource import GROUP, PLURAL, VERSION
from kubetune_local.cluster import LocalCluster
from kubetune_local.workspace import (
    DATA_CLAIM,
    MODELS_CLAIM,
    TINY_MODEL_SUBDIR,
    create_claims,
    seed_claims,
)
from support.operator_proc import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
T = TypeVar("T")


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def parse_events(log_text: str) -> list[dict[str, Any]]:
    """The trainer's JSON lines (`{"event": ...}`) from a node-agent log (timestamp prefix)."""
    events: list[dict[str, Any]] = []
    for raw in log_text.splitlines():
        line = raw.split(" ", 1)[1] if raw[:1].isdigit() and " " in raw else raw
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "event" in value:
            events.append(value)
    return events


def _quiet_access_line(line: str) -> bool:
    """An access-log line of a successful request (noise in failure reports)."""
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and value.get("message") == "request"
        and int(value.get("status") or 0) < 400
    )


def progress_steps(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["step"]) for e in events if e.get("event") == "progress" and "step" in e]


def _selector(name: str, component: str | None) -> str:
    """A FineTuneJob's objects of one component (trainer, preflight; None: all)."""
    own = f"{FTJ_LABEL}={name}"
    return f"{own},{LABEL_COMPONENT}={component}" if component else own


class E2EStack:
    """Operator, API and trainer pods for one test namespace."""

    def __init__(
        self,
        cluster: LocalCluster,
        namespace: str,
        k8s_api: client.ApiClient,
        workdir: Path,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.custom = client.CustomObjectsApi(k8s_api)
        self.batch = client.BatchV1Api(k8s_api)
        self.core = client.CoreV1Api(k8s_api)
        self.pv = Path(cluster.pv_root) / namespace
        self.models_dir = self.pv / MODELS_CLAIM
        self.data_dir = self.pv / DATA_CLAIM
        self.tiny_dir = self.models_dir / TINY_MODEL_SUBDIR
        self.operator: OperatorProcess | None = None
        self.api: ApiProcess | None = None
        self._http: httpx.Client | None = None
        self.seen_pod_uids: dict[str, str] = {}  # uid -> pod name, every pod ever listed
        self.statuses_seen: dict[str, list[str]] = {}  # job id -> API statuses, in order

    # ---- set-up ----------------------------------------------------------------------
    def seed(self, tiny_source: Path) -> None:
        """The two claims, bound; the tiny base model and the sample datasets on them."""
        create_claims(self.cluster.kubeconfig, self.namespace, wait_bound=60)
        seed_claims(Path(self.cluster.pv_root), self.namespace, tiny_source)

    def start_operator(self, **settings: Any) -> OperatorProcess:
        self.operator = OperatorProcess(
            self.cluster.kubeconfig,
            settings={
                "NAMESPACES": [self.namespace],
                "TRAINER_COMMAND": [str(VENV_BIN / "kubetune-trainer")],
                "TTL_SECONDS_AFTER_FINISHED": "600",
                # The local node's GPUs are fake: trainers run on CPU unless a test asks.
                "TRAINER_DEFAULT_GPUS": "0",
                **settings,
            },
            log_path=self.workdir / "operator.log",
            startup_timeout=120,
        ).start()
        return self.operator

    def start_api(self, **settings: Any) -> ApiProcess:
        self.api = ApiProcess(
            self.cluster.kubeconfig,
            {
                "AUTH_DISABLED": True,
                "NAMESPACE": self.namespace,
                "DATA_ROOT": str(self.data_dir),
                "CHECK_DATASET_EXISTS": True,
                **settings,
            },
        ).start(timeout=120)
        return self.api

    @property
    def http(self) -> httpx.Client:
        assert self.api is not None, "start_api() first"
        if self._http is None:
            self._http = httpx.Client(base_url=self.api.url, timeout=60)
        return self._http

    def reset_http(self) -> None:
        """Drop the pooled connections (after the API restarted)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self.api is not None:
            self.api.stop()
        if self.operator is not None:
            self.operator.stop()

    # ---- the API ---------------------------------------------------------------------
    def start_job(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
        resp = self.http.post("/api/finetune/start", json=body, headers=headers or {})
        assert resp.status_code == 202, f"start answered {resp.status_code}: {resp.text}"
        return str(resp.json()["job_id"])

    def api_status(self, job_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/api/finetune/status/{job_id}")
        assert resp.status_code == 200, f"status answered {resp.status_code}: {resp.text}"
        return dict(resp.json())

    def models(self) -> dict[str, Any]:
        resp = self.http.get("/api/finetune/models")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def wait_api_status(
        self, job_id: str, want: set[str], timeout: float, name: str | None = None
    ) -> dict[str, Any]:
        seen = self.statuses_seen.setdefault(job_id, [])

        def check() -> dict[str, Any] | None:
            status = self.api_status(job_id)
            if not seen or seen[-1] != status["status"]:
                seen.append(status["status"])
            return status if status["status"] in want else None

        return self.wait(
            check,
            timeout,
            f"job {job_id} to be {sorted(want)} (statuses seen: {seen})",
            name=name or job_id.replace("_", "-"),
        )

    # ---- the cluster -----------------------------------------------------------------
    def ftj(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def ftj_status(self, name: str) -> dict[str, Any]:
        return dict((self.ftj(name) or {}).get("status") or {})

    def ftjs(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500}
            if cont:
                kwargs["_continue"] = cont
            page = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, **kwargs
            )
            items.extend(page["items"])
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items

    def jobs(self, name: str, component: str | None = COMPONENT_TRAINER) -> list[Any]:
        """The training Jobs (the pre-flight Job with `COMPONENT_PREFLIGHT`; None: all)."""
        return list(
            self.batch.list_namespaced_job(
                self.namespace, label_selector=_selector(name, component)
            ).items
        )

    def pods(self, name: str, component: str | None = COMPONENT_TRAINER) -> list[Any]:
        """The trainer pods (the pre-flight's with `COMPONENT_PREFLIGHT`; None: all)."""
        pods = list(
            self.core.list_namespaced_pod(
                self.namespace, label_selector=_selector(name, component)
            ).items
        )
        for pod in pods:
            self.seen_pod_uids[pod.metadata.uid] = pod.metadata.name
        return pods

    def running_pod(self, name: str) -> Any | None:
        for pod in self.pods(name):
            if pod.status.phase == "Running" and not pod.metadata.deletion_timestamp:
                return pod
        return None

    def pod_processes(self, uids: set[str] | None = None) -> list[int]:
        """PIDs of container processes (and their launchers) of these pods (default: every
        pod seen so far), found by the KUBETUNE_POD_UID marker the node agent sets."""
        from kubetune_local import procs

        wanted = set(self.seen_pod_uids) if uids is None else uids
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            env = procs.environ(pid)
            if env.get("KUBETUNE_POD_UID") in wanted and procs.alive(pid):
                found.append(pid)
        return found

    def trainer_logs(self, name: str | None) -> dict[str, str]:
        """Trainer log of every pod of FineTuneJob `name` (None: of any) the node agent ran,
        deleted pods too, keyed by pod name, oldest pod first."""
        root = Path(self.cluster.state_dir) / "logs" / "pods"
        runs = []
        for pod_dir in root.glob(f"{self.namespace}_{name or ''}*_*"):
            pod_name = pod_dir.name[len(self.namespace) + 1 :].rsplit("_", 1)[0]
            if name is not None and pod_name.rsplit("-", 1)[0] != name:
                continue
            files = sorted((pod_dir / CONTAINER).glob("*.log"))
            if files:
                text = "".join(f.read_text(errors="replace") for f in files)
                runs.append((files[0].stat().st_ctime, pod_name, text))
        return {pod: text for _, pod, text in sorted(runs)}

    def model_dirs(self) -> list[str]:
        root = self.models_dir / "models"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    # ---- waiting and diagnostics -----------------------------------------------------
    def wait(
        self,
        check: Callable[[], T | None],
        timeout: float,
        what: str,
        name: str | None = None,
        interval: float = 0.3,
    ) -> T:
        """Poll `check` until it returns something truthy; fail with diagnostics otherwise."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            try:
                value = check()
            except (ApiException, httpx.HTTPError, OSError) as exc:
                value, last_error = None, exc
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what}"
                    + (f" (last error: {last_error})" if last_error else "")
                    + "\n"
                    + self.diagnostics(name)
                )
            time.sleep(interval)

    def wait_phase(self, name: str, phases: tuple[str, ...], timeout: float) -> dict[str, Any]:
        return self.wait(
            lambda: st if (st := self.ftj_status(name)).get("phase") in phases else None,
            timeout,
            f"FineTuneJob {name} to reach {phases}",
            name=name,
        )

    def diagnostics(self, name: str | None = None) -> str:
        """FineTuneJob status, Jobs and pods, and the log tails: what a failure needs."""
        parts: list[str] = [f"=== namespace {self.namespace}"]
        try:
            if name:
                parts.append(
                    f"--- FineTuneJob {name} status:\n{json.dumps(self.ftj_status(name), indent=1)}"
                )
            out = self.cluster.kubectl(
                "get", "ftj,jobs,pods", "-n", self.namespace, "-o", "wide", check=False
            )
            parts.append(f"--- kubectl get ftj,jobs,pods:\n{tail(out.stdout + out.stderr, 30)}")
        except Exception as exc:  # diagnostics must never hide the real failure
            parts.append(f"(cannot read the cluster: {exc})")
        if self.operator is not None:
            parts.append(
                f"--- operator log tail ({self.operator.log_path}):\n{tail(self.operator.log())}"
            )
        if self.api is not None:
            lines = [ln for ln in self.api.log().splitlines() if not _quiet_access_line(ln)]
            parts.append(
                f"--- API log tail ({self.api.log_path}):\n{tail(chr(10).join(lines), 20)}"
            )
        logs = list(self.trainer_logs(name).items())
        if name is None:
            logs = logs[-3:]
        for pod, text in logs:
            parts.append(f"--- trainer log tail, pod {pod}:\n{tail(text, 25)}")
        return "\n".join(parts)


def check_model_loads(model_dir: Path, base_dir: Path) -> dict[str, Any]:
    """Load the fine-tuned model the way a user would and run it once.

    LoRA output: the adapter on the base with peft; a `merged/` copy, when present, loads
    with `AutoModelForCausalLM` alone and gives the same logits. Full fine-tunes load with
    `AutoModelForCausalLM` directly. Returns what was loaded (for messages).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    inputs = tokenizer("Mon frigo ne refroidit plus", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    base.eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits
    loaded: dict[str, Any] = {}
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(base, str(model_dir))
        loaded["adapter"] = type(tuned).__name__
    else:
        tuned = AutoModelForCausalLM.from_pretrained(str(model_dir))
        loaded["model"] = type(tuned).__name__
    tuned.eval()
    with torch.no_grad():
        logits = tuned(**inputs).logits
    assert logits.shape == base_logits.shape, (logits.shape, base_logits.shape)
    assert torch.isfinite(logits).all(), "non-finite logits from the fine-tuned model"
    assert not torch.equal(logits, base_logits), "the fine-tuned model equals its base"
    merged_dir = model_dir / "merged"
    if (merged_dir / "config.json").is_file():
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))
        merged.eval()
        with torch.no_grad():
            merged_logits = merged(**inputs).logits
        assert torch.allclose(merged_logits, logits, atol=1e-4), (
            "the merged model and base+adapter disagree: max diff "
            f"{(merged_logits - logits).abs().max().item()}"
        )
        loaded["merged"] = type(merged).__name__
    return loaded


FINISHED = {"completed", "failed", "cancelled"}
"""The original API's final statuses."""


def short_job(**overrides: Any) -> dict[str, Any]:
    """The original API's request on the sample dataset, with steps cheap enough for 2 cores."""
    return {
        "model": "tiny",
        "dataset_url": "data/frigo_training.csv",
        "epochs": 1,
        "batch_size": 2,
        "learning_rate": 0.001,
        "max_seq_length": 64,
        "logging_steps": 1,
        **overrides,
    }


def ftj_name(job_id: str) -> str:
    return job_id.replace("_", "-")


def wait_training(stack: E2EStack, job_id: str, timeout: float = 240) -> dict[str, Any]:
    """Until `/api/finetune/status` reports a training step > 0."""

    def training() -> dict[str, Any] | None:
        status = stack.api_status(job_id)
        assert status["status"] not in FINISHED, f"ended before training: {status}"
        return status if (status.get("step") or 0) > 0 else None

    return stack.wait(training, timeout, f"job {job_id} to report step > 0", ftj_name(job_id))
