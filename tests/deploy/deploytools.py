"""Shared helpers of the deployment tests: render the chart and the manifests, validate them.

Everything here runs the real tools (helm, kubectl kustomize, kubernetes-validate, checkov)
as subprocesses; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetune"
MANIFESTS = REPO / "manifests"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
VENV_BIN = Path(sys.executable).parent
VALIDATE_VERSION = "1.30.0"
# The only checkov checks the chart may skip, each with its reason on the resource.
ALLOWED_SKIPS = {"CKV_K8S_43"}

Doc = dict[str, Any]


def tool(name: str) -> str:
    """A tool from the virtualenv, else from PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (make install)")
    return found


def run(
    *argv: str, check: bool = True, timeout: float = 300, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; on failure the assertion shows its output."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def helm(
    *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return run(tool("helm"), *args, check=check, env=full_env, timeout=timeout)


def helm_template(*args: str, namespace: str = "kubetune") -> str:
    """`helm template kubetune charts/kubetune -n NAMESPACE ARGS`: the rendered YAML."""
    return helm(
        "template",
        "kubetune",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        VALIDATE_VERSION,
        *args,
    ).stdout


def kustomize(path: Path = MANIFESTS) -> str:
    return run("kubectl", "kustomize", str(path)).stdout


def docs(text: str) -> list[Doc]:
    """The non-empty YAML documents of a multi-document stream."""
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(items: list[Doc], kind: str) -> list[Doc]:
    return [d for d in items if d.get("kind") == kind]


def find(items: list[Doc], kind: str, name: str) -> Doc:
    for d in items:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(
        f"no {kind} {name} in {[(d['kind'], d['metadata']['name']) for d in items]}"
    )


def kubernetes_validate(text: str, tmp_path: Path, name: str) -> list[str]:
    """Validate with `kubernetes-validate --strict` against VALIDATE_VERSION: the problem lines.

    Custom resources the tool has no schema for (ServiceMonitor) come back as a warning
    and are not problems.
    """
    target = tmp_path / f"{name}.yaml"
    target.write_text(text)
    proc = run(
        tool("kubernetes-validate"),
        "--strict",
        "-k",
        VALIDATE_VERSION,
        str(target),
        check=False,
        cwd=str(tmp_path),
    )
    output = (proc.stdout + proc.stderr).splitlines()
    problems = [
        line for line in output if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line
    ]
    if proc.returncode != 0 and not problems:
        problems = output or [f"exit {proc.returncode}"]
    return problems


def checkov(text: str, tmp_path: Path, name: str) -> dict[str, Any]:
    """Run checkov's Kubernetes checks on rendered YAML; its JSON results."""
    directory = tmp_path / f"checkov-{name}"
    directory.mkdir()
    (directory / f"{name}.yaml").write_text(text)
    proc = run(
        tool("checkov"),
        "--directory",
        str(directory),
        "--framework",
        "kubernetes",
        "--skip-download",
        "--output",
        "json",
        check=False,
        timeout=600,
        cwd=str(tmp_path),
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    if proc.returncode not in (0, 1):
        raise AssertionError(f"checkov exited {proc.returncode}: {proc.stderr[-3000:]}")
    data = json.loads(proc.stdout)
    if isinstance(data, list):  # one report per framework
        data = next(r for r in data if r.get("check_type") == "kubernetes")
    result: dict[str, Any] = data
    return result


def pod_specs(items: list[Doc]) -> list[tuple[str, Doc]]:
    """(workload name, pod spec) of every workload in the documents."""
    out = []
    for d in items:
        if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d.get("kind") == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["spec"]))
    return out
