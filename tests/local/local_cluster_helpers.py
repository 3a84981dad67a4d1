"""Small helpers for the local-cluster tests: apply manifests, read objects, wait."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, TypeVar

from kubetune_local.cluster import LocalCluster

T = TypeVar("T")


def apply(cluster: LocalCluster, namespace: str, *manifests: dict[str, Any]) -> None:
    """`kubectl apply` the manifests into `namespace`."""
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)})
    subprocess.run(
        ["kubectl", "apply", "-n", namespace, "-f", "-"],
        input=body,
        env={**os.environ, **cluster.env},
        check=True,
        capture_output=True,
        text=True,
    )


def get(cluster: LocalCluster, namespace: str, *what: str) -> Any:
    """An object (or list) as a dict."""
    return json.loads(cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)


def job(
    name: str, command: list[str], *, gpus: int = 0, backoff: int = 0, **pod_spec: Any
) -> dict[str, Any]:
    """A Job manifest running `command` once."""
    container: dict[str, Any] = {"name": "main", "image": "python:3.11", "command": command}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container], **pod_spec}},
        },
    }


def python_pod(name: str, script: str) -> dict[str, Any]:
    """A bare Pod manifest running `script` once with python3."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": "python", "command": ["python3", "-c", script]}
            ],
        },
    }


def job_condition(cluster: LocalCluster, namespace: str, name: str) -> str | None:
    """`Complete` or `Failed` once the Job has that condition."""
    for cond in get(cluster, namespace, "job", name).get("status", {}).get("conditions") or []:
        if cond["status"] == "True" and cond["type"] in ("Complete", "Failed"):
            return str(cond["type"])
    return None


def pods_of(cluster: LocalCluster, namespace: str, job_name: str) -> list[dict[str, Any]]:
    """The pods of a Job."""
    return list(get(cluster, namespace, "pods", "-l", f"job-name={job_name}")["items"])


def pod_phase(cluster: LocalCluster, namespace: str, name: str) -> str:
    return str(get(cluster, namespace, "pod", name).get("status", {}).get("phase", ""))
