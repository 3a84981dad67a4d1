"""Install kubetune on the local cluster with Helm and with `kubectl apply -k`, and fine-tune.

Both installs run exactly what a user installs: the operator and API pods are started by the
node agent from the chart's (or the manifests') pod specs, under their own ServiceAccounts and
RBAC, so a missing permission fails the run. A fine-tune of the tiny model, submitted to the
installed API, must reach Succeeded and be listed by /api/finetune/models. Uninstalling must
remove everything but the CRD and the stored models.

The local cluster runs pods as host processes sharing 127.0.0.1, so the tests give the chart
free ports and loopback bind addresses (chart values for Helm, an overlay for kustomize), one
API replica, and no policy/v1 PodDisruptionBudget (the cluster is Kubernetes 1.20).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubetune_crd import names
from kubetune_local.cluster import LocalCluster, free_ports
from kubetune_local.testing import wait_for
from kubetune_local.workspace import seed_claims

from .deploytools import CHART, MANIFESTS, tool

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow]

INSTANCE = "app.kubernetes.io/instance=kubetune"
TRAINING_TIMEOUT = 420.0
MAX_STEPS = 6


# ---- helpers ---------------------------------------------------------------------------------


def kubectl_json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def run_helm(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [tool("helm"), *args],
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc


class Api:
    """A client of the installed API on 127.0.0.1."""

    def __init__(self, port: int, key: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.key = key

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read().decode())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def diagnostics(cluster: LocalCluster, namespace: str) -> str:
    """Pods, events and the logs of every pod of the namespace, for a failure message."""
    parts = [
        cluster.kubectl("-n", namespace, "get", "all,ftj,pvc", "-o", "wide", check=False).stdout,
        cluster.kubectl("-n", namespace, "get", "events", check=False).stdout[-3000:],
    ]
    pods = cluster.kubectl("-n", namespace, "get", "pods", "-o", "name", check=False).stdout.split()
    for pod in pods:
        logs = cluster.kubectl("-n", namespace, "logs", pod, "--tail=30", check=False)
        parts.append(f"--- {pod}\n{logs.stdout}{logs.stderr}")
    return "\n".join(parts)


def create_api_key(cluster: LocalCluster, namespace: str, secret: str = "kubetune-api-keys") -> str:
    """An API key acting on `namespace`, stored as the API expects: sha256(key) -> namespace."""
    key = secrets.token_hex(16)
    digest = hashlib.sha256(key.encode()).hexdigest()
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "secret",
        "generic",
        secret,
        f"--from-literal={digest}={namespace}",
    )
    return key


def check_components(cluster: LocalCluster, namespace: str) -> None:
    """Operator and API pods Running under their own ServiceAccounts, with least privilege."""

    def running() -> list[Any]:
        pods = kubectl_json(cluster, "-n", namespace, "get", "pods", "-l", INSTANCE)["items"]
        ok = [p for p in pods if p["status"].get("phase") == "Running"]
        return ok if len(ok) == 2 else []

    pods = wait_for(running, 120, "the operator and API pods to run", interval=1.0)
    accounts = {
        p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"]["serviceAccountName"]
        for p in pods
    }
    assert accounts == {"operator": "kubetune-operator", "api": "kubetune-api"}
    for pod in pods:
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    def can(account: str, *what: str) -> bool:
        who = f"--as=system:serviceaccount:{namespace}:{account}"
        out = cluster.kubectl("auth", "can-i", who, "-n", namespace, *what, check=False)
        return out.stdout.strip() == "yes"

    assert can("kubetune-operator", "create", "jobs.batch")
    assert can("kubetune-operator", "create", "tokenreviews.authentication.k8s.io")
    assert can("kubetune-operator", "patch", "finetunejobs.kubetune.io", "--subresource=status")
    assert not can("kubetune-operator", "get", "secrets")
    assert can("kubetune-api", "create", "finetunejobs.kubetune.io")
    assert can("kubetune-api", "get", "secrets/kubetune-api-keys")
    assert not can("kubetune-api", "get", "secrets/other")
    assert not can("kubetune-api", "create", "jobs.batch")
    assert not can("kubetune-api", "create", "pods")
    assert not can("kubetune-trainer", "get", "pods")
    assert not can("kubetune-trainer", "list", "finetunejobs.kubetune.io")


def fine_tune(cluster: LocalCluster, namespace: str, api: Api, models_dir: Path) -> str:
    """Start a tiny fine-tune through the API, wait for it, check the model is listed."""
    wait_for(api.ready, 90, "the API to be ready", interval=1.0)
    started = api.call(
        "POST",
        "/api/finetune/start",
        {
            "model": "tiny",
            "dataset_url": "data/frigo_training.csv",
            "epochs": 1,
            "batch_size": 4,
            "learning_rate": 0.001,
            "max_steps": MAX_STEPS,
            "max_seq_length": 128,
            "logging_steps": 2,
            "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
        },
    )
    job_id = started["job_id"]

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = api.call("GET", f"/api/finetune/status/{job_id}")
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
        return None

    try:
        status = wait_for(finished, TRAINING_TIMEOUT, f"fine-tune {job_id}", interval=3)
    except BaseException:
        print(diagnostics(cluster, namespace))
        raise
    assert status["status"] == "completed", f"{status}\n{diagnostics(cluster, namespace)}"
    assert status["phase"] == "Succeeded"
    model_path = status["model_path"]
    listed = api.call("GET", "/api/finetune/models")
    assert model_path in [m["path"] for m in listed["models"]], listed
    assert (models_dir / model_path).is_dir()
    ftj = kubectl_json(cluster, "-n", namespace, "get", "ftj", job_id.replace("_", "-"))
    assert ftj["status"]["phase"] == "Succeeded"
    # Step counts only come from the trainer's reports to the operator's progress endpoint:
    # the projected token, the operator's TokenReview and its status patch all worked.
    progress = ftj["status"]["progress"]
    assert progress.get("totalSteps") == MAX_STEPS and progress.get("updatedAt"), progress
    # The operator kept the metric history with the chart's RBAC; the API serves it.
    name = job_id.replace("_", "-")
    cm = kubectl_json(cluster, "-n", namespace, "get", "cm", names.metrics_configmap_name(name))
    record = json.loads(cm["data"][names.METRICS_DATA_KEY])
    series = api.call("GET", f"/api/finetune/metrics/{job_id}")
    assert record["train"] and record["eval"], record
    assert [p["step"] for p in series["train"]] == [row[0] for row in record["train"]]
    operator_log = cluster.kubectl(
        "-n", namespace, "logs", "-l", f"{INSTANCE},app.kubernetes.io/component=operator"
    ).stdout
    assert "TokenReview failed" not in operator_log
    assert "forbidden" not in operator_log.lower()
    return str(model_path)


def leftovers(cluster: LocalCluster, namespace: str) -> list[str]:
    """Namespaced objects of the install still present (claims excepted)."""
    kinds = "deploy,rs,pods,svc,sa,cm,role,rolebinding,networkpolicy,pdb,ingress"
    out = cluster.kubectl("-n", namespace, "get", kinds, "-l", INSTANCE, "-o", "name")
    return out.stdout.split()


def check_uninstalled(cluster: LocalCluster, namespace: str, models_dir: Path, model: str) -> None:
    wait_for(
        lambda: not leftovers(cluster, namespace), 60, "the install's objects to go", interval=1.0
    )
    cluster_wide = cluster.kubectl(
        "get", "clusterrole,clusterrolebinding", "-l", INSTANCE, "-o", "name"
    ).stdout.split()
    assert cluster_wide == []
    cluster.kubectl("get", "crd", "finetunejobs.kubetune.io")
    claims = kubectl_json(cluster, "-n", namespace, "get", "pvc")["items"]
    assert {c["metadata"]["name"] for c in claims} >= {"kubetune-models", "kubetune-data"}
    stored = models_dir / model
    assert stored.is_dir() and any(stored.iterdir()), f"{stored} is gone"


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def ports() -> dict[str, int]:
    progress, health, api = free_ports(3)
    return {"progress": progress, "health": health, "api": api}


# ---- the tests -------------------------------------------------------------------------------


def test_helm_install_runs_a_fine_tune_and_uninstalls(
    cluster: LocalCluster,
    namespace: str,
    tiny_model: Path,
    ports: dict[str, int],
    tmp_path: Path,
) -> None:
    key = create_api_key(cluster, namespace)
    models_dir, _ = seed_claims(cluster.pv_root, namespace, tiny_model)
    local_values = {
        "operator": {
            "bindAddress": "127.0.0.1",
            "progress": {"port": ports["progress"], "url": f"http://127.0.0.1:{ports['progress']}"},
            "health": {"port": ports["health"]},
        },
        "api": {"bindAddress": "127.0.0.1", "port": ports["api"], "replicas": 1},
    }
    values_file = tmp_path / "local-values.yaml"
    values_file.write_text(yaml.safe_dump(local_values))
    installed = run_helm(
        cluster, "install", "kubetune", str(CHART), "-n", namespace, "--values", str(values_file)
    )
    try:
        assert installed.stdout.rstrip().endswith(f"kubectl -n {namespace} get ftj -w")
        check_components(cluster, namespace)
        model = fine_tune(cluster, namespace, Api(ports["api"], key), models_dir)
    finally:
        run_helm(cluster, "uninstall", "kubetune", "-n", namespace, "--wait")
    check_uninstalled(cluster, namespace, models_dir, model)


KUSTOMIZE_NAMESPACE = "kubetune"


@pytest.fixture
def kubetune_namespace(cluster: LocalCluster) -> Iterator[str]:
    """The manifests' fixed namespace, created with its API keys Secret; deleted afterwards."""
    cluster.kubectl("create", "namespace", KUSTOMIZE_NAMESPACE)
    try:
        yield KUSTOMIZE_NAMESPACE
    finally:
        cluster.kubectl("delete", "namespace", KUSTOMIZE_NAMESPACE, "--wait=false", check=False)


