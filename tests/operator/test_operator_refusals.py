"""Multi-node specs the operator refuses before creating anything (the pure checks)."""

from __future__ import annotations

from typing import Any

import pytest
from kubetune_crd.catalog import load_catalog
from kubetune_crd.resource import FineTuneJob
from kubetune_operator.capabilities import ServerCapabilities
from kubetune_operator.refusals import (
    ClaimUse,
    access_modes,
    claims_of,
    gpu_refusal,
    indexed_jobs_refusal,
    storage_refusal,
)
from kubetune_operator.run_plan import RunPlan, Topology, plan_for
from kubetune_operator.settings import OperatorSettings
from pydantic import ValidationError

V120 = ServerCapabilities(version=(1, 20), indexed_jobs=False, git_version="v1.20.2")
TWO = Topology(nodes=2, gpus_per_node=1)
ONE = Topology(nodes=1, gpus_per_node=8)


def plan(spec: dict[str, Any]) -> tuple[FineTuneJob, RunPlan]:
    body = {"model": "tiny", "dataset": {"url": "data/train.csv"}, "resources": {"nodes": 2}}
    obj = FineTuneJob.from_k8s(
        {"metadata": {"name": "j", "namespace": "ns", "uid": "u"}, "spec": {**body, **spec}}
    )
    return obj, plan_for(obj, OperatorSettings(), load_catalog(), None)


def pvc(*modes: str, bound: tuple[str, ...] = ()) -> dict[str, Any]:
    status = {"phase": "Bound", "accessModes": list(bound)} if bound else {"phase": "Pending"}
    return {"spec": {"accessModes": list(modes)}, "status": status}


def test_multi_node_on_a_server_without_indexed_jobs_names_the_version() -> None:
    refusal = indexed_jobs_refusal(TWO, V120)
    assert refusal is not None and refusal.permanent
    assert refusal.refusal == "IndexedJobsUnsupported"
    assert "v1.20.2" in refusal.message and "resources.nodes=2" in refusal.message
    assert refusal.failure_message == refusal.message  # not "the Job was rejected"
    assert indexed_jobs_refusal(ONE, V120) is None  # one node needs no Indexed Job
    assert indexed_jobs_refusal(TWO, ServerCapabilities()) is None


def test_claims_every_pod_of_the_run_mounts() -> None:
    obj, default = plan({})
    assert claims_of(obj, default, OperatorSettings()) == [
        ClaimUse("kubetune-models", "base models and download cache, the model and its "
                 "checkpoints", writable=True),
        ClaimUse("kubetune-data", "the dataset", writable=False),
    ]  # fmt: skip
    obj, other = plan(
        {"output": {"pvc": {"claimName": "results"}}, "dataset": {"url": "https://x.org/d.csv"}}
    )
    uses = claims_of(obj, other, OperatorSettings())
    assert [(u.claim, u.writable) for u in uses] == [("kubetune-models", True), ("results", True)]
    obj, s3 = plan({"output": {"s3": {"uri": "s3://bkt/models"}}})
    models = claims_of(obj, s3, OperatorSettings())[0]
    assert models.claim == "kubetune-models" and "checkpoints" in models.purpose


def test_read_write_claims_must_be_read_write_many() -> None:
    models = ClaimUse("kubetune-models", "the model and its checkpoints", writable=True)
    refusal = storage_refusal(TWO, models, pvc("ReadWriteOnce"))
    assert refusal is not None and refusal.permanent and refusal.refusal == "StorageNotShared"
    assert "kubetune-models" in refusal.message and "ReadWriteOnce" in refusal.message
    assert "ReadWriteMany" in refusal.message
    assert storage_refusal(TWO, models, pvc("ReadOnlyMany")) is not None
    assert storage_refusal(TWO, models, pvc("ReadWriteMany")) is None
    assert storage_refusal(TWO, models, pvc("ReadWriteOnce", bound=("ReadWriteMany",))) is None
    assert storage_refusal(ONE, models, pvc("ReadWriteOnce")) is None


def test_the_read_only_data_claim_may_be_read_only_many() -> None:
    data = ClaimUse("kubetune-data", "the dataset", writable=False)
    assert storage_refusal(TWO, data, pvc("ReadOnlyMany")) is None
    assert storage_refusal(TWO, data, pvc("ReadWriteMany")) is None
    refusal = storage_refusal(TWO, data, pvc("ReadWriteOnce"))
    assert refusal is not None and "ReadOnlyMany or ReadWriteMany" in refusal.message
    assert "no access mode" in str(storage_refusal(TWO, data, {"spec": {}}))


def test_access_modes_are_the_claims_and_its_volumes() -> None:
    assert access_modes(pvc("ReadWriteOnce", bound=("ReadWriteOnce", "ReadOnlyMany"))) == {
        "ReadWriteOnce",
        "ReadOnlyMany",
    }
    assert access_modes({}) == set()


def test_qlora_on_the_default_of_zero_gpus_is_refused_naming_the_setting() -> None:
    obj = FineTuneJob.from_k8s(
        {
            "metadata": {"name": "j", "namespace": "ns", "uid": "u"},
            "spec": {
                "model": "tiny",
                "dataset": {"url": "data/t.csv"},
                "method": {"type": "qlora"},
            },
        }
    )
    refusal = gpu_refusal(obj, Topology(nodes=1, gpus_per_node=0))
    assert refusal is not None and refusal.permanent and refusal.refusal == "GpuRequired"
    assert "needs a GPU" in refusal.message and "KUBETUNE_TRAINER_DEFAULT_GPUS" in refusal.message
    assert gpu_refusal(obj, Topology(nodes=1, gpus_per_node=1)) is None
    lora, _ = plan({})
    assert gpu_refusal(lora, Topology(nodes=1, gpus_per_node=0)) is None  # lora runs on CPU


def test_qlora_with_zero_gpus_asked_is_invalid_for_the_typed_model() -> None:
    with pytest.raises(ValidationError) as info:
        plan({"method": {"type": "qlora"}, "resources": {"gpus": 0}})
    assert info.value.errors()[0]["loc"][-2:] == ("method", "type")
