"""Idempotency claims: one ConfigMap per (tenant, Idempotency-Key), created atomically.

Creating the claim is the step two concurrent identical requests race on (the loser gets
409 and reads the winner's job id); once the FineTuneJob exists the claim becomes its
dependent, so it is garbage-collected with it.
"""

from __future__ import annotations

import logging

from kubernetes import client as k8s
from kubetune_crd.resource import API_VERSION, KIND

from kubetune_api.store.errors import CALL_ERRORS, REQUEST_TIMEOUT, translated
from kubetune_api.views import JobRecord

log = logging.getLogger(__name__)


class IdempotencyClaims:
    """The claim ConfigMaps of the tenants' namespaces."""

    def __init__(self, core: k8s.CoreV1Api) -> None:
        self.core = core

    def create(
        self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]
    ) -> None:
        """Create the claim; ConflictError when it exists already."""
        body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name, labels=labels), data=data)
        with translated():
            self.core.create_namespaced_config_map(
                namespace, body, _request_timeout=REQUEST_TIMEOUT
            )

    def read(self, namespace: str, name: str) -> dict[str, str]:
        with translated():
            cm = self.core.read_namespaced_config_map(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        return dict(cm.data or {})

    def own(self, namespace: str, name: str, owner: JobRecord) -> None:
        """Make the claim a dependent of its FineTuneJob (deleted with it). Best effort."""
        if not owner.uid:
            return
        reference = {"apiVersion": API_VERSION, "kind": KIND, "name": owner.name, "uid": owner.uid}
        patch = {"metadata": {"ownerReferences": [reference]}}
        try:
            self.core.patch_namespaced_config_map(
                name, namespace, patch, _request_timeout=REQUEST_TIMEOUT
            )
        except CALL_ERRORS as exc:
            cause = getattr(exc, "reason", exc)
            log.warning("could not own claim %s/%s: %s", namespace, name, cause)
