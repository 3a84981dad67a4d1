"""The alias pointer writer (kubetune_trainer.publish): atomic on the volume (a reader polling
during 200 publishes never sees a half-written pointer), versions that only go up, nothing
written for bad input, and the S3 pointer object (moto server on 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from kubetune_crd.alias_pointer import AliasPointer, read_pointer
from kubetune_crd.names import MODEL_MANIFEST
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.publish import publish_s3, publish_volume, s3_pointer_key

PUBLISHES = 200


def _model(models_dir: Path, name: str) -> str:
    path = f"models/{name}"
    (models_dir / path).mkdir(parents=True, exist_ok=True)
    (models_dir / path / MODEL_MANIFEST).write_text(json.dumps({"name": name}))
    return path


def test_a_reader_never_sees_a_half_written_pointer(tmp_path: Path) -> None:
    paths = [_model(tmp_path, name) for name in ("frigo-a", "frigo-b")]
    pointer = tmp_path / "aliases" / "frigo.json"
    seen: list[AliasPointer] = []
    broken: list[str] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            try:
                raw = pointer.read_bytes()
            except FileNotFoundError:
                continue
            try:
                seen.append(AliasPointer.model_validate(json.loads(raw)))
            except ValueError as exc:  # JSON or validation error: a torn or empty file
                broken.append(f"{exc!s:.80} {raw[:60]!r}")

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(PUBLISHES):
            name = f"frigo-{'ab'[i % 2]}"
            doc = publish_volume(tmp_path, "frigo", name, paths[i % 2], "peft-lora", "tiny")
            assert doc["version"] == i + 1
    finally:
        done.set()
        reader.join(10)
    assert not broken, broken[:3]
    assert len(seen) > PUBLISHES / 4  # the reader did read while the writer wrote
    versions = [p.version for p in seen]
    assert versions == sorted(versions)  # never older than what was already seen
    for p in seen:  # each version names the model it was written with
        assert p.model == f"frigo-{'ab'[(p.version - 1) % 2]}"
        assert p.path == f"models/{p.model}"
    final = read_pointer(pointer)
    assert final is not None and final.version == PUBLISHES and final.model == "frigo-b"
    assert final.base_model == "tiny" and final.format == "peft-lora"
    assert sorted(f.name for f in pointer.parent.iterdir()) == [".frigo.lock", "frigo.json"]


def test_concurrent_publishers_never_reuse_a_version(tmp_path: Path) -> None:
    path = _model(tmp_path, "m")
    versions: list[int] = []
    lock = threading.Lock()

    def publish_many() -> None:
        for _ in range(25):
            version = publish_volume(tmp_path, "frigo", "m", path, "safetensors")["version"]
            with lock:
                versions.append(version)

    threads = [threading.Thread(target=publish_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(versions) == list(range(1, 101))


@pytest.mark.parametrize(
    ("alias", "model", "path", "fmt", "error"),
    [
        ("Frigo", "m", "models/m", "peft-lora", "invalid alias"),
        ("frigo/../x", "m", "models/m", "peft-lora", "invalid alias"),
        ("a" * 64, "m", "models/m", "peft-lora", "invalid alias"),
        ("frigo", "../m", "models/m", "peft-lora", "invalid model name"),
        ("frigo", "m", "/etc/passwd", "peft-lora", "invalid model path"),
        ("frigo", "m", "models/../../m", "peft-lora", "invalid model path"),
        ("frigo", "m", "models/m", "gguf", "invalid format"),
        ("frigo", "missing", "models/missing", "peft-lora", "no complete model"),
    ],
)
def test_bad_input_writes_nothing(
    tmp_path: Path, alias: str, model: str, path: str, fmt: str, error: str
) -> None:
    _model(tmp_path, "m")
    publish_volume(tmp_path, "frigo", "m", "models/m", "peft-lora")
    before = (tmp_path / "aliases" / "frigo.json").read_bytes()
    with pytest.raises(BadInputError, match=error):
        publish_volume(tmp_path, alias, model, path, fmt)
    assert (tmp_path / "aliases" / "frigo.json").read_bytes() == before
    assert not [f for f in (tmp_path / "aliases").iterdir() if ".tmp" in f.name]


def test_the_command_line(tmp_path: Path) -> None:
    path = _model(tmp_path, "frigo-a")
    base = [sys.executable, "-m", "kubetune_trainer.publish", "--models-dir", str(tmp_path)]
    ok = subprocess.run(
        [*base, "--alias", "frigo", "--model", "frigo-a", "--path", path, "--format", "peft-lora"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["version"] == 1
    bad = subprocess.run(
        [*base, "--alias", "Bad!", "--model", "frigo-a", "--path", path, "--format", "peft-lora"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 42 and "invalid alias" in bad.stderr


def test_s3_pointer_is_written_after_the_model(s3: Any, s3_env: dict[str, str]) -> None:
    bucket = "kubetune-publish"
    s3.create_bucket(Bucket=bucket)
    prefix = f"s3://{bucket}/models"
    s3.put_object(Bucket=bucket, Key=f"models/frigo-a/{MODEL_MANIFEST}", Body=b"{}")
    uri = f"{prefix}/frigo-a"
    doc = publish_s3(prefix, "frigo", "frigo-a", uri, "peft-lora", "tiny")
    assert s3_pointer_key(prefix, "frigo") == (bucket, "models/aliases/frigo.json")
    body = s3.get_object(Bucket=bucket, Key="models/aliases/frigo.json")["Body"].read()
    stored = AliasPointer.model_validate(json.loads(body))
    assert stored.uri == uri and stored.path is None and stored.version == 1
    assert json.loads(body) == doc
    assert publish_s3(prefix, "frigo", "frigo-a", uri, "peft-lora")["version"] == 2
    # A model without its manifest (incomplete upload) is refused; the pointer is unchanged.
    with pytest.raises(BadInputError, match="no complete model"):
        publish_s3(prefix, "frigo", "frigo-b", f"{prefix}/frigo-b", "peft-lora")
    again = s3.get_object(Bucket=bucket, Key="models/aliases/frigo.json")["Body"].read()
    assert json.loads(again)["version"] == 2 and json.loads(again)["model"] == "frigo-a"
