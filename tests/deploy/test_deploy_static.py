"""The Helm chart and the plain manifests, checked offline with the real tools.

helm lint; helm template (default values and ci/full-values.yaml) and `kubectl kustomize
manifests/`, each validated by kubernetes-validate --strict against Kubernetes 1.30 and
scanned by checkov; the values schema; and the security properties the issue asks for
(restricted pods, least-privilege RBAC, one operator, the trainer NetworkPolicy).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .deploytools import (
    ALLOWED_SKIPS,
    CHART,
    FULL_VALUES,
    MANIFESTS,
    REPO,
    Doc,
    by_kind,
    checkov,
    docs,
    find,
    helm,
    helm_template,
    kubernetes_validate,
    kustomize,
    pod_specs,
    run,
)

RENDERS = ("default", "full", "kustomize")


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """The three renders every check below runs on."""
    return {
        "default": helm_template(),
        "full": helm_template("--values", str(FULL_VALUES), namespace="kubetune-system"),
        "kustomize": kustomize(),
    }


@pytest.fixture(scope="module")
def objects(rendered: dict[str, str]) -> dict[str, list[Doc]]:
    return {name: docs(text) for name, text in rendered.items()}


# ---- the tools ------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default", "full"])
def test_helm_lint(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)]
    if values is not None:
        args += ["--values", str(values)]
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("name", RENDERS)
def test_kubernetes_validate_strict(name: str, rendered: dict[str, str], tmp_path: Path) -> None:
    problems = kubernetes_validate(rendered[name], tmp_path, name)
    assert problems == []


@pytest.mark.parametrize("name", RENDERS)
def test_checkov_has_no_failed_check(name: str, rendered: dict[str, str], tmp_path: Path) -> None:
    report = checkov(rendered[name], tmp_path, name)
    results = report["results"]
    failed = [(c["check_id"], c["check_name"], c["resource"]) for c in results["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100, "checkov scanned nothing"
    for skip in results["skipped_checks"]:
        reason = (skip.get("check_result") or {}).get("suppress_comment") or ""
        assert skip["check_id"] in ALLOWED_SKIPS, skip
        assert len(reason) > 20, (
            f"{skip['check_id']} on {skip['resource']} is skipped without a reason"
        )


def test_digest_pinned_images_need_no_checkov_skip(objects: dict[str, list[Doc]]) -> None:
    for deployment in by_kind(objects["full"], "Deployment"):
        annotations = deployment["metadata"].get("annotations") or {}
        assert not any(k.startswith("checkov.io/skip") for k in annotations), deployment[
            "metadata"
        ]["name"]
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "@sha256:" in container["image"]


# ---- values and schema ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        "unknownTopLevel=1",
        "operator.unknown=1",
        "operator.image.unknown=1",
        "operator.progress.unknown=1",
        "trainer.unknown=1",
        "api.ingress.tls.unknown=1",
        "api.auth.keys=abc",
        "persistence.models.unknown=1",
        "catalog.phi.unknown=1",
        "networkPolicy.trainer.unknown=1",
        "metrics.serviceMonitor.unknown=1",
        "global.unknown=1",
    ],
)
def test_schema_rejects_unknown_keys(setting: str) -> None:
    proc = helm("template", "kubetune", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0
    assert "Additional property" in proc.stderr or "additional propert" in proc.stderr.lower(), (
        proc.stderr
    )


@pytest.mark.parametrize(
    "setting",
    [
        "operator.replicas=2",
        "containerSecurityContext.readOnlyRootFilesystem=false",
        "containerSecurityContext.allowPrivilegeEscalation=true",
        "podSecurityContext.runAsNonRoot=false",
        "api.port=0",
        "operator.logLevel=verbose",
        "operator.image.digest=latest",
    ],
)
def test_schema_rejects_unsafe_or_invalid_values(setting: str) -> None:
    proc = helm("template", "kubetune", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"{setting} was accepted"


def _objects_without_closed_properties(node: Any, path: str = "$") -> list[str]:
    """Schema objects that declare properties but do not close them (additionalProperties)."""
    found: list[str] = []
    if isinstance(node, dict):
        declares = "properties" in node or "patternProperties" in node
        if declares and node.get("additionalProperties") is not False:
            found.append(path)
        for key, value in node.items():
            found += _objects_without_closed_properties(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _objects_without_closed_properties(value, f"{path}[{i}]")
    return found


def test_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert _objects_without_closed_properties(schema) == []


def test_schema_describes_every_value() -> None:
    """Every key of values.yaml is a property of the schema (and so documented there)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        return node

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        node = resolve(node)
        if not isinstance(value, dict) or node.get("type") != "object":
            return
        props = node.get("properties") or {}
        for key, sub in value.items():
            if key in props:
                walk(sub, props[key], f"{path}.{key}")
                continue
            patterns = node.get("patternProperties") or {}
            matching = [s for p, s in patterns.items() if re.match(p, key)]
            assert matching, f"{path}.{key} is not in values.schema.json"
            walk(sub, matching[0], f"{path}.{key}")

    walk(values, schema, "values")


