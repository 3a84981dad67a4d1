"""Test hook: SIGKILL the operator process right after its training Job create call returned
(not the CPU pre-flight's Job, created before it).

Python imports `sitecustomize` at start-up from the first directory of its path that holds
one; `test_operator_cluster.CrashingOperator` puts this directory first on the operator's
PYTHONPATH, and only while it wants the crash. The product code has no switch for it.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from kubetune_operator.kube import KubeClient

_post = KubeClient.post


async def _post_then_die(self: KubeClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await _post(self, path, body)
    labels = (body.get("metadata") or {}).get("labels") or {}
    training = labels.get("app.kubernetes.io/component") != "preflight"
    if path.startswith("/apis/batch/v1/") and path.endswith("/jobs") and training:
        os.kill(os.getpid(), signal.SIGKILL)  # the Job exists; no status written yet
    return answer


KubeClient.post = _post_then_die  # type: ignore[method-assign]
