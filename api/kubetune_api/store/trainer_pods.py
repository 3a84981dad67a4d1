"""The trainer pods of a FineTuneJob, their Kubernetes events and their logs (read through the
apiserver on each request: these are not cached)."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubetune_crd.names import LABEL_FINETUNEJOB, TRAINER_CONTAINER

from kubetune_api.store.errors import REQUEST_TIMEOUT, translated

JOB_NAME_LABEL = "job-name"
"""The label the Job controller puts on its pods (the Job is named like the FineTuneJob)."""


class TrainerPods:
    """Pods, events and logs of FineTuneJobs (blocking calls: run them in a worker thread)."""

    def __init__(self, core: k8s.CoreV1Api) -> None:
        self.core = core

    def of_job(self, namespace: str, name: str) -> list[Any]:  # V1Pod
        """The job's trainer pods, oldest first."""
        pods: dict[str, Any] = {}
        for selector in (f"{JOB_NAME_LABEL}={name}", f"{LABEL_FINETUNEJOB}={name}"):
            with translated():
                found = self.core.list_namespaced_pod(
                    namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
                )
            for pod in found.items or []:
                pods[str(pod.metadata.name if pod.metadata else "")] = pod
        return sorted(pods.values(), key=lambda p: (p.metadata.creation_timestamp, p.metadata.name))

    def events(self, namespace: str, name: str) -> list[Any]:  # CoreV1Event
        """Events about the FineTuneJob, its Job (same name) and its pods."""
        names = {name} | {p.metadata.name for p in self.of_job(namespace, name)}
        out: list[Any] = []
        for involved in sorted(names):
            with translated():
                found = self.core.list_namespaced_event(
                    namespace,
                    field_selector=f"involvedObject.name={involved}",
                    _request_timeout=REQUEST_TIMEOUT,
                )
            out.extend(found.items)
        return out

    def open_logs(self, namespace: str, pod: Any, *, follow: bool, tail_lines: int | None) -> Any:
        """The streaming urllib3 response of the pod's log (trainer container)."""
        containers = [c.name for c in (pod.spec.containers or [])]
        container = TRAINER_CONTAINER if TRAINER_CONTAINER in containers else None
        if container is None and containers:
            container = containers[0]
        kwargs: dict[str, Any] = {
            "follow": follow,
            "_preload_content": False,
            "_request_timeout": (REQUEST_TIMEOUT[0], 3600 if follow else 60),
        }
        if container:
            kwargs["container"] = container
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        with translated():
            return self.core.read_namespaced_pod_log(pod.metadata.name, namespace, **kwargs)

    def read_log(self, response: Any) -> bytes:
        """The whole body of a log opened with `follow=False` (the connection released)."""
        try:
            with translated():
                data: bytes = response.read()
                return data
        finally:
            response.release_conn()