# Maps whose keys are Kubernetes or catalog data, documented by the comment on the map itself.
DATA_MAPS = {
    "podSecurityContext",
    "containerSecurityContext",
    "resources",
    "tolerations",
    "catalog",
}


def test_values_every_key_commented() -> None:
    """Each key of values.yaml has a comment right above it (data maps: above the map)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    missing = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match or line.lstrip().startswith("-"):
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inside_data = any(k in DATA_MAPS for _, k in stack)
        stack.append((indent, key))
        if inside_data:
            continue
        previous = next((p for p in reversed(lines[:i]) if p.strip()), "")
        if not previous.strip().startswith("#"):
            missing.append(f"line {i + 1}: {'.'.join(k for _, k in stack)}")
    assert missing == []


def render_notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it, rendered offline.

    `helm template` skips NOTES.txt and `helm install --dry-run` needs a cluster, so a copy
    of the chart wraps it in a named template and a ConfigMap that `--show-only` prints.
    """
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = chart / "templates" / "NOTES.txt"
    wrapped = '{{- define "kubetune.test.notes" -}}\n' + notes.read_text() + "{{- end -}}\n"
    (chart / "templates" / "_notes.tpl").write_text(wrapped)
    notes.unlink()
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '{{ include "kubetune.test.notes" . | indent 4 }}\n'
    )
    out = helm(
        "template",
        "kubetune",
        str(chart),
        "--namespace",
        "kubetune",
        "--show-only",
        "templates/zz-notes.yaml",
        *args,
    )
    text: str = yaml.safe_load(out.stdout)["data"]["notes"]
    return text


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default", "full"])
def test_notes_end_with_watching_finetunejobs(values: Path | None, tmp_path: Path) -> None:
    notes = render_notes(tmp_path, *(["--values", str(values)] if values else []))
    assert notes.strip().splitlines()[-1].strip() == "kubectl -n kubetune get ftj -w"
    assert "kubetune-api-keys" in notes or values is not None


# ---- security properties ---------------------------------------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_every_pod_is_restricted_and_has_a_command(
    name: str, objects: dict[str, list[Doc]]
) -> None:
    specs = pod_specs(objects[name])
    assert {w.split("/")[0] for w, _ in specs} == {"Deployment"}
    for workload, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, workload
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert spec["automountServiceAccountToken"] is False, workload
        assert spec["serviceAccountName"] not in ("", "default"), workload
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{workload}/{c['name']}"
            # The local cluster's node agent runs `command`; the image is ignored there.
            assert c.get("command"), f"{where} has no explicit command"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc.get("privileged") is not True, where
            assert c["resources"]["limits"]["memory"], where


@pytest.mark.parametrize("name", RENDERS)
def test_one_operator_at_a_time(name: str, objects: dict[str, list[Doc]]) -> None:
    operators = [
        d
        for d in by_kind(objects[name], "Deployment")
        if d["metadata"]["name"].endswith("-operator")
    ]
    assert len(operators) == 1
    spec = operators[0]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert spec["template"]["spec"]["containers"][0]["command"] == ["kubetune-operator"]


