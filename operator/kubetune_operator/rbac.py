"""The operator's Kubernetes permissions, as data (least privilege).

The Helm chart renders these into a ClusterRole (cluster-wide operator) or one Role per
watched namespace (`KUBETUNE_NAMESPACES`); `NAMESPACED_RULES` are needed in each namespace
it watches, `CLUSTER_RULES` once at cluster scope. Each rule says why it is needed.
Trainer pods get no API permission at all: their only credential is a projected token with
the `kubetune-progress` audience, which the API server refuses (see progress_server.py).
"""

from __future__ import annotations

from typing import Any

Rule = dict[str, Any]

NAMESPACED_RULES: list[Rule] = [
    {
        # watch FineTuneJobs; read the newest copy after a conflict
        "apiGroups": ["kubetune.io"],
        "resources": ["finetunejobs"],
        "verbs": ["get", "list", "watch"],
    },
    {
        # write status (phase, conditions, progress); nothing in spec
        "apiGroups": ["kubetune.io"],
        "resources": ["finetunejobs/status"],
        "verbs": ["get", "patch", "update"],
    },
    {
        # a FineTuneSchedule's runs: create one per slot, cancel one (patch spec.cancel) under
        # concurrencyPolicy Replace, delete those beyond the history limits
        "apiGroups": ["kubetune.io"],
        "resources": ["finetunejobs"],
        "verbs": ["create", "patch", "delete"],
    },
    {
        # watch FineTuneSchedules
        "apiGroups": ["kubetune.io"],
        "resources": ["finetuneschedules"],
        "verbs": ["get", "list", "watch"],
    },
    {
        # write a schedule's status (last and next run, active runs, counts, conditions)
        "apiGroups": ["kubetune.io"],
        "resources": ["finetuneschedules/status"],
        "verbs": ["get", "patch", "update"],
    },
    {
        # the model registry: record each stored model (create; patch after a 409 when a
        # retried reconcile records it again), read it for a manual promotion; never
        # deleted, a record outlives its job
        "apiGroups": ["kubetune.io"],
        "resources": ["finetunedmodels"],
        "verbs": ["get", "create", "patch"],
    },
    {
        # watch aliases (manual promotions and rollbacks the API asks for); read an alias's
        # champion before a run; create the alias on its first decision
        "apiGroups": ["kubetune.io"],
        "resources": ["modelaliases"],
        "verbs": ["get", "list", "watch", "create"],
    },
    {
        # write an alias's current model and history (guarded by resourceVersion)
        "apiGroups": ["kubetune.io"],
        "resources": ["modelaliases/status"],
        "verbs": ["patch"],
    },
    {
        # create the trainer Job, adopt it after a 409, set its TTL, delete it on cancel
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        # derive status from the trainer pods (phase, exit code, termination message)
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch"],
    },
    {
        # a multi-node run: check its claims can be shared (access modes) before creating it
        "apiGroups": [""],
        "resources": ["persistentvolumeclaims"],
        "verbs": ["get"],
    },
    {
        # a multi-node run's headless Service: create it, adopt it after a 409, delete it
        # once the run ended
        "apiGroups": [""],
        "resources": ["services"],
        "verbs": ["get", "create", "delete"],
    },
    {
        # a multi-node run's NetworkPolicy (its pods reach each other): likewise
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["get", "create", "delete"],
    },
    {
        # each FineTuneJob's metric history `<job>-metrics` (owned by it): read it back after
        # a restart, create it, replace it (guarded by resourceVersion)
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "create", "update"],
    },
    {
        # read Warning events (FailedScheduling, FailedCreate); write Events on transitions
        "apiGroups": [""],
        "resources": ["events"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
]

CLUSTER_RULES: list[Rule] = [
    {
        # check the trainer's projected progress token (audience kubetune-progress)
        "apiGroups": ["authentication.k8s.io"],
        "resources": ["tokenreviews"],
        "verbs": ["create"],
    },
]

# With KUBETUNE_PEERING_NAME set (several replicas), kopf also needs its peering objects.
PEERING_RULES: list[Rule] = [
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings", "clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]


def cluster_role(name: str = "kubetune-operator", peering: bool = False) -> dict[str, Any]:
    """A ClusterRole with every rule (the cluster-wide install)."""
    rules = NAMESPACED_RULES + CLUSTER_RULES + (PEERING_RULES if peering else [])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [dict(rule) for rule in rules],
    }
