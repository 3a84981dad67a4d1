"""hf:// sources in the trainer and pre-flight pods the operator builds: the token only as a
Secret reference, the Hub endpoint setting, the shared model cache claim; and the cache
lookup's Event and metric, once per job, from the step that looked first (the pre-flight
when it runs, else the training run)."""

from __future__ import annotations

import json
from typing import Any

from kubetune_crd import names
from kubetune_crd.status import FineTuneJobStatus, ModelInfo
from kubetune_crd.trainer_contract import TrainerRunConfig
from kubetune_operator.metrics import OperatorMetrics
from kubetune_operator.preflight import read_preflight
from kubetune_operator.status_derivation import derive_status
from kubetune_operator.transitions import transitions
from prometheus_client.parser import text_string_to_metric_families
from test_operator_job_builder import build, container, ftj, run_config
from test_operator_preflight import pre_job, preflight
from test_operator_status_derivation import NOW, cond, job, pod, terminated
from test_operator_status_derivation import ftj as status_ftj

HUB_SPEC = {
    "model": "hf://kubetune/tiny@main",
    "dataset": {"url": "hf://datasets/kubetune/frigo"},
    "hub": {"tokenSecretRef": {"name": "hf-token"}},
}


def _env(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(job)["env"]}


def test_hub_token_endpoint_and_model_cache_claim_reach_the_trainer() -> None:
    job = build(
        ftj(HUB_SPEC),
        hf_endpoint="http://10.0.0.7:8080",
        hf_endpoint_allow_internal=True,
        model_cache_claim="kubetune-model-cache",
    )
    env = _env(job)
    assert env[names.ENV_HF_TOKEN] == {
        "name": names.ENV_HF_TOKEN,
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": names.HF_TOKEN_SECRET_KEY}},
    }
    assert env[names.ENV_HF_ENDPOINT]["value"] == "http://10.0.0.7:8080"
    assert env[names.ENV_HUB_ALLOW_INTERNAL]["value"] == "true"
    cfg = run_config(job)
    assert cfg.base_model == "hf://kubetune/tiny@main"  # resolved by the trainer, not here
    assert cfg.model_cache_dir == names.MODEL_CACHE_MOUNT
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container(job)["volumeMounts"]}
    cache = volumes[names.VOLUME_MODEL_CACHE]["persistentVolumeClaim"]
    assert cache == {"claimName": "kubetune-model-cache"}
    assert mounts[names.VOLUME_MODEL_CACHE] == names.MODEL_CACHE_MOUNT
    assert names.VOLUME_DATA not in volumes  # an hf:// dataset needs no data claim
    assert "hf-token" not in env[names.ENV_HF_TOKEN].get("value", "")
    assert "tokenSecretRef" in json.dumps(cfg.spec.to_k8s())  # the reference, never a value


def test_without_hub_sources_no_hub_env_and_the_cache_on_the_models_claim() -> None:
    plain = build(ftj(), model_cache_claim="kubetune-model-cache", hf_endpoint="https://m.example")
    env = _env(plain)
    assert not {names.ENV_HF_TOKEN, names.ENV_HF_ENDPOINT} & set(env)
    assert names.VOLUME_MODEL_CACHE not in {
        v["name"] for v in plain["spec"]["template"]["spec"]["volumes"]
    }
    hub = build(ftj({"model": "hf://kubetune/tiny"}))
    assert run_config(hub).model_cache_dir == names.DEFAULT_MODEL_CACHE_DIR
    assert names.VOLUME_MODEL_CACHE not in {
        v["name"] for v in hub["spec"]["template"]["spec"]["volumes"]
    }
    assert names.ENV_HF_ENDPOINT not in _env(hub)  # huggingface.co: the trainer's default


def _status(phase: str, cache: str | None) -> FineTuneJobStatus:
    model = None
    if cache is not None:
        model = ModelInfo(
            name="m",
            uri="pvc://c/models/m",
            base_model="hf://kubetune/tiny",
            base_model_revision="a" * 40,
            base_model_cache=cache,  # type: ignore[arg-type]
        )
    return FineTuneJobStatus(phase=phase, model=model)  # type: ignore[arg-type]


def test_cache_lookup_event_once_and_counted_by_result() -> None:
    metrics = OperatorMetrics()
    done = transitions(_status("Running", None), _status("Succeeded", "hit"))
    cache_events = [t for t in done if t.reason.startswith("ModelCache")]
    assert [(t.reason, t.type) for t in cache_events] == [("ModelCacheHit", "Normal")]
    assert "hf://kubetune/tiny" in cache_events[0].message and "a" * 40 in cache_events[0].message
    metrics.transitions_posted(done)
    metrics.transitions_posted(transitions(_status("Running", None), _status("Succeeded", "miss")))
    again = transitions(_status("Succeeded", "hit"), _status("Succeeded", "hit"))
    assert not [t for t in again if t.reason.startswith("ModelCache")]
    metrics.transitions_posted(again)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    assert samples[("kubetune_model_cache_lookups_total", (("result", "hit"),))] == 1
    assert samples[("kubetune_model_cache_lookups_total", (("result", "miss"),))] == 1


