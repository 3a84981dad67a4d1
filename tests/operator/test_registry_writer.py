"""The operator's registry builders (pure): the FineTunedModel record of a stored model, the
alias status after a decision (idempotent, history capped, a loss keeps the current model),
the champion a promoting run compares with, and a manual request's publish Job."""

from __future__ import annotations

from typing import Any

from kubetune_crd import names
from kubetune_crd.promotion import PromotionOutcome
from kubetune_crd.registry import (
    HISTORY_MAX,
    AliasRequest,
    AliasTarget,
    FineTunedModel,
    ModelAlias,
    ModelAliasStatus,
)
from kubetune_crd.resource import FineTuneJob
from kubetune_crd.status import FineTuneJobStatus, Metrics, ModelFile, ModelInfo
from kubetune_operator.publish_builders import (
    build_publish_job,
    claim_of,
    pointer_version,
    publish_job_name,
    publish_problem,
    request_outcome,
)
from kubetune_operator.registry_writer import (
    alias_target,
    champion_of,
    model_record,
    registry_path,
    with_decision,
)
from kubetune_operator.settings import OperatorSettings


def _ftj(**spec: Any) -> FineTuneJob:
    return FineTuneJob.from_k8s(
        {
            "metadata": {"name": "frigo-a", "namespace": "team-a", "uid": "u-1"},
            "spec": {"model": "tiny", "dataset": {"url": "data/frigo.jsonl"}, **spec},
        }
    )


MODEL = ModelInfo(
    name="tiny-frigo-a",
    path="models/tiny-frigo-a",
    uri="pvc://kubetune-models/models/tiny-frigo-a",
    format=names.FORMAT_LORA,
    base_model="/models/tiny",
    dataset_sha256="ab" * 32,
)


def _outcome(model: str, promoted: bool, time: str, bpb: float = 1.5) -> PromotionOutcome:
    return PromotionOutcome(
        alias="frigo",
        policy="if-better",
        promoted=promoted,
        reason="test",
        model=model,
        challenger_bits_per_byte=bpb,
        version=1 if promoted else None,
        time=time,
    )


def test_no_record_without_a_stored_model() -> None:
    assert model_record(_ftj(), FineTuneJobStatus(phase="Failed")) is None


def test_record_carries_lineage_and_no_owner() -> None:
    status = FineTuneJobStatus(
        phase="Succeeded", model=MODEL, metrics=Metrics(bits_per_byte_after=1.25)
    )
    obj = model_record(_ftj(hyperparameters={"seed": 7}), status)
    assert obj is not None
    assert "ownerReferences" not in obj["metadata"]  # the record outlives its job
    assert obj["metadata"]["labels"][names.LABEL_FINETUNEJOB] == "frigo-a"
    record = FineTunedModel.from_k8s(obj)
    assert (record.spec.job, record.spec.job_uid, record.spec.method) == ("frigo-a", "u-1", "lora")
    assert record.spec.dataset.sha256 == "ab" * 32
    assert (record.spec.dataset.seed, record.spec.dataset.validation_split) == (7, 0.1)
    assert record.spec.metrics is not None and record.spec.metrics.bits_per_byte_after == 1.25
    assert record.spec.model.path == "models/tiny-frigo-a"


def test_record_carries_the_files_sha256_from_the_manifest() -> None:
    files = [ModelFile(path="adapter_model.safetensors", sha256="0f" * 32, size=9)]
    model = MODEL.model_copy(update={"files": files, "manifest_sha256": "1e" * 32})
    obj = model_record(_ftj(), FineTuneJobStatus(phase="Succeeded", model=model))
    assert obj is not None
    assert obj["spec"]["model"]["files"] == [
        {"path": "adapter_model.safetensors", "sha256": "0f" * 32, "size": 9}
    ]
    assert obj["spec"]["model"]["manifestSha256"] == "1e" * 32
    record = FineTunedModel.from_k8s(obj)
    assert record.spec.model.files == files


def test_a_win_becomes_current_a_loss_keeps_it_and_both_are_history() -> None:
    win = _outcome("tiny-frigo-a", True, "2026-12-04T10:00:00Z")
    target = alias_target(MODEL, "frigo-a", win.challenger_bits_per_byte, win.version)
    first = with_decision(ModelAliasStatus(), win, target)
    assert first is not None and first.current is not None
    assert (first.current.model, first.current.record, first.current.version) == (
        "tiny-frigo-a",
        "frigo-a",
        1,
    )
    assert with_decision(first, win, target) is None  # once only
    loss = _outcome("tiny-frigo-b", False, "2026-12-04T11:00:00Z", bpb=9.0)
    second = with_decision(first, loss, AliasTarget(model="tiny-frigo-b"))
    assert second is not None and second.current == first.current
    assert [h.model for h in second.history] == ["tiny-frigo-a", "tiny-frigo-b"]
    assert second.history[1].challenger_bits_per_byte == 9.0


