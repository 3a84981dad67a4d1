"""Helpers of the operator's cluster tests: a FineTuneJob manifest, kubectl, and `Ftj`, which
reads one FineTuneJob and the Job, pods and Events that belong to it."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from kubernetes import client
from kubetune_crd.names import COMPONENT_TRAINER, LABEL_COMPONENT, LABEL_FINETUNEJOB
from kubetune_local.cluster import LocalCluster
from kubetune_local.testing import wait_for

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "finetunejobs"


def manifest(
    name: str, url: str = "data/fake_steps-3_interval-0.3.csv", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {"model": "tiny", "dataset": {"url": url}, "resources": {"gpus": 1}, **spec},
    }


def kubectl(
    cluster: LocalCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *args],
        input=stdin,
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        check=False,
    )


class Ftj:
    """Reads one FineTuneJob and what belongs to it."""

    def __init__(
        self,
        custom: client.CustomObjectsApi,
        batch: client.BatchV1Api,
        core: client.CoreV1Api,
        namespace: str,
        name: str,
    ) -> None:
        self.custom, self.batch, self.core = custom, batch, core
        self.namespace, self.name = namespace, name

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
        )

    def get(self) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        )

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    def phase(self) -> str | None:
        return self.status().get("phase")

    def wait_phase(self, phase: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: self.status() if self.phase() == phase else None,
            timeout,
            f"{self.name} to be {phase} (now {self.status()})",
        )

    def selector(self, component: str | None = COMPONENT_TRAINER) -> str:
        """This FineTuneJob's objects of one component (trainer, preflight; None: all)."""
        own = f"{LABEL_FINETUNEJOB}={self.name}"
        return f"{own},{LABEL_COMPONENT}={component}" if component else own

    def jobs(self, component: str | None = COMPONENT_TRAINER) -> list[Any]:
        """The training Jobs (the pre-flight Job with `COMPONENT_PREFLIGHT`; None: all)."""
        return list(
            self.batch.list_namespaced_job(
                self.namespace, label_selector=self.selector(component)
            ).items
        )

    def pods(self, component: str | None = COMPONENT_TRAINER) -> list[Any]:
        """The trainer pods (the pre-flight's with `COMPONENT_PREFLIGHT`; None: all)."""
        return list(
            self.core.list_namespaced_pod(
                self.namespace, label_selector=self.selector(component)
            ).items
        )

    def events(self) -> list[tuple[str, str]]:
        items = self.core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.name={self.name},involvedObject.kind=FineTuneJob",
        ).items
        return [(e.type, e.reason) for e in items]