# --- the pre-flight fetches the model first ----------------------------------------------------


def test_preflight_of_an_hf_model_mounts_the_cache_gets_hub_env_and_a_download_deadline() -> None:
    settings: dict[str, Any] = {
        "model_cache_claim": "kubetune-model-cache",
        "hf_endpoint": "https://hub.example",
    }
    hub = preflight(HUB_SPEC, **settings)
    pod = hub["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[names.VOLUME_MODEL_CACHE]["persistentVolumeClaim"] == {
        "claimName": "kubetune-model-cache"
    }
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts[names.VOLUME_MODEL_CACHE] == names.MODEL_CACHE_MOUNT
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env[names.ENV_HF_TOKEN]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    assert env[names.ENV_HF_ENDPOINT]["value"] == "https://hub.example"
    config = TrainerRunConfig.model_validate_json(env["KUBETUNE_RUN_CONFIG"]["value"])
    assert config.model_cache_dir == names.MODEL_CACHE_MOUNT  # where the training pod looks
    assert hub["spec"]["activeDeadlineSeconds"] == 7200  # a 15 GB download, or a wait for one
    plain = preflight(None, **settings)
    assert plain["spec"]["activeDeadlineSeconds"] == 900
    assert names.VOLUME_MODEL_CACHE not in {
        v["name"] for v in plain["spec"]["template"]["spec"]["volumes"]
    }
    assert names.ENV_HF_ENDPOINT not in {
        e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    tuned = preflight(HUB_SPEC, preflight_hub_deadline_seconds=1800)
    assert tuned["spec"]["activeDeadlineSeconds"] == 1800


def _passed_preflight(cache: str) -> tuple[FineTuneJobStatus, OperatorMetrics]:
    """The status once a pre-flight that looked the hf:// model up passed, and the metrics
    after its status write."""
    body = {
        "outcome": "succeeded",
        "message": "valid",
        "validation": {"rows": 10, "baseModelRevision": "b" * 40, "baseModelCache": cache},
    }
    done = pod("j-preflight-x", "Succeeded", state=terminated(0, "Completed", json.dumps(body)))
    view = read_preflight(pre_job(cond("Complete")), [done])
    running = read_preflight(pre_job(active=1), [])
    validating = derive_status(status_ftj(), None, [], now=NOW, preflight=running).status
    derived = derive_status(
        status_ftj(validating.to_k8s()), job(active=1), [], now=NOW, preflight=view
    )
    cache_events = [t for t in derived.transitions if t.reason.startswith("ModelCache")]
    assert len(cache_events) == 1 and "by the pre-flight" in cache_events[0].message
    assert "b" * 40 in cache_events[0].message
    metrics = OperatorMetrics()
    metrics.transitions_posted(derived.transitions)
    return derived.status, metrics


def _counted(metrics: OperatorMetrics) -> dict[str, float]:
    return {
        s.labels["result"]: s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name == "kubetune_model_cache_lookups_total"
    }


def test_the_preflights_lookup_is_the_jobs_event_and_metric_once() -> None:
    """The pre-flight downloads (miss): one ModelCacheMiss; the training run then hits the
    cache (status.model says hit, as its pod saw) and posts no second cache Event."""
    passed, metrics = _passed_preflight("miss")
    assert passed.preflight is not None and passed.preflight.base_model_cache == "miss"
    assert passed.preflight.base_model_revision == "b" * 40
    assert _counted(metrics) == {"hit": 0.0, "miss": 1.0}
    trained = passed.model_copy(deep=True)
    trained.phase = "Succeeded"
    trained.model = ModelInfo(
        name="m",
        uri="pvc://c/models/m",
        base_model="hf://kubetune/tiny",
        base_model_revision="b" * 40,
        base_model_cache="hit",
    )
    after = transitions(passed, trained)
    assert "Succeeded" in [t.reason for t in after]
    assert not [t for t in after if t.reason.startswith("ModelCache")]
    metrics.transitions_posted(after)
    assert _counted(metrics) == {"hit": 0.0, "miss": 1.0}
    # A second job's pre-flight finds the model cached: ModelCacheHit, counted once.
    _, second = _passed_preflight("hit")
    assert _counted(second) == {"hit": 1.0, "miss": 0.0}
