"""Atomic model storage and never-overwrite, on a volume and on S3 (moto server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kubetune_crd.names import MODEL_MANIFEST as MANIFEST
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.output import OWNER, JobIdentity, S3Store, VolumeStore
from kubetune_trainer.sources import fetch_dataset

from trainer.conftest import TrainerRun

JOB_A = JobIdentity("default", "job-a", "uid-a")
JOB_B = JobIdentity("default", "job-b", "uid-b")


def model_files(root: Path, weights: bytes = b"weights") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.safetensors").write_bytes(weights)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "tokenizer.json").write_text("{}")
    return root


def manifest(job: JobIdentity) -> dict[str, Any]:
    return {"name": "m", "job": job.as_dict(), "format": "safetensors"}


# ---------------------------------------------------------------- volume


def test_volume_commit_is_atomic_and_never_overwrites(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "models")
    staging = model_files(store.staging_dir("m"))
    assert staging.parent == tmp_path / "models" and staging.name.startswith(".tmp-m-")
    assert not store.target("m").exists()  # nothing visible until the rename
    stored = store.commit(staging, "m", manifest(JOB_A))
    target = store.target("m")
    assert stored.uri == str(target) and not staging.exists()
    written = json.loads((target / MANIFEST).read_text())
    assert {f["path"] for f in written["files"]} == {"model.safetensors", "sub/tokenizer.json"}
    assert oct((target / "model.safetensors").stat().st_mode & 0o777) == "0o644"

    # The manifest's own sha256, as written: it covers every file's sha256.
    assert stored.manifest_sha256 == hashlib.sha256((target / MANIFEST).read_bytes()).hexdigest()

    # Same job: reported as already stored. Another job: refused, files untouched.
    existing = store.existing("m", JOB_A)
    assert existing is not None and existing.reused
    assert existing.manifest_sha256 == stored.manifest_sha256
    with pytest.raises(BadInputError, match="never overwritten"):
        store.existing("m", JOB_B)
    other = model_files(store.staging_dir("m"), b"other weights")
    with pytest.raises(BadInputError, match="not overwritten"):
        store.commit(other, "m", manifest(JOB_B))
    assert (target / "model.safetensors").read_bytes() == b"weights"
    assert not other.exists()


def test_volume_refuses_foreign_directory_and_cleans_stale_staging(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not a kubetune model"):
        store.existing("m", JOB_A)
    stale = tmp_path / ".tmp-n-deadbeef"  # a pod died while writing
    stale.mkdir()
    store.staging_dir("n")
    assert not stale.exists()


# ---------------------------------------------------------------- s3


@pytest.fixture
def bucket(s3: Any) -> str:
    import uuid

    name = f"models-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


def keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_s3_commit_stages_then_writes_manifest_last(s3: Any, bucket: str, tmp_path: Path) -> None:
    store = S3Store(f"s3://{bucket}/team/models", client=s3)
    stored = store.commit(model_files(tmp_path / "m"), "m", manifest(JOB_A))
    assert stored.uri == f"s3://{bucket}/team/models/m"
    assert keys(s3, bucket) == {
        f"team/models/m/{OWNER}",
        "team/models/m/model.safetensors",
        "team/models/m/sub/tokenizer.json",
        f"team/models/m/{MANIFEST}",
    }  # the staging prefix is gone
    body = s3.get_object(Bucket=bucket, Key=f"team/models/m/{MANIFEST}")["Body"].read()
    assert json.loads(body)["files"][0]["sha256"]
    assert stored.manifest_sha256 == hashlib.sha256(body).hexdigest()

    # The manifest is written with If-None-Match: * — the server refuses a second one.
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key=f"team/models/m/{MANIFEST}", Body=b"{}", IfNoneMatch="*")
    assert err.value.response["Error"]["Code"] == "PreconditionFailed"

    again = store.existing("m", JOB_A)
    assert again is not None and again.manifest_sha256 == stored.manifest_sha256
    with pytest.raises(BadInputError, match="never overwritten"):
        store.existing("m", JOB_B)
    with pytest.raises(BadInputError, match="taken by job default/job-a"):
        store.commit(model_files(tmp_path / "other", b"other"), "m", manifest(JOB_B))
    data = s3.get_object(Bucket=bucket, Key="team/models/m/model.safetensors")["Body"].read()
    assert data == b"weights"


def test_s3_retry_of_same_job_after_partial_upload(s3: Any, bucket: str, tmp_path: Path) -> None:
    store = S3Store(f"s3://{bucket}", client=s3)
    store.claim("m", JOB_A)  # a first attempt claimed the name and died before the manifest
    s3.put_object(Bucket=bucket, Key="m/model.safetensors", Body=b"partial")
    store.commit(model_files(tmp_path / "m"), "m", manifest(JOB_A))
    data = s3.get_object(Bucket=bucket, Key="m/model.safetensors")["Body"].read()
    assert data == b"weights"


def test_s3_dataset_fetch(s3: Any, bucket: str, tmp_path: Path) -> None:
    from kubetune_trainer.samples import sample_path

    s3.upload_file(str(sample_path("frigo_training.jsonl")), bucket, "datasets/frigo.jsonl")
    got = fetch_dataset(f"s3://{bucket}/datasets/frigo.jsonl", tmp_path, tmp_path / "work")
    assert got.path.read_bytes() == sample_path("frigo_training.jsonl").read_bytes()
    assert got.path.name == "frigo.jsonl"
    with pytest.raises(BadInputError, match="not found"):
        fetch_dataset(f"s3://{bucket}/datasets/missing.csv", tmp_path, tmp_path / "work")


def test_trainer_reads_and_writes_s3(
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    s3: Any,
    bucket: str,
    s3_env: dict[str, str],
) -> None:
    from kubetune_trainer.samples import sample_path

    s3.upload_file(str(sample_path("frigo_text.csv")), bucket, "data/frigo_text.csv")
    config = make_config(
        dataset={"url": f"s3://{bucket}/data/frigo_text.csv"},
        method={"type": "lora"},
        hyperparameters={"maxSteps": 2, "learningRate": 1e-3},
        output={"s3": {"uri": f"s3://{bucket}/models"}},
        outputDir=None,
        outputUri=f"s3://{bucket}/models",
    )
    run = run_trainer(config, env=s3_env)
    assert run.proc.returncode == 0, run.stderr()
    result = run.result()
    assert result["model"]["uri"] == f"s3://{bucket}/models/tiny-ft"
    manifest_body = s3.get_object(Bucket=bucket, Key=f"models/tiny-ft/{MANIFEST}")["Body"].read()
    stored = json.loads(manifest_body)
    assert stored["format"] == "peft-lora"
    assert stored["dataset"]["uri"] == f"s3://{bucket}/data/frigo_text.csv"
    for entry in stored["files"]:
        head = s3.head_object(Bucket=bucket, Key=f"models/tiny-ft/{entry['path']}")
        assert head["ContentLength"] == entry["size"]
    assert not [k for k in keys(s3, bucket) if ".kubetune-staging" in k]
