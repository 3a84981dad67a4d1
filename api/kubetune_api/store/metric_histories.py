"""Reads a FineTuneJob's metric history, the ConfigMap `<job>-metrics` the operator writes.

The API only reads it (`get` on ConfigMaps, which its idempotency claims already need): the
operator merges the trainer's points into it (kubetune_operator.metric_history_writer). It
is read straight from the apiserver on each request, so a point is served as soon as the
operator stored it (within its flush interval, ~3 s).
"""

from __future__ import annotations

from kubernetes import client as k8s
from kubetune_crd import names
from kubetune_crd.metric_history import MetricHistory

from kubetune_api.store.errors import REQUEST_TIMEOUT, NotFoundError, translated


class MetricHistories:
    """The metric history ConfigMaps of the tenants' namespaces."""

    def __init__(self, core: k8s.CoreV1Api) -> None:
        self.core = core

    def read(self, namespace: str, job_name: str, owner_uid: str | None) -> MetricHistory | None:
        """The job's stored history (blocking); None while there is none, or when the
        ConfigMap of that name is not the job's own (an older job's of the same name)."""
        try:
            with translated():
                cm = self.core.read_namespaced_config_map(
                    names.metrics_configmap_name(job_name),
                    namespace,
                    _request_timeout=REQUEST_TIMEOUT,
                )
        except NotFoundError:
            return None
        owners = (cm.metadata.owner_references if cm.metadata else None) or []
        if owner_uid and not any(ref.uid == owner_uid for ref in owners):
            return None
        return MetricHistory.decode((cm.data or {}).get(names.METRICS_DATA_KEY))