def local_overlay(directory: Path, ports: dict[str, int]) -> Path:
    """A kustomize overlay of manifests/ for the local cluster (ports, binds, 1.20)."""
    directory.mkdir(parents=True, exist_ok=True)

    def env(pairs: dict[str, str]) -> list[dict[str, str]]:
        return [{"name": k, "value": v} for k, v in pairs.items()]

    operator_patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "kubetune-operator", "namespace": KUSTOMIZE_NAMESPACE},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "operator",
                            "env": env(
                                {
                                    "KUBETUNE_LIVENESS_BIND": "127.0.0.1",
                                    "KUBETUNE_LIVENESS_PORT": str(ports["health"]),
                                    "KUBETUNE_PROGRESS_BIND": "127.0.0.1",
                                    "KUBETUNE_PROGRESS_PORT": str(ports["progress"]),
                                    "KUBETUNE_PROGRESS_URL": f"http://127.0.0.1:{ports['progress']}",
                                }
                            ),
                        }
                    ]
                }
            }
        },
    }
    api_patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "kubetune-api", "namespace": KUSTOMIZE_NAMESPACE},
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "env": env(
                                {
                                    "KUBETUNE_API_HOST": "127.0.0.1",
                                    "KUBETUNE_API_PORT": str(ports["api"]),
                                }
                            ),
                        }
                    ]
                }
            },
        },
    }
    # policy/v1 PodDisruptionBudget arrived in Kubernetes 1.21; the local cluster is 1.20.
    pdb_delete = {
        "$patch": "delete",
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "kubetune-api", "namespace": KUSTOMIZE_NAMESPACE},
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS, directory)],
        "patches": [{"patch": yaml.safe_dump(p)} for p in (operator_patch, api_patch, pdb_delete)],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def test_kubectl_apply_k_runs_a_fine_tune_and_deletes(
    cluster: LocalCluster,
    kubetune_namespace: str,
    tiny_model: Path,
    ports: dict[str, int],
    tmp_path: Path,
) -> None:
    namespace = kubetune_namespace
    key = create_api_key(cluster, namespace)
    models_dir, _ = seed_claims(cluster.pv_root, namespace, tiny_model)
    overlay = local_overlay(tmp_path / "overlay", ports)
    cluster.kubectl("apply", "-k", str(overlay), timeout=120)
    try:
        check_components(cluster, namespace)
        model = fine_tune(cluster, namespace, Api(ports["api"], key), models_dir)
    finally:
        # The documented uninstall (manifests/kustomization.yaml): keep what is labelled
        # kubetune.io/retain=true (the CRD, the namespace, the claims).
        cluster.kubectl(
            "delete",
            "-k",
            str(overlay),
            "-l",
            "kubetune.io/retain!=true",
            "--wait=true",
            timeout=180,
        )
    check_uninstalled(cluster, namespace, models_dir, model)
    cluster.kubectl("get", "namespace", namespace)
