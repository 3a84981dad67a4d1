"""Two FineTuneJobs on the same gated hf:// model, end to end: the API, the operator (HF_TOKEN
from a Secret, the Hub endpoint setting, the shared model cache claim), trainer pods (host
processes that reach the local Hub server on 127.0.0.1). The model is downloaded once; the
statuses, Events and the operator's metric say which job hit the cache; the token appears in
no status, Event, API answer or log. With the CPU pre-flight on (the default) the pre-flight
pods look the model up first (one downloads, one waits and hits) and the training pods both
hit; with it off the training pods do the lookup, as before."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client
from kubetune_local.workspace import create_claims
from prometheus_client.parser import text_string_to_metric_families
from support.hub_server import HubServer

from e2e.stack import E2EStack, ftj_name, short_job

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

SAMPLES = Path(__file__).resolve().parents[2] / "trainer-image" / "kubetune_trainer" / "samples"
CACHE_CLAIM = "kubetune-model-cache"
MODEL = "kubetune/tiny-gated"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("preflight", [True, False], ids=["preflight", "no-preflight"])
def test_two_jobs_on_one_hub_model_download_it_once(
    stack: E2EStack, tiny_model: Path, tmp_path: Path, preflight: bool
) -> None:
    dataset = tmp_path / "frigo"
    (dataset / "data").mkdir(parents=True)
    shutil.copy(SAMPLES / "frigo_training.jsonl", dataset / "data" / "train.jsonl")
    hub = HubServer().start()
    try:
        gated = hub.add_repo("model", MODEL, tiny_model, gated=True)
        data = hub.add_repo("dataset", "kubetune/frigo", dataset)
        create_claims(stack.cluster.kubeconfig, stack.namespace, (CACHE_CLAIM,), wait_bound=0)

        def bound() -> bool:
            pvc = stack.core.read_namespaced_persistent_volume_claim(CACHE_CLAIM, stack.namespace)
            return pvc.status.phase == "Bound"

        stack.wait(bound, 60, f"claim {CACHE_CLAIM} to be Bound")
        stack.core.create_namespaced_secret(
            stack.namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="hf-token"),
                string_data={"HF_TOKEN": hub.state.token},
            ),
        )
        stack.start_operator(
            HF_ENDPOINT=hub.url,
            HF_ENDPOINT_ALLOW_INTERNAL="true",
            MODEL_CACHE_CLAIM=CACHE_CLAIM,
            PREFLIGHT=str(preflight).lower(),
        )
        stack.start_api()
        body = short_job(
            model=f"hf://{MODEL}",
            dataset_url="hf://datasets/kubetune/frigo",
            hub_token_secret="hf-token",
            max_steps=2,
        )
        jobs = [stack.start_job(body), stack.start_job(body)]  # at once: they share a download
        answers = [
            stack.wait_api_status(j, {"completed", "failed", "cancelled"}, 420) for j in jobs
        ]
        assert [a["status"] for a in answers] == ["completed", "completed"], [
            stack.diagnostics(ftj_name(j)) for j in jobs
        ]
        statuses = [stack.ftj_status(ftj_name(j)) for j in jobs]
        models = [st["model"] for st in statuses]
        assert {m["baseModelRevision"] for m in models} == {gated.commit}
        if preflight:  # the pre-flights fetched it; the training pods found it cached
            lookups = [st["preflight"] for st in statuses]
            assert [m["baseModelCache"] for m in models] == ["hit", "hit"]
            assert {p["baseModelRevision"] for p in lookups} == {gated.commit}
        else:
            lookups = models
            assert all("preflight" not in st for st in statuses)
        assert sorted(p["baseModelCache"] for p in lookups) == ["hit", "miss"]
        assert {m["datasetRevision"] for m in models} == {data.commit}
        assert len(hub.state.downloads(f"/{MODEL}/resolve/")) == len(gated.files)  # once
        cached = Path(stack.cluster.pv_root) / stack.namespace / CACHE_CLAIM
        assert (cached / "models" / MODEL.replace("/", "--") / gated.commit).is_dir()

        reasons = sorted(
            e.reason
            for e in stack.core.list_namespaced_event(stack.namespace).items
            if (e.reason or "").startswith("ModelCache")
        )
        assert reasons == ["ModelCacheHit", "ModelCacheMiss"]  # one per job
        assert stack.operator is not None
        metrics_url = f"http://127.0.0.1:{stack.operator.liveness_port}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        counted = {
            s.labels["result"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "kubetune_model_cache_lookups_total"
        }
        assert counted == {"hit": 1.0, "miss": 1.0}

        token = hub.state.token
        for job in jobs:
            assert token not in str(stack.ftj(ftj_name(job)))
            assert token not in str(stack.api_status(job))
            assert all(token not in log for log in stack.trainer_logs(ftj_name(job)).values())
        events = stack.core.list_namespaced_event(stack.namespace).items
        assert all(token not in (e.message or "") for e in events)
        assert token not in stack.operator.log_path.read_text(errors="replace")
    finally:
        hub.stop()
