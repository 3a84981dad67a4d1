"""The pure Job builder: names, labels, security, volumes, capabilities; valid for 1.30."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubetune_crd.catalog import load_catalog
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.trainer_contract import TrainerRunConfig
from kubetune_operator.capabilities import ServerCapabilities, capabilities_for, parse_version
from kubetune_operator.job_builder import build_job
from kubetune_operator.run_plan import plan_for
from kubetune_operator.settings import OperatorSettings

CURRENT = ServerCapabilities(version=(1, 30), pod_failure_policy=True, suspend=True)
V120 = ServerCapabilities(version=(1, 20), pod_failure_policy=False, suspend=False)


def ftj(spec: dict[str, Any] | None = None, name: str = "ft-20240115-103045-abc123") -> FineTuneJob:
    body = {"model": "tiny", "dataset": {"url": "data/frigo_training.csv"}, **(spec or {})}
    return FineTuneJob.from_k8s(
        {
            "metadata": {"name": name, "namespace": "team-a", "uid": "uid-1", "generation": 1},
            "spec": body,
        }
    )


def build(obj: FineTuneJob, caps: ServerCapabilities = CURRENT, **settings: Any) -> dict[str, Any]:
    return build_job(
        obj, OperatorSettings(**settings), caps, load_catalog(), "http://op.kubetune.svc:8081"
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def run_config(job: dict[str, Any]) -> TrainerRunConfig:
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    return TrainerRunConfig.model_validate_json(env["KUBETUNE_RUN_CONFIG"])


def test_identity_owner_and_labels() -> None:
    job = build(ftj())
    meta = job["metadata"]
    assert meta["name"] == "ft-20240115-103045-abc123" and meta["namespace"] == "team-a"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubetune"
    assert meta["labels"]["kubetune.io/finetunejob"] == meta["name"]
    owner = meta["ownerReferences"][0]
    assert owner["kind"] == "FineTuneJob" and owner["uid"] == "uid-1" and owner["controller"]
    assert job["spec"]["template"]["metadata"]["labels"]["kubetune.io/finetunejob"] == meta["name"]
    assert build(ftj()) == job  # deterministic


def test_job_spec_bounds_and_no_ttl_at_creation() -> None:
    job = build(ftj({"maxRetries": 7, "deadlineSeconds": 3600}), max_backoff_limit=5)
    spec = job["spec"]
    assert spec["backoffLimit"] == 5
    assert spec["activeDeadlineSeconds"] == 3600
    assert "ttlSecondsAfterFinished" not in spec  # set only once the status is copied
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_restricted_security_context_and_no_api_token() -> None:
    job = build(ftj())
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(job)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container(job)["volumeMounts"]}
    assert {"/tmp", "/var/cache/kubetune"} <= mounts  # writable emptyDirs


def test_command_image_and_gpu_resources() -> None:
    job = build(
        ftj({"resources": {"gpus": 2, "cpu": "4", "memory": "16Gi"}}),
        trainer_image="registry.local/trainer:1",
        trainer_command=["python", "fake.py"],
    )
    c = container(job)
    assert c["image"] == "registry.local/trainer:1"
    assert c["command"] == ["python", "fake.py"]
    assert c["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert c["resources"]["requests"] == c["resources"]["limits"]
    assert container(build(ftj()))["command"] == ["kubetune-trainer"]
    assert "resources" not in container(build(ftj({"resources": {"gpus": 0}})))


def test_gpu_resource_name_setting() -> None:
    c = container(build(ftj({"resources": {"gpus": 2}}), gpu_resource_name="amd.com/gpu"))
    assert c["resources"]["limits"] == {"amd.com/gpu": "2"}
    assert c["resources"]["requests"] == {"amd.com/gpu": "2"}


def test_default_gpus_apply_only_when_the_stored_spec_has_none() -> None:
    # The CRD leaves spec.resources.gpus unset when the user gives none: the operator decides.
    assert container(build(ftj()))["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "resources" not in container(build(ftj(), trainer_default_gpus=0))
    limits = container(build(ftj({"resources": {"cpu": "2"}}), trainer_default_gpus=4))[
        "resources"
    ]["limits"]
    assert limits == {"cpu": "2", "nvidia.com/gpu": "4"}
    # An explicit count, even 1 or 0, wins over the default.
    for gpus in (0, 1, 3):
        c = container(build(ftj({"resources": {"gpus": gpus}}), trainer_default_gpus=2))
        assert c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == (
            str(gpus) if gpus else None
        )


def test_default_cpu_and_memory_unless_the_spec_sets_them() -> None:
    defaults = {"trainer_default_cpu": "4", "trainer_default_memory": "32Gi"}
    c = container(build(ftj({"resources": {"gpus": 0}}), **defaults))
    assert c["resources"]["limits"] == {"cpu": "4", "memory": "32Gi"}
    assert c["resources"]["requests"] == c["resources"]["limits"]
    c = container(build(ftj({"resources": {"gpus": 1, "memory": "8Gi"}}), **defaults))
    assert c["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
    c = container(build(ftj({"resources": {"cpu": "500m", "memory": "1Gi"}}), **defaults))
    assert c["resources"]["limits"]["cpu"] == "500m"
    assert c["resources"]["limits"]["memory"] == "1Gi"


def test_node_selector_merges_operator_defaults_and_spec() -> None:
    settings = {"trainer_node_selector": {"pool": "gpu", "zone": "a"}}
    pod = build(ftj(), **settings)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu", "zone": "a"}
    spec = {"scheduling": {"nodeSelector": {"zone": "b", "gpu": "a100"}}}
    pod = build(ftj(spec), **settings)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu", "zone": "b", "gpu": "a100"}  # spec wins
    assert "nodeSelector" not in build(ftj())["spec"]["template"]["spec"]


def test_tolerations_are_operator_defaults_plus_the_spec() -> None:
    gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    spot = {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute"}
    settings = {"trainer_tolerations": [gpu]}
    pod = build(ftj(), **settings)["spec"]["template"]["spec"]
    assert pod["tolerations"] == [gpu]
    spec = {"scheduling": {"tolerations": [spot, gpu]}}
    pod = build(ftj(spec), **settings)["spec"]["template"]["spec"]
    assert pod["tolerations"] == [gpu, spot]  # defaults first, an identical one once
    assert "tolerations" not in build(ftj())["spec"]["template"]["spec"]


def test_default_queue_name_when_the_spec_names_none() -> None:
    job = build(ftj(), default_queue_name="team-queue")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    assert job["spec"]["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == (
        "team-queue"
    )
    assert job["spec"]["suspend"] is True
    own = build(ftj({"scheduling": {"queueName": "mine"}}), default_queue_name="team-queue")
    assert own["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "mine"
    assert "suspend" not in build(ftj(), V120, default_queue_name="team-queue")["spec"]
    plain = build(ftj())
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    assert "suspend" not in plain["spec"]


def _env_list(job: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(e["name"], e.get("value", e.get("valueFrom"))) for e in container(job)["env"]]


def test_s3_endpoint_and_region_defaults() -> None:
    s3 = {"s3_endpoint_url": "http://minio.storage:9000", "s3_region": "eu-west-3"}
    # no S3 anywhere: no AWS variables
    assert not [n for n, _ in _env_list(build(ftj(), **s3)) if n.startswith("AWS_")]
    # s3 dataset without a Secret: the defaults as plain values
    env = dict(_env_list(build(ftj({"dataset": {"url": "s3://bkt/train.csv"}}), **s3)))
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage:9000"
    assert env["AWS_REGION"] == "eu-west-3"
    # S3 output with a Secret: the defaults come first, so the Secret's optional keys win
    spec = {"output": {"s3": {"uri": "s3://models/ft", "credentialsSecretRef": {"name": "out"}}}}
    names = [n for n, _ in _env_list(build(ftj(spec), **s3))]
    assert names.index("AWS_ENDPOINT_URL") < names.index("AWS_ACCESS_KEY_ID")
    assert names.count("AWS_ENDPOINT_URL") == 2 and names.count("AWS_REGION") == 2
    last = {n: v for n, v in _env_list(build(ftj(spec), **s3))}
    assert last["AWS_ENDPOINT_URL"]["secretKeyRef"] == {
        "name": "out",
        "key": "AWS_ENDPOINT_URL",
        "optional": True,
    }
    # the spec's own endpoint/region win: no operator default at all
    own = {
        "output": {
            "s3": {"uri": "s3://models/ft", "endpointUrl": "https://s3.example", "region": "x"}
        }
    }
    env_items = _env_list(build(ftj(own), **s3))
    assert ("AWS_ENDPOINT_URL", "https://s3.example") in env_items
    assert ("AWS_REGION", "x") in env_items
    assert "http://minio.storage:9000" not in [v for _, v in env_items]
    assert "eu-west-3" not in [v for _, v in env_items]
    # a separate dataset Secret gets the defaults as DATASET_AWS_* too
    both = {
        "dataset": {"url": "s3://bkt/t.csv", "credentialsSecretRef": {"name": "data"}},
        "output": {"s3": {"uri": "s3://models/ft", "credentialsSecretRef": {"name": "out"}}},
    }
    env = dict(_env_list(build(ftj(both), s3_endpoint_url="http://minio:9000")))
    assert env["DATASET_AWS_ENDPOINT_URL"]["secretKeyRef"]["name"] == "data"
    names = [n for n, _ in _env_list(build(ftj(both), s3_endpoint_url="http://minio:9000"))]
    assert names.count("DATASET_AWS_ENDPOINT_URL") == 2
    assert "DATASET_AWS_REGION" in names  # from the Secret only (no region default)
    assert names.count("DATASET_AWS_REGION") == 1


def test_pod_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the Helm chart sets, as the chart renders them."""
    monkeypatch.setenv("KUBETUNE_GPU_RESOURCE_NAME", "amd.com/gpu")
    monkeypatch.setenv("KUBETUNE_TRAINER_DEFAULT_GPUS", "2")
    monkeypatch.setenv("KUBETUNE_TRAINER_DEFAULT_CPU", "4")
    monkeypatch.setenv("KUBETUNE_TRAINER_DEFAULT_MEMORY", "32Gi")
    monkeypatch.setenv("KUBETUNE_TRAINER_NODE_SELECTOR", '{"pool": "gpu"}')
    monkeypatch.setenv(
        "KUBETUNE_TRAINER_TOLERATIONS",
        '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule",'
        ' "tolerationSeconds": null}]',
    )
    monkeypatch.setenv("KUBETUNE_DEFAULT_QUEUE_NAME", "")
    monkeypatch.setenv("KUBETUNE_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("KUBETUNE_S3_REGION", "")
    s = OperatorSettings()
    assert s.gpu_resource_name == "amd.com/gpu" and s.trainer_default_gpus == 2
    assert (s.trainer_default_cpu, s.trainer_default_memory) == ("4", "32Gi")
    assert s.trainer_node_selector == {"pool": "gpu"}
    assert [t.to_k8s() for t in s.trainer_tolerations] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert s.default_queue_name is None and s.s3_region is None  # "" is unset
    assert s.s3_endpoint_url == "http://minio:9000"
    monkeypatch.setenv("KUBETUNE_TRAINER_DEFAULT_CPU", "four")
    with pytest.raises(ValueError, match="trainer_default_cpu"):
        OperatorSettings()


def test_run_config_and_volumes_for_default_pvc_output() -> None:
    job = build(ftj(), models_claim="team-models")
    cfg = run_config(job)
    # The trainer gets the output the operator resolved, so it reports the right claim.
    assert cfg.spec.output is not None and cfg.spec.output.pvc is not None
    assert cfg.spec.output.pvc.claim_name == "team-models"
    job = build(ftj())
    cfg = run_config(job)
    assert cfg.base_model == "/var/lib/kubetune/models/base/kubetune-tiny"
    assert cfg.base_model_alias == "tiny"
    # an API-style name: the original API's tail (kubetune_crd.names.default_model_name)
    assert cfg.model_name == "tiny-finetuned-20240115_103045-abc123"
    assert cfg.output_dir == "/var/lib/kubetune/models/models"
    assert cfg.data_root == "/var/lib/kubetune/datasets"
    assert cfg.checkpoint_dir == (
        "/var/lib/kubetune/models/.checkpoints/team-a/ft-20240115-103045-abc123"
    )
    assert cfg.progress_url == (
        "http://op.kubetune.svc:8081/progress/team-a/ft-20240115-103045-abc123"
    )
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "kubetune-models"
    assert volumes["data"]["persistentVolumeClaim"] == {
        "claimName": "kubetune-data",
        "readOnly": True,
    }
    token = volumes["progress-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "kubetune-progress"
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["data"]["readOnly"] is True
    plan = plan_for(ftj(), OperatorSettings(), load_catalog(), None)
    assert plan.expected_model.path == "models/tiny-finetuned-20240115_103045-abc123"
    assert plan.expected_model.uri == (
        "pvc://kubetune-models/models/tiny-finetuned-20240115_103045-abc123"
    )
    assert plan.expected_model.format == "peft-lora"


def test_no_progress_url_means_no_token_at_all() -> None:
    job = build_job(ftj(), OperatorSettings(), CURRENT, load_catalog(), None)
    assert "progress-token" not in {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}
    assert run_config(job).progress_url is None


def test_other_claim_output_and_https_dataset() -> None:
    spec = {
        "dataset": {"url": "https://example.com/d.jsonl"},
        "output": {"pvc": {"claimName": "results", "path": "out/v1"}, "modelName": "mine"},
    }
    job = build(ftj(spec))
    cfg = run_config(job)
    assert cfg.output_dir == "/var/lib/kubetune/output/out/v1"
    assert cfg.model_name == "mine"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["output"]["persistentVolumeClaim"]["claimName"] == "results"
    assert "data" not in volumes  # no data claim needed for an https dataset


def test_s3_output_credentials_from_secret_only() -> None:
    spec = {
        "dataset": {"url": "s3://bucket-a/train.csv", "credentialsSecretRef": {"name": "data-s3"}},
        "output": {"s3": {"uri": "s3://models-b/ft", "credentialsSecretRef": {"name": "out-s3"}}},
    }
    job = build(ftj(spec))
    env = {e["name"]: e for e in container(job)["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "out-s3"
    assert env["DATASET_AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "data-s3"
    assert env["AWS_REGION"]["valueFrom"]["secretKeyRef"]["optional"] is True
    cfg = run_config(job)
    assert cfg.output_uri == "s3://models-b/ft" and cfg.output_dir is None
    assert "AWS_SECRET_ACCESS_KEY" not in env["KUBETUNE_RUN_CONFIG"]["value"]


def test_mlflow_credentials_come_from_the_secret_only() -> None:
    tracking = {
        "mlflow": {
            "trackingUri": "http://mlflow.mlops:5000",
            "credentialsSecretRef": {"name": "mlflow-creds"},
        },
        "tensorboard": True,
    }
    job = build(ftj({"tracking": tracking}))
    env = {e["name"]: e for e in container(job)["env"]}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "mlflow-creds", "key": key, "optional": True}
    cfg = run_config(job)
    assert cfg.spec.tracking is not None and cfg.spec.tracking.tensorboard
    untracked = {e["name"] for e in container(build(ftj()))["env"]}
    assert not any(name.startswith("MLFLOW_") for name in untracked)


def test_capabilities_pod_failure_policy_and_suspend() -> None:
    queued = ftj({"scheduling": {"queueName": "gpu-queue", "priorityClassName": "high"}})
    new = build(queued, CURRENT)
    rules = new["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [42]
    assert rules[1] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert new["spec"]["suspend"] is True
    assert new["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert new["spec"]["template"]["spec"]["priorityClassName"] == "high"
    old = build(queued, V120)
    assert "podFailurePolicy" not in old["spec"] and "suspend" not in old["spec"]


def test_capabilities_from_version() -> None:
    s = OperatorSettings()
    assert parse_version({"major": "1", "minor": "27+"}) == (1, 27)
    assert parse_version({"gitVersion": "v1.20.2"}) == (1, 20)
    caps = capabilities_for({"major": "1", "minor": "20", "gitVersion": "v1.20.2"}, s)
    assert not caps.pod_failure_policy and not caps.suspend
    caps = capabilities_for({"major": "1", "minor": "26"}, s)
    assert caps.pod_failure_policy and caps.suspend
    forced = OperatorSettings(use_pod_failure_policy="false", use_suspend="true")
    caps = capabilities_for({"major": "1", "minor": "30"}, forced)
    assert not caps.pod_failure_policy and caps.suspend


def test_model_names() -> None:
    def model_name(model: str) -> str:
        plan = plan_for(ftj({"model": model}, name="j"), OperatorSettings(), load_catalog(), None)
        return plan.run_config.model_name

    assert model_name("microsoft/phi-2") == "phi-2-finetuned-j"
    assert model_name("phi") == "phi-finetuned-j"  # a catalog alias names the model
    assert model_name("org/m@rev:x") == "m-rev-x-finetuned-j"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETUNE_TRAINER_COMMAND", '["python", "t.py"]')
    monkeypatch.setenv("KUBETUNE_NAMESPACES", '["a", "b"]')
    monkeypatch.setenv("KUBETUNE_USE_SUSPEND", "false")
    monkeypatch.setenv("KUBETUNE_PROGRESS_PORT", "9000")
    s = OperatorSettings()
    assert s.trainer_command == ["python", "t.py"] and s.namespaces == ["a", "b"]
    assert s.use_suspend == "false"
    assert s.progress_base_url() == "http://127.0.0.1:9000"
    assert OperatorSettings(progress_url="http://x:1/").progress_base_url() == "http://x:1"
    assert OperatorSettings(progress_enabled=False).progress_base_url() is None


@pytest.mark.parametrize("caps", [CURRENT, V120], ids=["1.30-features", "1.20-features"])
@pytest.mark.parametrize(
    "spec",
    [
        {},
        {
            "resources": {"gpus": 4, "cpu": "8", "memory": "64Gi"},
            "scheduling": {
                "queueName": "q",
                "nodeSelector": {"gpu": "a100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            },
            "output": {"s3": {"uri": "s3://bkt/x", "credentialsSecretRef": {"name": "s"}}},
        },
    ],
    ids=["defaults", "everything"],
)
def test_job_validates_against_kubernetes_1_30_strict(
    caps: ServerCapabilities, spec: dict[str, Any]
) -> None:
    job = build(ftj(spec), caps)
    kubernetes_validate.validate(job, "1.30", strict=True)
    with_defaults = build(
        ftj(spec),
        caps,
        gpu_resource_name="amd.com/gpu",
        trainer_default_cpu="4",
        trainer_default_memory="32Gi",
        trainer_node_selector={"pool": "gpu"},
        trainer_tolerations=[{"key": "amd.com/gpu", "operator": "Exists"}],
        default_queue_name="team",
        s3_endpoint_url="http://minio:9000",
        s3_region="eu-west-3",
    )
    kubernetes_validate.validate(with_defaults, "1.30", strict=True)


def test_kubernetes_validate_cli_strict(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(build(ftj({"scheduling": {"queueName": "q"}}))))
    cli = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run(
        [str(cli), "--strict", "-k", "1.30.0", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_run_config_is_valid_json_for_the_trainer() -> None:
    env = {e["name"]: e.get("value") for e in container(build(ftj()))["env"]}
    data = json.loads(env["KUBETUNE_RUN_CONFIG"])
    assert data["jobName"] == "ft-20240115-103045-abc123" and data["spec"]["model"] == "tiny"


def test_workers_checkpoint_within_the_grace_period() -> None:
    """torchrun's launcher waits for its workers' SIGTERM checkpoints a margin below the pod's
    grace period, so it still writes the termination message before the kubelet's SIGKILL."""
    job = build(ftj(), termination_grace_seconds=200)
    env = dict(_env_list(job))
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 200
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "185"
    assert (
        dict(_env_list(build(ftj(), termination_grace_seconds=5)))["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]
        == "1"
    )
