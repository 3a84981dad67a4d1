"""The CPU pre-flight against the local cluster (kube-apiserver v1.20, Job controller, GC,
scheduler and the node agent running the stand-in trainer, whose `--validate-only` fails a
dataset URL asking for a bad line): a bad dataset fails before any GPU pod exists; a good one
goes Validating -> training -> Succeeded; a cancel while validating stops the pre-flight."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubetune_crd.names import COMPONENT_PREFLIGHT
from kubetune_local.testing import wait_for
from operator_cluster_helpers import GROUP, PLURAL, VERSION, Ftj, manifest
from support.operator_proc import OperatorProcess

pytestmark = pytest.mark.cluster

GPU = "nvidia.com/gpu"


def gpu_requests(pod: Any) -> list[str]:
    """The GPUs each container of `pod` asks for (requests or limits)."""
    found = []
    for container in pod.spec.containers:
        res = container.resources
        for amounts in (res.requests or {}, res.limits or {}) if res else ():
            if GPU in amounts:
                found.append(str(amounts[GPU]))
    return found


def phases_until(
    ftj: Ftj, done: set[str], timeout: float, pods: dict[str, Any] | None = None
) -> list[str]:
    """Every phase seen, in order, until one of `done`; every pod of the FineTuneJob seen
    meanwhile goes into `pods` (by name)."""
    seen: list[str] = []

    def finished() -> bool:
        phase = ftj.phase()
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
        if pods is not None:
            pods.update({p.metadata.name: p for p in ftj.pods(component=None)})
        return phase in done

    wait_for(finished, timeout, f"{ftj.name} to reach {done} (seen {seen})", interval=0.1)
    return seen


def test_bad_dataset_fails_in_preflight_and_no_gpu_pod_is_ever_created(
    operator_proc: OperatorProcess, ftj_factory: Callable[[str], Ftj]
) -> None:
    ftj = ftj_factory("baddata")
    ftj.create(manifest("baddata", "data/fake_invalid-7_validate-2.csv", maxRetries=3))
    seen_pods: dict[str, Any] = {}
    phases = phases_until(ftj, {"Failed", "Succeeded"}, 60, seen_pods)
    assert phases[0] == "Validating" and phases[-1] == "Failed", phases
    status = ftj.status()
    failure = status["failure"]
    assert failure["reason"] == "BadInput" and failure["exitCode"] == 42
    assert "line 7" in failure["message"] and failure["message"].startswith("pre-flight: ")
    assert status["preflight"]["outcome"] == "Failed"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Validated"]["status"] == "False"
    assert conditions["Validated"]["reason"] == "BadInput"
    assert conditions["JobCreated"]["reason"] == "PreflightFailed"
    assert "jobName" not in status
    # The API server holds no training Job and no pod that asks for a GPU: only the pre-flight.
    assert ftj.jobs() == []
    time.sleep(2)  # a late creation would show up now
    assert ftj.jobs() == []
    seen_pods.update({p.metadata.name: p for p in ftj.pods(component=None)})
    every_pod = list(seen_pods.values())
    assert every_pod, "the pre-flight pod ran"
    assert all(p.metadata.labels["app.kubernetes.io/component"] == "preflight" for p in every_pod)
    assert all(p.metadata.name.startswith("baddata-preflight-") for p in every_pod)
    assert [gpu_requests(p) for p in every_pod] == [[] for _ in every_pod]
    # v1.20 has no podFailurePolicy: the operator stopped the pre-flight Job itself (no
    # retry), as it does a training Job (newer servers keep it, failed, with the TTL).
    wait_for(lambda: not ftj.jobs(COMPONENT_PREFLIGHT), 20, "the pre-flight Job to go")
    assert ftj.jobs() == [] and ftj.phase() == "Failed"
    assert ("Warning", "BadInput") in ftj.events()
    assert ("Normal", "Validating") in ftj.events()


def _until_training_job(ftj: Ftj, url: str) -> float:
    """Seconds from creating the FineTuneJob to its training Job's existence."""
    started = time.monotonic()
    ftj.create(manifest(ftj.name, url))
    wait_for(lambda: ftj.jobs(), 60, f"the training Job of {ftj.name}", interval=0.05)
    return time.monotonic() - started


def test_good_dataset_passes_preflight_then_trains_and_the_delay_is_measured(
    operator_proc: OperatorProcess, ftj_factory: Callable[[str], Ftj]
) -> None:
    ftj = ftj_factory("gooddata")
    with_preflight = _until_training_job(ftj, "data/fake_steps-2_interval-0.2.csv")
    # While it validated, the training Job did not exist; the pre-flight pod asked for no GPU.
    phases = phases_until(ftj, {"Succeeded", "Failed"}, 60)
    assert phases[-1] == "Succeeded", phases
    status = ftj.status()
    pre = status["preflight"]
    assert pre["outcome"] == "Passed" and pre["jobName"] == "gooddata-preflight"
    assert pre["totalSteps"] == 2 and pre["device"] == "cuda" and pre["worldSize"] == 1
    assert pre["durationSeconds"] >= 0
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Validated"]["status"] == "True"
    assert conditions["Validated"]["reason"] == "Passed"
    assert [j.metadata.name for j in ftj.jobs()] == ["gooddata"], "exactly one training Job"
    assert status["attempts"] == 1 and status["model"]["name"] == "tiny-finetuned-gooddata"
    reasons = {r for _, r in ftj.events()}
    assert {"Validating", "PreflightPassed", "JobCreated", "Succeeded"} <= reasons
    # A passed pre-flight's Job is deleted once the training Job exists.
    wait_for(lambda: not ftj.jobs(COMPONENT_PREFLIGHT), 30, "the pre-flight Job to go")

    # The same run without the pre-flight: what it costs on this cluster.
    operator_proc.restart(PREFLIGHT="false")
    plain = ftj_factory("nopreflight")
    without = _until_training_job(plain, "data/fake_steps-2_interval-0.2.csv")
    assert plain.jobs(COMPONENT_PREFLIGHT) == [] and "preflight" not in plain.status()
    print(
        f"\npre-flight cost on the local cluster: training Job after {with_preflight:.2f}s "
        f"with pre-flight, {without:.2f}s without: +{with_preflight - without:.2f}s "
        f"(pre-flight Job ran {pre['durationSeconds']:.0f}s by its own timestamps)"
    )
    assert phases_until(plain, {"Succeeded", "Failed"}, 60)[-1] == "Succeeded"


def test_cancel_while_validating_stops_the_preflight(
    operator_proc: OperatorProcess, ftj_factory: Callable[[str], Ftj]
) -> None:
    ftj = ftj_factory("cancelpre")
    ftj.create(manifest("cancelpre", "data/fake_validate-300.csv"))
    wait_for(
        lambda: ftj.phase() == "Validating" and ftj.pods(COMPONENT_PREFLIGHT), 30, "validating"
    )
    ftj.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ftj.namespace, PLURAL, "cancelpre", {"spec": {"cancel": True}}
    )
    status = ftj.wait_phase("Cancelled", 20)
    assert status["failure"]["reason"] == "Cancelled"
    wait_for(
        lambda: not ftj.jobs(component=None) and not ftj.pods(component=None),
        40,
        "the pre-flight Job and its pod to go",
    )
    time.sleep(1)
    assert ftj.phase() == "Cancelled" and ftj.jobs() == []