def test_history_keeps_the_newest() -> None:
    status = ModelAliasStatus()
    for i in range(HISTORY_MAX + 5):
        out = _outcome(f"m-{i}", False, f"2026-12-04T10:{i // 60:02d}:{i % 60:02d}Z")
        new = with_decision(status, out, AliasTarget(model=out.model))
        assert new is not None
        status = new
    assert len(status.history) == HISTORY_MAX
    assert status.history[0].model == "m-5" and status.history[-1].model == f"m-{HISTORY_MAX + 4}"


def _alias(current: dict[str, Any] | None) -> ModelAlias:
    return ModelAlias.from_k8s({"metadata": {"name": "frigo"}, "status": {"current": current}})


def test_champion_is_the_current_model_where_it_can_be_read() -> None:
    assert champion_of(None) is None
    assert champion_of(_alias(None)) is None
    assert champion_of(_alias({"model": "gone"})) is None  # nowhere to read it from
    on_volume = champion_of(_alias({"model": "a", "path": "models/a", "uri": "pvc://c/models/a"}))
    assert on_volume is not None
    assert (on_volume.alias, on_volume.name, on_volume.path, on_volume.uri) == (
        "frigo",
        "a",
        "models/a",
        None,
    )
    assert on_volume.format == names.FORMAT_LORA
    on_s3 = champion_of(_alias({"model": "b", "uri": "s3://bucket/p/b", "format": "safetensors"}))
    assert on_s3 is not None and (on_s3.uri, on_s3.format) == ("s3://bucket/p/b", "safetensors")


def test_registry_paths() -> None:
    assert registry_path("modelaliases", "ns", "frigo", "status") == (
        "/apis/kubetune.io/v1alpha1/namespaces/ns/modelaliases/frigo/status"
    )
    assert registry_path("finetunedmodels", "ns") == (
        "/apis/kubetune.io/v1alpha1/namespaces/ns/finetunedmodels"
    )


# -- manual promotion and rollback: the publish Job and its decision --------------------------
def _request(**over: Any) -> AliasRequest:
    return AliasRequest.model_validate(
        {"id": "0123456789abcdef", "action": "rollback", "model": MODEL.name, "record": "frigo-a"}
        | over
    )


def _record_of(model: ModelInfo = MODEL) -> FineTunedModel:
    obj = model_record(_ftj(), FineTuneJobStatus(phase="Succeeded", model=model))
    assert obj is not None
    return FineTunedModel.from_k8s(obj)


def test_publish_job_is_restricted_owned_and_named_by_the_request() -> None:
    alias = ModelAlias.from_k8s(
        {"metadata": {"name": "frigo", "namespace": "team-a", "uid": "a-1"}}
    )
    settings = OperatorSettings(trainer_command=["/venv/bin/kubetune-trainer"])
    job = build_publish_job(alias, _request(), _record_of(), settings)
    assert job["metadata"]["name"] == "kubetune-publish-frigo-01234567"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "a-1"
    assert job["metadata"]["labels"][names.LABEL_ALIAS] == "frigo"
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["command"][:2] == ["/venv/bin/kubetune-trainer", "publish"]
    args = container["command"]
    assert args[args.index("--path") + 1] == "models/tiny-frigo-a"
    assert args[args.index("--models-dir") + 1] == names.MODELS_MOUNT
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "kubetune-models"
    assert len(publish_job_name("a" * 63, "0123456789abcdef")) <= 63


def test_what_cannot_be_published_says_why() -> None:
    assert publish_problem(_request(), None) == "model record frigo-a not found"
    assert "not tiny-other" in (publish_problem(_request(model="tiny-other"), _record_of()) or "")
    s3 = MODEL.model_copy(update={"path": None, "uri": "s3://bucket/p/tiny-frigo-a"})
    assert "not on a volume" in (publish_problem(_request(), _record_of(s3)) or "")
    assert publish_problem(_request(), _record_of()) is None
    assert claim_of("pvc://claim-x/models/a") == "claim-x" and claim_of("s3://b/k") is None


def test_pointer_version_and_the_manual_decision() -> None:
    assert pointer_version('{"alias": "frigo", "version": 4}') == 4
    assert pointer_version("publish: no complete model") is None
    assert pointer_version('{"version": 0}') is None
    alias = _alias({"model": "b", "bitsPerByte": 2.5})
    out = request_outcome(
        alias, _request(), _record_of(), promoted=True, reason="published", time="t"
    )
    assert (out.policy, out.previous, out.champion_bits_per_byte) == ("manual", "b", 2.5)
    assert out.reason == "rollback: published"
