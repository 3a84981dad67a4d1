"""The CPU pre-flight: its Job manifest (no GPU, restricted, owned) and how its outcome shapes
the status (Validating, Failed with the trainer's line, Passed with the report)."""

from __future__ import annotations

import json
from typing import Any

from kubetune_crd import names
from kubetune_crd.catalog import load_catalog
from kubetune_crd.trainer_contract import TrainerRunConfig
from kubetune_operator.informer_cache import InformerCache
from kubetune_operator.preflight import read_preflight
from kubetune_operator.preflight_builder import make_preflight_job
from kubetune_operator.run_plan import plan_for
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.status_derivation import derive_status
from kubetune_operator.transitions import transitions
from test_operator_job_builder import CURRENT, V120
from test_operator_job_builder import ftj as ftj_for_builder
from test_operator_status_derivation import NOW, cond, ftj, job, pod, terminated


def preflight(spec: dict[str, Any] | None = None, **settings: Any) -> dict[str, Any]:
    obj = ftj_for_builder(spec)
    ours = OperatorSettings(**settings)
    plan = plan_for(obj, ours, load_catalog(), "http://op.kubetune.svc:8081")
    return make_preflight_job(obj, plan, ours, CURRENT)


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return dict(manifest["spec"]["template"]["spec"]["containers"][0])


def env(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container(manifest)["env"]}


def test_preflight_job_is_named_labelled_and_owned_apart_from_the_training_job() -> None:
    manifest = preflight()
    meta = manifest["metadata"]
    assert meta["name"] == "ft-20240115-103045-abc123-preflight"
    assert len(names.preflight_job_name("x" * 53)) == 63  # the longest name still a label
    assert meta["labels"] == {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_FINETUNEJOB: "ft-20240115-103045-abc123",
        names.LABEL_COMPONENT: names.COMPONENT_PREFLIGHT,
    }
    assert manifest["spec"]["template"]["metadata"]["labels"] == meta["labels"]
    owner = meta["ownerReferences"][0]
    assert owner["kind"] == "FineTuneJob" and owner["uid"] == "uid-1" and owner["controller"]
    assert manifest == preflight()  # deterministic


def test_preflight_requests_no_gpu_only_modest_cpu_and_memory() -> None:
    c = container(preflight({"resources": {"gpus": 8, "cpu": "32", "memory": "200Gi"}}))
    assert c["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "4Gi"},
    }
    assert not any("gpu" in key for part in c["resources"].values() for key in part)
    custom = container(preflight(preflight_cpu="", preflight_memory="1Gi"))
    assert custom["resources"]["requests"] == {"memory": "1Gi"}


def test_preflight_runs_validate_only_for_the_training_device_and_shape() -> None:
    manifest = preflight({"resources": {"gpus": 4, "nodes": 2}}, gpu_memory_gib=80)
    c = container(manifest)
    assert c["command"] == ["kubetune-trainer"]
    assert c["args"] == ["--validate-only", "--target-device", "cuda", "--gpu-memory-gib", "80"]
    variables = env(manifest)
    # The report plans for the training run's 2 x 4 processes; the pod itself is one process.
    assert variables[names.ENV_NNODES] == "2" and variables[names.ENV_NPROC_PER_NODE] == "4"
    assert variables[names.ENV_NODE_RANK] == "0" and variables[names.ENV_MASTER_ADDR] == "127.0.0.1"
    config = TrainerRunConfig.model_validate_json(variables["KUBETUNE_RUN_CONFIG"])
    assert config.progress_url is None and config.progress_token_path is None
    spec = manifest["spec"]
    assert "completionMode" not in spec and "suspend" not in spec
    assert spec["template"]["spec"].get("subdomain") is None
    cpu_only = container(preflight({"resources": {"gpus": 0}}, gpu_memory_gib=80))
    assert cpu_only["args"] == ["--validate-only", "--target-device", "cpu"]


def test_preflight_pod_is_restricted_and_has_no_token_or_queue() -> None:
    manifest = preflight({"scheduling": {"queueName": "gpus"}})
    pod_spec = manifest["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    sc = container(manifest)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"] for v in pod_spec["volumes"]}
    assert names.VOLUME_PROGRESS_TOKEN not in volumes
    assert names.LABEL_KUEUE_QUEUE not in manifest["metadata"]["labels"]
    assert manifest["spec"]["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    assert manifest["spec"]["backoffLimit"] == 1
    assert manifest["spec"]["activeDeadlineSeconds"] == 900


def test_the_cache_keeps_preflight_jobs_apart() -> None:
    cache = InformerCache()
    training = {"metadata": {"name": "j", "namespace": "ns", "uid": "t", "labels": labels("j")}}
    pre = preflight()
    pre["metadata"]["uid"] = "p"
    assert cache.store_job(training) == ("ns", "j")
    key = cache.store_job(pre)
    assert key == ("team-a", "ft-20240115-103045-abc123")
    assert cache.jobs == {("ns", "j"): training}
    assert cache.preflight_jobs[key]["metadata"]["uid"] == "p"
    cache.store_job(pre, deleted=True)
    assert cache.preflight_jobs == {} and ("ns", "j") in cache.jobs


def labels(name: str) -> dict[str, str]:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_FINETUNEJOB: name,
        names.LABEL_COMPONENT: names.COMPONENT_TRAINER,
    }


# --- the outcome -> the status ---------------------------------------------------------------


def pre_job(*conditions: dict[str, Any], **status: Any) -> dict[str, Any]:
    manifest = job(*conditions)
    manifest["metadata"] = {"name": "j-preflight", "uid": "pre-uid"}
    manifest["status"].update(status)
    return manifest


