"""A multi-node run's own objects: the headless Service and the NetworkPolicy (pure builders).

`resources.nodes: M > 1` runs one Indexed Job of M pods. The Job controller names each pod's
host `<job>-<index>`; with `subdomain` set to a headless Service that selects the pods, the
index-0 pod gets the stable DNS name `<job>-0.<service>`, which every rank's torchrun uses
as its rendezvous address (PET_MASTER_ADDR). `publishNotReadyAddresses` publishes the names
before the pods are ready (trainer pods have no readiness probe; rendezvous comes first).

Why a NetworkPolicy per run: the chart's trainer policy denies all ingress and all egress to
private ranges, and a NetworkPolicy cannot say "pods with the same label value" generically,
so the operator adds one policy per multi-node run that selects exactly that run's pods and
allows all TCP/UDP between them (torchrun's rendezvous port and NCCL/gloo's own ports, which
are picked at run time) in both directions, and nothing else. It is created only when the
operator is told trainer pods are isolated (`KUBETUNE_GANG_NETWORK_POLICY`, set by the chart
with `networkPolicy.enabled`): on its own it would isolate the pods and cut their egress.
Both objects are owned by the FineTuneJob and deleted once the run ends.
"""

from __future__ import annotations

import re

from kubetune_crd import names
from kubetune_crd.resource import FineTuneJob

from kubetune_operator.object_meta import Manifest, owned_metadata, pod_selector

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SERVICE_PREFIX = "kt-"
"""Prefix of the Service of a FineTuneJob whose name starts with a digit (not DNS-1035)."""


def gang_service_name(job_name: str) -> str:
    """The headless Service's name: the job's name, prefixed where a Service name cannot be."""
    return job_name if _DNS_1035.match(job_name) else f"{SERVICE_PREFIX}{job_name}"


def master_address(job_name: str) -> str:
    """The index-0 pod's stable DNS name (resolved in the pods' own namespace)."""
    return f"{job_name}-0.{gang_service_name(job_name)}"


def build_headless_service(ftj: FineTuneJob) -> Manifest:
    """The headless Service giving each pod of the run a stable DNS name."""
    name = str(ftj.metadata["name"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owned_metadata(ftj, gang_service_name(name)),
        "spec": {
            "clusterIP": "None",
            "selector": pod_selector(name),
            "publishNotReadyAddresses": True,
            # torchrun's rendezvous; the other ports NCCL/gloo pick need no Service entry
            "ports": [
                {
                    "name": "rendezvous",
                    "port": names.DEFAULT_MASTER_PORT,
                    "targetPort": names.DEFAULT_MASTER_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_gang_network_policy(ftj: FineTuneJob) -> Manifest:
    """Lets the pods of one run reach each other (every port), and nothing else new."""
    name = str(ftj.metadata["name"])
    peers = [{"podSelector": {"matchLabels": pod_selector(name)}}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": owned_metadata(ftj, name),
        "spec": {
            "podSelector": {"matchLabels": pod_selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers}],
            "egress": [{"to": peers}],
        },
    }
