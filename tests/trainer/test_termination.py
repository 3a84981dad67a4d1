"""The trainer's result fitted into the 4 KiB termination message (pure): the answers are
shortened first, then the model's file list goes (its manifestSha256 stays), then the message
is cut; a result that fits is left as it is."""

from __future__ import annotations

from kubetune_crd.status import MODEL_FILES_MAX, ModelFile, ModelInfo, Sample
from kubetune_crd.trainer_contract import TrainerResult
from kubetune_trainer.saving import manifest_files
from kubetune_trainer.termination import (
    MAX_TERMINATION_BYTES,
    SAMPLES_FLOOR_BYTES,
    body_of,
    fit_result,
)

MANIFEST_SHA = "c" * 64


def _result(files: int, answer_chars: int, message: str = "done") -> TrainerResult:
    model = ModelInfo(
        name="tiny-ft",
        path="models/tiny-ft",
        uri="pvc://kubetune-models/models/tiny-ft",
        base_model="/var/lib/kubetune/models/base/kubetune-tiny",
        files=[ModelFile(path=f"file-{i}.json", sha256="a" * 64, size=i) for i in range(files)],
        manifest_sha256=MANIFEST_SHA,
    )
    text = "x" * answer_chars
    samples = [Sample(prompt="Frigo fait bruit fort", before=text, after=text)] * 3
    return TrainerResult(outcome="succeeded", message=message, model=model, samples=samples)


def test_a_result_that_fits_is_unchanged() -> None:
    result = _result(files=10, answer_chars=100)
    assert len(body_of(result).encode()) <= MAX_TERMINATION_BYTES
    assert fit_result(result) == result


def test_answers_are_shortened_before_the_files_go() -> None:
    result = _result(files=10, answer_chars=600)  # about 3.6 KiB of answers
    assert len(body_of(result).encode()) > MAX_TERMINATION_BYTES
    fitted = fit_result(result)
    assert len(body_of(fitted).encode()) <= MAX_TERMINATION_BYTES
    assert fitted.model is not None and fitted.model.files == result.model.files  # type: ignore[union-attr]
    assert all(s.after and s.after.endswith("…") for s in fitted.samples)
    assert [s.prompt for s in fitted.samples] == [s.prompt for s in result.samples]


def test_files_go_when_the_answers_reach_their_floor() -> None:
    result = _result(files=MODEL_FILES_MAX, answer_chars=2000)  # 64 files: about 7 KiB
    assert len(body_of(result.model_copy(update={"samples": []})).encode()) > 4096
    fitted = fit_result(result)
    assert len(body_of(fitted).encode()) <= MAX_TERMINATION_BYTES
    assert fitted.model is not None and fitted.model.files is None
    assert fitted.model.manifest_sha256 == MANIFEST_SHA
    answers = len(body_of(fitted.model_copy(update={"samples": []})).encode())
    assert len(body_of(fitted).encode()) - answers >= SAMPLES_FLOOR_BYTES // 2  # still there


def test_the_message_is_cut_last() -> None:
    fitted = fit_result(_result(files=0, answer_chars=0, message="m" * 2048), limit=1024)
    assert len(body_of(fitted).encode()) <= 1024
    assert 16 <= len(fitted.message) < 2048


def test_manifest_files_are_bounded() -> None:
    entry = {"path": "adapter_model.safetensors", "sha256": "b" * 64, "size": 3}
    assert manifest_files({"files": [entry]}) == [ModelFile(**entry)]
    assert manifest_files({"files": [entry] * (MODEL_FILES_MAX + 1)}) is None
    assert manifest_files({}) is None