def _rules(items: list[Doc], component: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for d in items:
        if (
            d["kind"] in ("Role", "ClusterRole")
            and d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ):
            rules += d.get("rules") or []
    return rules


def _grants(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", [])
        and resource in r.get("resources", [])
        and verb in r.get("verbs", [])
        for r in rules
    )


@pytest.mark.parametrize("name", RENDERS)
def test_rbac_least_privilege(name: str, objects: dict[str, list[Doc]]) -> None:
    items = objects[name]
    for d in items:
        if d["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in d.get("rules") or []:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (
                    f"wildcard in {d['kind']}/{d['metadata']['name']}"
                )
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                # Secrets only by name, and only read.
                assert rule.get("resourceNames"), f"{d['metadata']['name']} reads Secrets by kind"
                assert set(rule["verbs"]) <= {"get"}
    operator, api = _rules(items, "operator"), _rules(items, "api")
    assert _grants(operator, "batch", "jobs", "create")
    assert _grants(operator, "authentication.k8s.io", "tokenreviews", "create")
    assert _grants(operator, "kubetune.io", "finetunejobs/status", "patch")
    # The operator alone creates Jobs; the API creates and reads FineTuneJobs only.
    for component in ("api", "trainer", "catalog", "storage"):
        assert not _grants(_rules(items, component), "batch", "jobs", "create"), component
    assert not _grants(api, "", "pods", "create")
    assert _grants(api, "kubetune.io", "finetunejobs", "create")
    assert _grants(api, "", "pods/log", "get")
    # The API deletes nothing but FineTuneSchedules (a user's `DELETE /schedules/{name}`):
    # never a FineTuneJob (its record stays), a pod, a Job or a claim.
    deleting = [r for r in api if "delete" in r["verbs"]]
    assert deleting and all(r["resources"] == ["finetuneschedules"] for r in deleting), deleting
    assert _rules(items, "trainer") == []
    bound = {
        s["name"]
        for d in items
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        for s in d["subjects"]
    }
    assert not any(n.endswith("-trainer") or n == "kubetune-trainer" for n in bound)


def _allowed_by_ip_block(policy: Doc, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    for rule in policy["spec"].get("egress") or []:
        for peer in rule.get("to") or []:
            block = peer.get("ipBlock")
            if not block:
                continue
            if ip in ipaddress.ip_network(block["cidr"]) and not any(
                ip in ipaddress.ip_network(e) for e in block.get("except", [])
            ):
                return True
    return False


@pytest.mark.parametrize("name", RENDERS)
def test_trainer_network_policy(name: str, objects: dict[str, list[Doc]]) -> None:
    policies = [
        d
        for d in by_kind(objects[name], "NetworkPolicy")
        if d["metadata"]["name"].endswith("-trainer")
    ]
    assert policies
    for policy in policies:
        spec = policy["spec"]
        assert spec["podSelector"]["matchExpressions"][0]["key"] == "kubetune.io/finetunejob"
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        assert spec["ingress"] == []
        for denied in (
            "169.254.169.254",
            "10.96.0.1",
            "172.17.0.2",
            "192.168.1.1",
            "100.100.100.200",
            "127.0.0.1",
        ):
            assert not _allowed_by_ip_block(policy, denied), denied
        for public in ("52.216.0.10", "18.154.0.1", "8.8.8.8"):  # S3, the Hugging Face CDN, ...
            assert _allowed_by_ip_block(policy, public), public
        # Every rule without an IP block names its ports: DNS and the operator's progress port.
        port_rules = [
            r for r in spec["egress"] if not any("ipBlock" in p for p in r.get("to") or [])
        ]
        ports = {p["port"] for r in port_rules for p in r.get("ports", [])}
        assert 53 in ports
        assert all(r.get("ports") for r in port_rules)
        progress = [r for r in port_rules if 53 not in {p["port"] for p in r["ports"]}]
        assert (
            progress
            and progress[0]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            == "operator"
        )


def test_trainer_progress_port_matches_the_operator(objects: dict[str, list[Doc]]) -> None:
    for name in RENDERS:
        items = objects[name]
        operator = next(
            d for d in by_kind(items, "Deployment") if d["metadata"]["name"].endswith("-operator")
        )
        container = operator["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        port = int(env["KUBETUNE_PROGRESS_PORT"])
        assert env["KUBETUNE_PROGRESS_URL"].endswith(f":{port}")
        service = next(
            d for d in by_kind(items, "Service") if d["metadata"]["name"].endswith("-operator")
        )
        assert service["spec"]["ports"][0]["port"] == port
        trainer_policy = next(
            d for d in by_kind(items, "NetworkPolicy") if d["metadata"]["name"].endswith("-trainer")
        )
        egress_ports = {
            p["port"] for r in trainer_policy["spec"]["egress"] for p in r.get("ports", [])
        }
        assert port in egress_ports


def test_claims_survive_uninstall(objects: dict[str, list[Doc]]) -> None:
    for name in ("default", "kustomize"):
        claims = by_kind(objects[name], "PersistentVolumeClaim")
        assert {c["metadata"]["name"] for c in claims} == {"kubetune-models", "kubetune-data"}
        for claim in claims:
            assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
            assert claim["metadata"]["labels"]["kubetune.io/retain"] == "true"
    crd = find(objects["kustomize"], "CustomResourceDefinition", "finetunejobs.kubetune.io")
    assert crd["metadata"]["labels"]["kubetune.io/retain"] == "true"


def test_existing_claims_are_used_not_created() -> None:
    items = docs(
        helm_template(
            "--set",
            "persistence.models.existingClaim=team-models",
            "--set",
            "persistence.data.existingClaim=team-data",
        )
    )
    assert by_kind(items, "PersistentVolumeClaim") == []
    operator = find(items, "Deployment", "kubetune-operator")
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KUBETUNE_MODELS_CLAIM"] == "team-models"
    assert env["KUBETUNE_DATA_CLAIM"] == "team-data"


def test_ingress_with_tls() -> None:
    items = docs(
        helm_template(
            "--set", "api.ingress.enabled=true", "--set", "api.ingress.host=ft.example.org"
        )
    )
    ingress = find(items, "Ingress", "kubetune-api")
    assert ingress["spec"]["tls"] == [
        {"hosts": ["ft.example.org"], "secretName": "kubetune-api-tls"}
    ]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "kubetune-api", "port": {"name": "http"}}


def test_api_can_be_disabled() -> None:
    items = docs(helm_template("--set", "api.enabled=false"))
    assert not [d for d in items if d["metadata"]["name"].startswith("kubetune-api")]
    assert find(items, "Deployment", "kubetune-operator")


# ---- one source: CRDs and manifests ----------------------------------------------------------


def test_crds_in_sync_with_the_models() -> None:
    chart_crd = CHART / "crds" / "kubetune.io_finetunejobs.yaml"
    assert (
        chart_crd.read_text() == (MANIFESTS / "crds" / "kubetune.io_finetunejobs.yaml").read_text()
    )
    run(
        str(Path(__import__("sys").executable)),
        "-m",
        "kubetune_crd.generate",
        "--check",
        cwd=str(REPO),
    )


def test_manifests_are_rendered_from_the_chart() -> None:
    proc = run("bash", str(REPO / "hack" / "render-manifests.sh"), "--check", check=False)
    assert proc.returncode == 0, (
        f"run hack/render-manifests.sh\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
    )


def test_kustomization_installs_everything(objects: dict[str, list[Doc]]) -> None:
    kinds = {d["kind"] for d in objects["kustomize"]}
    assert {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "ConfigMap",
        "NetworkPolicy",
        "PersistentVolumeClaim",
    } <= kinds
    for d in objects["kustomize"]:
        labels = d["metadata"].get("labels") or {}
        assert "helm.sh/chart" not in labels
        if d["kind"] not in (
            "Namespace",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
        ):
            assert d["metadata"]["namespace"] == "kubetune", d["metadata"]["name"]


# ---- samples ------------------------------------------------------------------------------------


def test_samples_are_valid_finetunejobs(tmp_path: Path) -> None:
    from kubetune_crd.spec import FineTuneJobSpec

    samples = sorted((MANIFESTS / "samples").glob("*.yaml"))
    names = {p.name for p in samples}
    assert {"tiny-finetunejob.yaml", "phi-lora-gpu-pvc.yaml", "s3-output.yaml"} <= names
    seen: dict[str, Doc] = {}
    for path in samples:
        for d in docs(path.read_text()):
            if d["kind"] == "FineTuneJob":
                FineTuneJobSpec.model_validate(d["spec"])
                assert len(d["metadata"]["name"]) <= 52
                seen[path.name] = d
            else:
                assert kubernetes_validate(yaml.safe_dump(d), tmp_path, path.stem) == []
    assert seen["tiny-finetunejob.yaml"]["spec"]["model"] == "tiny"
    assert seen["tiny-finetunejob.yaml"]["spec"]["resources"]["gpus"] == 0
    phi = seen["phi-lora-gpu-pvc.yaml"]["spec"]
    assert (phi["model"], phi["method"]["type"], phi["resources"]["gpus"]) == ("phi", "lora", 1)
    assert phi["output"]["pvc"]["claimName"] == "kubetune-models"
    s3 = seen["s3-output.yaml"]["spec"]["output"]["s3"]
    assert s3["uri"].startswith("s3://")
    assert s3["credentialsSecretRef"]["name"] == "kubetune-s3-credentials"


# ---- the chart and the components' own code agree ------------------------------------------


def _normalise(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["cluster-wide", "namespaced"])
def test_operator_rbac_is_exactly_kubetune_operator_rbac(values: Path | None) -> None:
    from kubetune_operator import rbac

    args = ["--values", str(values)] if values else []
    items = docs(helm_template(*args, namespace="kubetune-system"))
    namespaced = _normalise(rbac.NAMESPACED_RULES)
    cluster = _normalise(rbac.CLUSTER_RULES)
    operator_roles = [
        d
        for d in items
        if d["kind"] in ("Role", "ClusterRole")
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    cluster_roles = [d for d in operator_roles if d["kind"] == "ClusterRole"]
    roles = [d for d in operator_roles if d["kind"] == "Role"]
    assert len(cluster_roles) == 1
    if values is None:
        assert roles == []
        assert _normalise(cluster_roles[0]["rules"]) == namespaced | cluster
    else:
        assert _normalise(cluster_roles[0]["rules"]) == cluster
        assert {r["metadata"]["namespace"] for r in roles} == {
            "kubetune-system",
            "team-a",
            "team-b",
        }
        for role in roles:
            assert _normalise(role["rules"]) == namespaced


# Operator variables the chart sets that OperatorSettings does not read (yet). Keep it
# empty: a chart value the operator silently ignores is a bug; the test below enforces it.
PENDING_OPERATOR_ENV: set[str] = set()


def _env_names(settings_cls: Any) -> set[str]:
    """Every environment variable a pydantic-settings class reads."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names |= {str(c).upper() for c in choices}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def _container_env(items: list[Doc], deployment: str) -> dict[str, Any]:
    spec = find(items, "Deployment", deployment)["spec"]["template"]["spec"]
    return {e["name"]: e for e in spec["containers"][0]["env"]}


def _settings_from_env(
    settings_cls: Any, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The settings object a container with this env would build."""
    import os

    for name in list(os.environ):
        if name.startswith("KUBETUNE_"):
            monkeypatch.delenv(name)
    for name, item in env.items():
        monkeypatch.setenv(name, item["value"])
    return settings_cls()


def test_operator_env_names_are_operator_settings(
    objects: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubetune_operator.settings import OperatorSettings

    known = _env_names(OperatorSettings)
    env = _container_env(objects["full"], "ft-operator")
    ours = {n for n in env if n.startswith("KUBETUNE_")} - {"KUBETUNE_WORKERS"}  # extraEnv
    assert ours - known - PENDING_OPERATOR_ENV == set()
    assert PENDING_OPERATOR_ENV & known == set(), "now supported: drop it from PENDING_OPERATOR_ENV"
    settings = _settings_from_env(OperatorSettings, env, monkeypatch)
    assert settings.namespaces == ["kubetune-system", "team-a", "team-b"]
    assert (
        settings.progress_base_url() == "http://ft-operator.kubetune-system.svc.cluster.local:9443"
    )
    assert settings.models_claim == "ft-models"
    assert settings.data_claim == "shared-datasets"
    assert settings.trainer_service_account == "kubetune-trainer"
    assert settings.trainer_image.endswith(
        "@sha256:0000000000000000000000000000000000000000000000000000000000000002"
    )
    # trainer pod defaults (values.yaml `trainer.*`, `s3.*`) reach the operator typed
    assert settings.gpu_resource_name == "nvidia.com/gpu"
    assert settings.trainer_default_gpus == 2
    assert (settings.trainer_default_cpu, settings.trainer_default_memory) == ("8", "64Gi")
    assert settings.trainer_node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert settings.trainer_tolerations
    assert settings.default_queue_name == "gpu-queue"
    assert (settings.s3_endpoint_url, settings.s3_region) == (
        "https://minio.example.com",
        "eu-west-1",
    )
    default = _settings_from_env(
        OperatorSettings, _container_env(objects["default"], "kubetune-operator"), monkeypatch
    )
    assert default.default_queue_name is None  # "" renders as unset
    assert default.s3_endpoint_url is None and default.trainer_node_selector == {}
    assert [t.to_k8s() for t in default.trainer_tolerations] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_api_env_names_are_api_settings(
    objects: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubetune_api.settings import Settings

    known = _env_names(Settings)
    for name in ("default", "full", "kustomize"):
        items = objects[name]
        api = next(
            d for d in by_kind(items, "Deployment") if d["metadata"]["name"].endswith("-api")
        )
        env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
        ours = {n for n in env if n.startswith("KUBETUNE_")} - {"KUBETUNE_API_ACCESS_LOG"}
        assert ours - known == set(), name
    env = _container_env(objects["default"], "kubetune-api")
    settings = _settings_from_env(Settings, env, monkeypatch)
    assert (settings.host, settings.port) == ("0.0.0.0", 5002)
    assert settings.auth_disabled is False
    assert settings.api_keys_secret == "kubetune-api-keys"
    assert settings.keys_namespace == "kubetune"
    assert settings.watch_cluster_wide is False
    assert settings.namespace == "kubetune"
    assert str(settings.catalog_file) == "/etc/kubetune/catalog/catalog.yaml"
    assert settings.models_claim == "kubetune-models"
    full = _settings_from_env(Settings, _container_env(objects["full"], "ft-api"), monkeypatch)
    assert full.watch_cluster_wide is True
    assert full.api_keys_secret == "api-keys"


def test_catalog_configmap_loads_and_matches_the_packaged_default(
    objects: dict[str, list[Doc]], tmp_path: Path
) -> None:
    from kubetune_crd.catalog import load_catalog

    for name, configmap in (("default", "kubetune-catalog"), ("full", "ft-catalog")):
        data = find(objects[name], "ConfigMap", configmap)["data"]["catalog.yaml"]
        path = tmp_path / f"{name}.yaml"
        path.write_text(data)
        catalog = load_catalog(path)
        if name == "default":
            assert catalog == load_catalog(None)
            assert catalog.resolve("tiny")[0] == "/var/lib/kubetune/models/base/kubetune-tiny"
        else:
            assert sorted(catalog.aliases) == ["llama3", "phi"]
