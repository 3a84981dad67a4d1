"""A resync drops a Job and a FineTuneJob whose DELETED events the operator never received.

An in-process `Controller` (no kopf, so no watch at all) caches two Jobs and two FineTuneJobs
from the real API server's create answers, as its watches would; one of each is then deleted
through the API, a deletion the controller never hears about (what a lost watch plus kopf's
relist leave behind). One `prune()` lists the real server and must drop exactly those two.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from kubernetes import client
from kubernetes import config as k8s_config
from kubetune_crd import names
from kubetune_local.cluster import LocalCluster
from kubetune_operator.controller import Controller
from kubetune_operator.kube import KubeClient
from kubetune_operator.settings import OperatorSettings
from operator_cluster_helpers import GROUP, PLURAL, VERSION, manifest


def _job(name: str) -> dict[str, Any]:
    labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_FINETUNEJOB: name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "parallelism": 0,  # never runs a pod: only the cache is under test
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "none", "command": ["true"]}],
                },
            },
        },
    }


def _controller(cluster: LocalCluster, namespace: str) -> Controller:
    cfg = client.Configuration()
    k8s_config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    settings = OperatorSettings(namespaces=[namespace], progress_enabled=False)
    return Controller(settings, KubeClient(cfg))


def test_resync_drops_objects_whose_deletion_was_missed(
    cluster: LocalCluster,
    k8s_api: client.ApiClient,
    ftj_namespace: str,
) -> None:
    ns = ftj_namespace
    batch, custom = client.BatchV1Api(k8s_api), client.CustomObjectsApi(k8s_api)
    ctl = _controller(cluster, ns)
    for name in ("ft-kept", "ft-gone"):
        ftj = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest(name))
        ctl.cache.store_ftj(cast(dict[str, Any], ftj))
        job = batch.create_namespaced_job(ns, cast(Any, _job(name)))  # a dict body is sent as is
        ctl.cache.store_job(k8s_api.sanitize_for_serialization(job))
    assert set(ctl.cache.jobs) == set(ctl.cache.ftjs) == {(ns, "ft-kept"), (ns, "ft-gone")}

    batch.delete_namespaced_job("ft-gone", ns, propagation_policy="Background")
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ft-gone")

    async def prune() -> None:
        try:
            await ctl.prune()
        finally:
            await ctl.client.close()

    asyncio.run(prune())
    assert set(ctl.cache.jobs) == set(ctl.cache.ftjs) == {(ns, "ft-kept")}
    assert ctl.probe()["pruned"] == 2
