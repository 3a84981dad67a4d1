"""Install the generated FineTuneSchedule CRD on a test cluster (the operator and API tests)."""

from __future__ import annotations

import time
from pathlib import Path

from kubetune_local.cluster import REPO
from kubetune_local.workspace import kubectl

SCHEDULE_CRD = REPO / "manifests" / "crds" / "kubetune.io_finetuneschedules.yaml"


def install_schedule_crd(kubeconfig: str | Path, timeout: float = 60.0) -> None:
    """Apply the FineTuneSchedule CRD and wait until it is Established."""
    kubectl(kubeconfig, "apply", "-f", str(SCHEDULE_CRD))
    deadline = time.monotonic() + timeout
    while True:
        try:
            kubectl(
                kubeconfig,
                "wait",
                "--for=condition=Established",
                "--timeout=5s",
                "crd/finetuneschedules.kubetune.io",
            )
            return
        except RuntimeError:  # a fresh CRD has no conditions yet: `kubectl wait` fails at once
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
