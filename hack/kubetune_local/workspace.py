"""What a fine-tune needs on the local cluster: the CRD, the two claims, and their contents.

`make dev-up`, `make demo` and the cluster tests all prepare a namespace the same way: the
generated FineTuneJob CRD installed and Established, the `kubetune-models` and
`kubetune-data` claims Bound (the node agent's provisioner backs claim C of namespace N with
`<pv_root>/N/C`), the offline tiny base model at the catalog's `tiny` path inside the models
claim, and the sample datasets at the seed's path `data/frigo_training.csv` in the data claim.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from kubetune_local.cluster import REPO

CRD_DIR = REPO / "manifests" / "crds"
"""The generated CRDs (`make crds`): FineTuneJob, FineTuneSchedule and the model registry."""
MODELS_CLAIM, DATA_CLAIM = "kubetune-models", "kubetune-data"
TINY_MODEL_SUBDIR = Path("base") / "kubetune-tiny"  # the catalog's `tiny` inside the models claim


def kubectl(kubeconfig: str | Path, *args: str, stdin: str | None = None) -> str:
    """Run kubectl against `kubeconfig`; its stdout, or RuntimeError with its stderr."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run(
        ["kubectl", *args], input=stdin, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def install_crd(kubeconfig: str | Path, timeout: float = 30.0) -> None:
    """Apply every generated CRD (FineTuneJob, FineTuneSchedule) and wait until each is
    Established (kopf looks for its resources when the operator starts)."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    kubectl(kubeconfig, "apply", *[arg for f in files for arg in ("-f", str(f))])
    # Right after a first apply a CRD has no status.conditions yet, and `kubectl wait`
    # fails at once ("accessor error: <nil>") instead of waiting: retry until the deadline.
    deadline = time.monotonic() + timeout
    names = [f"crd/{f.stem.split('_', 1)[1]}.{f.stem.split('_', 1)[0]}" for f in files]
    while True:
        try:
            kubectl(
                kubeconfig,
                "wait",
                "--for=condition=Established",
                f"--timeout={max(1, int(deadline - time.monotonic()))}s",
                *names,
            )
            return
        except RuntimeError as exc:
            transient = "accessor error" in str(exc) or "NotFound" in str(exc)
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def create_claims(
    kubeconfig: str | Path,
    namespace: str,
    claims: tuple[str, ...] = (MODELS_CLAIM, DATA_CLAIM),
    size: str = "1Gi",
    wait_bound: float = 30.0,
) -> None:
    """The PVCs the trainer pod mounts, Bound (the scheduler places no pod on an unbound one)."""
    items = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}},
            },
        }
        for claim in claims
    ]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)
    deadline = time.monotonic() + wait_bound
    while wait_bound and time.monotonic() < deadline:
        phases = kubectl(
            kubeconfig, "get", "pvc", "-n", namespace, *claims,
            "-o", "jsonpath={.items[*].status.phase}",
        ).split()  # fmt: skip
        if phases == ["Bound"] * len(claims):
            return
        time.sleep(0.2)
    if wait_bound:
        raise RuntimeError(f"claims {claims} in {namespace} not Bound after {wait_bound}s")


def seed_claims(pv_root: Path, namespace: str, tiny_model: Path) -> tuple[Path, Path]:
    """The tiny base model and the sample datasets in the claims' host directories.

    Returns (models dir, data dir). The model files are hard-linked where possible (fast,
    and the trainer only reads them).
    """
    from kubetune_trainer.samples import copy_samples  # the trainer extra (dev installs it)

    models, data = pv_root / namespace / MODELS_CLAIM, pv_root / namespace / DATA_CLAIM
    seed_base_model(models, TINY_MODEL_SUBDIR, tiny_model)
    copy_samples(data)
    return models, data


def seed_base_model(models: Path, subdir: Path, source: Path) -> Path:
    """A base model directory inside the models claim (kept when it is there already)."""
    target = models / subdir
    if not (target / "config.json").is_file():
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target, copy_function=_link_or_copy)
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