def result_message(body: dict[str, Any]) -> str:
    return json.dumps(body)


def test_validating_while_the_preflight_runs() -> None:
    view = read_preflight(pre_job(active=1), [pod("j-preflight-x", "Running", state={})])
    derived = derive_status(ftj(), None, [], now=NOW, preflight=view)
    st = derived.status
    assert st.phase == "Validating" and st.pending is None
    assert st.preflight is not None and st.preflight.outcome == "Validating"
    assert st.preflight.job_name == "j-preflight"
    validated = next(c for c in st.conditions if c.type == "Validated")
    assert (validated.status, validated.reason) == ("False", "Validating")
    assert [t.reason for t in derived.transitions] == ["Validating"]


def test_bad_dataset_fails_in_preflight_with_the_trainer_line() -> None:
    message = "dataset data/x.csv: line 7: the completion is empty"
    failed = pod(
        "j-preflight-x",
        "Failed",
        state=terminated(42, message=result_message({"outcome": "bad_input", "message": message})),
    )
    for pre in (pre_job(cond("Failed", "PodFailurePolicy")), pre_job(failed=1)):
        view = read_preflight(pre, [failed])
        st = derive_status(ftj(), None, [], now=NOW, preflight=view).status
        assert st.phase == "Failed" and st.failure is not None
        assert st.failure.reason == "BadInput" and "line 7" in st.failure.message
        assert st.failure.message.startswith("pre-flight: ")
        assert st.preflight is not None and st.preflight.outcome == "Failed"
        by_type = {c.type: c for c in st.conditions}
        assert by_type["Validated"].status == "False" and by_type["Validated"].reason == "BadInput"
        assert by_type["JobCreated"].reason == "PreflightFailed"
        assert st.job_name is None


def test_other_preflight_failures_keep_their_reason() -> None:
    deadline = pre_job(cond("Failed", "DeadlineExceeded", "Job was active longer than 900s"))
    st = derive_status(ftj(), None, [], now=NOW, preflight=read_preflight(deadline, [])).status
    assert st.phase == "Failed" and st.failure is not None
    assert st.failure.reason == "DeadlineExceeded"
    # One crash with a retry left: still validating.
    crashed = pod("j-preflight-x", "Failed", state=terminated(1))
    view = read_preflight(pre_job(failed=1), [crashed])
    assert derive_status(ftj(), None, [], now=NOW, preflight=view).status.phase == "Validating"


def test_passed_preflight_report_goes_to_the_status_and_training_proceeds() -> None:
    report = {"rows": 240, "trainTokens": 9000, "totalSteps": 12, "etaSeconds": 3.5}
    body = {"outcome": "succeeded", "message": "valid: 240 rows", "validation": report}
    done = pod("j-preflight-x", "Succeeded", state=terminated(0, "Completed", json.dumps(body)))
    complete = pre_job(
        cond("Complete"), startTime="2026-01-02T03:00:00Z", completionTime="2026-01-02T03:00:04Z"
    )
    view = read_preflight(complete, [done])
    assert view.passed
    derived = derive_status(ftj(), job(active=1), [], now=NOW, preflight=view)
    st = derived.status
    assert st.phase == "Pending" and st.job_name == "j"
    pre = st.preflight
    assert pre is not None and pre.outcome == "Passed" and pre.rows == 240
    assert (pre.train_tokens, pre.total_steps, pre.eta_seconds) == (9000, 12, 3.5)
    assert pre.duration_seconds == 4.0 and pre.message == "valid: 240 rows"
    validated = next(c for c in st.conditions if c.type == "Validated")
    assert (validated.status, validated.reason) == ("True", "Passed")
    assert "PreflightPassed" in [t.reason for t in derived.transitions]
    # The pre-flight Job deleted later: the report stays (the status keeps it).
    later = derive_status(ftj(st.to_k8s()), job(active=1), [], now=NOW).status
    assert later.preflight == pre
    assert transitions(st, later) == []


def test_cancel_during_validating() -> None:
    view = read_preflight(pre_job(active=1), [])
    st = derive_status(ftj(cancel=True), None, [], now=NOW, preflight=view).status
    assert st.phase == "Cancelled"


def test_v120_servers_get_no_pod_failure_policy() -> None:
    obj = ftj_for_builder(None)
    ours = OperatorSettings()
    plan = plan_for(obj, ours, load_catalog(), None)
    assert "podFailurePolicy" not in make_preflight_job(obj, plan, ours, V120)["spec"]


def test_preflight_job_validates_against_kubernetes_1_30_strict() -> None:
    import kubernetes_validate

    s3 = {"dataset": {"url": "s3://bucket/data.csv", "credentialsSecretRef": {"name": "s3"}}}
    for spec in (None, {"resources": {"gpus": 2, "nodes": 2}}, s3):
        kubernetes_validate.validate(preflight(spec, gpu_memory_gib=40), "1.30", strict=True)


def test_settings_from_the_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("KUBETUNE_PREFLIGHT", "false")
    monkeypatch.setenv("KUBETUNE_GPU_MEMORY_GIB", "")  # the chart's empty value: unknown
    monkeypatch.setenv("KUBETUNE_PREFLIGHT_CPU", "")
    s = OperatorSettings()
    assert s.preflight is False and s.gpu_memory_gib is None and s.preflight_cpu is None
    monkeypatch.setenv("KUBETUNE_GPU_MEMORY_GIB", "79.6")
    assert OperatorSettings().gpu_memory_gib == 79.6
    assert OperatorSettings(preflight=True).preflight  # on by default
    monkeypatch.delenv("KUBETUNE_PREFLIGHT")
    assert OperatorSettings().preflight is True
