"""Pod features the operator, API and trainer rely on: env, volumes, claims, termination
messages, restarts, init containers and in-cluster API access with the pod's own RBAC."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubetune_local.cluster import LocalCluster
from kubetune_local.testing import wait_for
from local_cluster_helpers import apply, get, pod_phase

pytestmark = pytest.mark.cluster


def _pod(name: str, script: str, restart: str = "Never", **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "kubetune/trainer:dev",
        "command": ["python3", "-c", script],
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "probe"}},
        "spec": {"restartPolicy": restart, "containers": [container], **spec},
    }


def _finished(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    wait_for(
        lambda: pod_phase(cluster, ns, name) in ("Succeeded", "Failed"), 90, f"pod {name} to finish"
    )
    return dict(get(cluster, ns, "pod", name))


def _logs(cluster: LocalCluster, ns: str, name: str) -> str:
    return cluster.kubectl("logs", "-n", ns, name).stdout


def test_env_volumes_claims_and_termination_message(cluster: LocalCluster, namespace: str) -> None:
    ns = namespace
    apply(
        cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": "s3cr3t", "user": "ann"},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"mode": "fast", "conf.yaml": "a: 1\n"},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    script = """
import json, os, pathlib
keys = ["POD", "NS", "IP", "TOKEN", "MODE", "CFG_mode", "GREETING", "MISSING"]
out = {k: os.environ.get(k) for k in keys}
out["secret_file"] = pathlib.Path("/etc/creds/token").read_text()
out["conf"] = pathlib.Path("/etc/app/conf.yaml").read_text()
out["labels"] = pathlib.Path("/etc/podinfo/labels").read_text()
pathlib.Path("/data/out/result.txt").parent.mkdir(parents=True, exist_ok=True)
pathlib.Path("/data/out/result.txt").write_text("saved")
out["cwd"] = os.getcwd()
try:
    pathlib.Path("/etc/creds/new").write_text("x")
    out["ro"] = False
except OSError:
    out["ro"] = True
print(json.dumps(out))
pathlib.Path("/dev/termination-log").write_text(json.dumps({"summary": "done", "loss": 0.5}))
"""
    container = {
        "workingDir": "/scratch/job",
        "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {
                "name": "MISSING",
                "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}},
            },
            {"name": "GREETING", "value": "hi $(POD) in $(NS) $$(POD)"},
        ],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "volumeMounts": [
            {"name": "creds", "mountPath": "/etc/creds"},
            {"name": "cfg", "mountPath": "/etc/app/conf.yaml", "subPath": "conf.yaml"},
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
            {"name": "data", "mountPath": "/data"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    }
    volumes = [
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {
            "name": "podinfo",
            "downwardAPI": {
                "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
            },
        },
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    apply(cluster, ns, _pod("env", script, container=container, volumes=volumes))
    pod = _finished(cluster, ns, "env")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed", pod["status"]
    assert json.loads(term["message"]) == {"summary": "done", "loss": 0.5}
    out = json.loads(_logs(cluster, ns, "env"))
    assert out["POD"] == "env" and out["NS"] == ns and out["IP"] == "127.0.0.1"
    assert out["TOKEN"] == "s3cr3t" and out["MODE"] == "fast" and out["CFG_mode"] == "fast"
    assert out["MISSING"] is None
    assert out["GREETING"] == f"hi env in {ns} $(POD)"
    assert out["secret_file"] == "s3cr3t" and out["conf"] == "a: 1\n" and out["ro"] is True
    assert out["labels"] == 'app="probe"' and out["cwd"] == "/scratch/job"
    assert (cluster.pv_root / ns / "data" / "out" / "result.txt").read_text() == "saved"
    claim = get(cluster, ns, "pvc", "data")
    assert claim["status"]["phase"] == "Bound"


def test_fallback_to_logs_on_error(cluster: LocalCluster, namespace: str) -> None:
    script = "import sys; print('boom: bad config', flush=True); sys.exit(2)"
    apply(
        cluster,
        namespace,
        _pod("fallback", script, container={"terminationMessagePolicy": "FallbackToLogsOnError"}),
    )
    term = _finished(cluster, namespace, "fallback")["status"]["containerStatuses"][0]["state"][
        "terminated"
    ]
    assert term["exitCode"] == 2 and "boom: bad config" in term["message"]


def test_init_containers_and_on_failure_restart(cluster: LocalCluster, namespace: str) -> None:
    init = {
        "name": "init",
        "image": "x",
        "command": ["python3", "-c", "open('/shared/ready', 'w').write('yes')"],
        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
    }
    script = """
import os, sys
assert open('/shared/ready').read() == 'yes'
if not os.path.exists('/shared/second'):
    open('/shared/second', 'w').close()
    sys.exit(1)
print('second try')
"""
    apply(
        cluster,
        namespace,
        _pod(
            "restarts",
            script,
            restart="OnFailure",
            initContainers=[init],
            volumes=[{"name": "shared", "emptyDir": {}}],
            container={"volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
        ),
    )
    pod = _finished(cluster, namespace, "restarts")
    assert pod["status"]["phase"] == "Succeeded"
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert _logs(cluster, namespace, "restarts") == "second try\n"
    previous = cluster.kubectl("logs", "-n", namespace, "restarts", "--previous").stdout
    assert previous == ""


def test_in_cluster_api_access_follows_rbac(cluster: LocalCluster, namespace: str) -> None:
    ns = namespace
    apply(
        cluster,
        ns,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
    )
    wait_for(
        lambda: get(cluster, ns, "serviceaccount", "reader").get("secrets"), 30, "reader token"
    )
    script = f"""
import json, pathlib
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
config.load_incluster_config()
api = client.CoreV1Api()
out = {{"pods": [p.metadata.name for p in api.list_namespaced_pod("{ns}").items]}}
try:
    api.list_namespaced_secret("{ns}")
    out["secrets"] = 200
except ApiException as exc:
    out["secrets"] = exc.status
token = pathlib.Path("/var/run/secrets/tokens/api").read_text()
cfg = client.Configuration()
cfg.host = client.Configuration.get_default_copy().host
cfg.ssl_ca_cert = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
cfg.api_key = {{"authorization": "Bearer " + token}}
out["projected"] = len(client.CoreV1Api(client.ApiClient(cfg)).list_namespaced_pod("{ns}").items)
out["aud_token"] = pathlib.Path("/var/run/secrets/tokens/aud").read_text()
print(json.dumps(out))
"""
    projected = {
        "name": "tokens",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "api", "expirationSeconds": 3600}},
                {
                    "serviceAccountToken": {
                        "path": "aud",
                        "audience": "kubetune",
                        "expirationSeconds": 600,
                    }
                },
            ]
        },
    }
    pod = _pod(
        "incluster",
        script,
        serviceAccountName="reader",
        volumes=[projected],
        container={"volumeMounts": [{"name": "tokens", "mountPath": "/var/run/secrets/tokens"}]},
    )
    apply(cluster, ns, pod)
    finished = _finished(cluster, ns, "incluster")
    assert finished["status"]["phase"] == "Succeeded", _logs(cluster, ns, "incluster")
    out = json.loads(_logs(cluster, ns, "incluster"))
    assert "incluster" in out["pods"] and out["secrets"] == 403 and out["projected"] >= 1
    payload = out["aud_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["aud"] == ["kubetune"]
    assert claims["kubernetes.io"]["pod"]["name"] == "incluster"
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "reader"
