"""Storing the model so that it is either complete or absent, and never overwritten.

Volume: the model is written to `<models dir>/.tmp-<name>-<random>/`, fsynced, then renamed
to `<models dir>/<name>/` (atomic on one filesystem; a rename onto an existing model fails).

S3: the writer first claims the name with a conditional PUT (`If-None-Match: *`) of
`<prefix>/<name>/.kubetune-owner.json`, uploads the files to a staging prefix
`<prefix>/.kubetune-staging/<name>/<attempt>/`, copies them under `<prefix>/<name>/` and
writes the manifest `kubetune-model.json` LAST, again with `If-None-Match: *`. A model
exists when its manifest does; an existing manifest is never overwritten.

Both: a model already stored by the same job (a retry after the final write) is reported as
done; one stored by anything else is a BadInputError (pick another modelName).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_crd.names import MODEL_MANIFEST

from kubetune_trainer.durable import fsync_dir, fsync_file
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.sources import classify_s3_error, s3_client, split_s3_uri

OWNER = ".kubetune-owner.json"
STAGING = ".kubetune-staging"


@dataclass(frozen=True)
class JobIdentity:
    namespace: str
    name: str
    uid: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {"namespace": self.namespace, "name": self.name, "uid": self.uid}

    def same_as(self, other: Any) -> bool:
        if not isinstance(other, dict):
            return False
        if other.get("namespace") != self.namespace or other.get("name") != self.name:
            return False
        return not (self.uid and other.get("uid") and other.get("uid") != self.uid)


@dataclass(frozen=True)
class StoredModel:
    uri: str
    manifest: dict[str, Any]
    size_bytes: int
    reused: bool = False
    manifest_sha256: str | None = None
    """sha256 of the manifest file as stored (it lists every file's sha256)."""


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest file's bytes, as both stores write it."""
    return (json.dumps(manifest, indent=2) + "\n").encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iter_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


def file_digests(root: Path) -> list[dict[str, Any]]:
    """Per-file sha256 and size, relative POSIX paths, sorted."""
    out = []
    for path in iter_files(root):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
        out.append(
            {
                "path": path.relative_to(root).as_posix(),
                "size": path.stat().st_size,
                "sha256": digest.hexdigest(),
            }
        )
    return out


def _make_readable(root: Path) -> None:
    """Models are read by other pods (serving) that may run as another user."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _fsync_tree(root: Path) -> None:
    for path in iter_files(root):
        fsync_file(path)
    for directory in sorted({p.parent for p in iter_files(root)} | {root}, reverse=True):
        fsync_dir(directory)


def _check_existing(manifest: dict[str, Any], job: JobIdentity, where: str) -> None:
    if not job.same_as(manifest.get("job")):
        owner = manifest.get("job") or {}
        raise BadInputError(
            f"a model already exists at {where} (written by job "
            f"{owner.get('namespace')}/{owner.get('name')}); it is never overwritten: "
            "choose another output.modelName"
        )


# ---------------------------------------------------------------- volume


class VolumeStore:
    """Models under a directory on a mounted volume."""

    def __init__(self, models_dir: str | Path) -> None:
        self.models_dir = Path(models_dir)

    def target(self, name: str) -> Path:
        return self.models_dir / name

    def existing(self, name: str, job: JobIdentity) -> StoredModel | None:
        """The model if this job stored it already; BadInputError if another did."""
        target = self.target(name)
        if not target.exists():
            return None
        try:
            raw = (target / MODEL_MANIFEST).read_bytes()
            manifest = json.loads(raw)
        except (OSError, ValueError):
            raise BadInputError(
                f"{target} already exists and is not a kubetune model; it is never "
                "overwritten: choose another output.modelName"
            ) from None
        _check_existing(manifest, job, str(target))
        size = sum(f["size"] for f in manifest.get("files", []))
        return StoredModel(str(target), manifest, size, reused=True, manifest_sha256=_sha256(raw))

    def staging_dir(self, name: str) -> Path:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.models_dir.glob(f".tmp-{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        path = self.models_dir / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def commit(self, staging: Path, name: str, manifest: dict[str, Any]) -> StoredModel:
        """Write the manifest into `staging` and rename it into place."""
        manifest = {**manifest, "files": file_digests(staging)}
        body = manifest_bytes(manifest)
        (staging / MODEL_MANIFEST).write_bytes(body)
        _make_readable(staging)
        _fsync_tree(staging)
        target = self.target(name)
        if target.exists():
            shutil.rmtree(staging, ignore_errors=True)
            raise BadInputError(f"a model appeared at {target} while training; not overwritten")
        try:
            staging.rename(target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BadInputError(f"cannot store the model at {target}: {exc}") from None
        fsync_dir(self.models_dir)
        size = sum(f["size"] for f in manifest["files"])
        return StoredModel(str(target), manifest, size, manifest_sha256=_sha256(body))


# ---------------------------------------------------------------- s3


def _is_precondition_failed(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "412") or status == 412


def _is_missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


class S3Store:
    """Models under an s3://bucket/prefix."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket, prefix = split_s3_uri(uri.rstrip("/") + "/")
        self.prefix = prefix.strip("/")
        self.s3 = client or s3_client(endpoint_url, region)

    def _key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p)

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def _get_bytes(self, key: str) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise classify_s3_error(exc, f"s3://{self.bucket}/{key}") from None
        return body

    def _get_json(self, key: str) -> dict[str, Any] | None:
        body = self._get_bytes(key)
        if body is None:
            return None
        try:
            value = json.loads(body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def existing(self, name: str, job: JobIdentity) -> StoredModel | None:
        raw = self._get_bytes(self._key(name, MODEL_MANIFEST))
        if raw is None:
            return None
        try:
            manifest = json.loads(raw)
        except ValueError:
            manifest = {}
        manifest = manifest if isinstance(manifest, dict) else {}
        _check_existing(manifest, job, self.uri(name))
        size = sum(f["size"] for f in manifest.get("files", []))
        return StoredModel(self.uri(name), manifest, size, True, _sha256(raw))

    def claim(self, name: str, job: JobIdentity) -> None:
        """Own the model name (conditional create); a retry of the same job owns it too."""
        key = self._key(name, OWNER)
        body = json.dumps({"job": job.as_dict()}).encode()
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
            return
        except Exception as exc:
            if not _is_precondition_failed(exc):
                raise classify_s3_error(exc, f"claim {self.uri(name)}") from None
        owner = self._get_json(key) or {}
        if not job.same_as(owner.get("job")):
            other = owner.get("job") or {}
            raise BadInputError(
                f"model name {self.uri(name)} is taken by job "
                f"{other.get('namespace')}/{other.get('name')}; choose another output.modelName"
            )

    def commit(self, local: Path, name: str, manifest: dict[str, Any]) -> StoredModel:
        """Claim, stage, copy into place, then write the manifest last (conditionally)."""
        job = JobIdentity(**manifest["job"])
        self.claim(name, job)
        files = file_digests(local)
        manifest = {**manifest, "files": files}
        staging = self._key(STAGING, name, uuid.uuid4().hex[:12])
        try:
            for entry in files:
                self.s3.upload_file(
                    str(local / entry["path"]),
                    self.bucket,
                    f"{staging}/{entry['path']}",
                    ExtraArgs={"Metadata": {"sha256": entry["sha256"]}},
                )
            for entry in files:
                self.s3.copy(
                    {"Bucket": self.bucket, "Key": f"{staging}/{entry['path']}"},
                    self.bucket,
                    self._key(name, entry["path"]),
                )
        except Exception as exc:
            raise classify_s3_error(exc, f"upload to {self.uri(name)}") from None
        body = manifest_bytes(manifest)
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self._key(name, MODEL_MANIFEST),
                Body=body,
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except Exception as exc:
            if _is_precondition_failed(exc):
                raise BadInputError(
                    f"a model appeared at {self.uri(name)}; not overwritten"
                ) from None
            raise classify_s3_error(exc, f"manifest of {self.uri(name)}") from None
        self._delete_prefix(staging)
        size = sum(f["size"] for f in files)
        return StoredModel(self.uri(name), manifest, size, manifest_sha256=_sha256(body))

    def _delete_prefix(self, prefix: str) -> None:
        try:
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix + "/"):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        except Exception:  # staging leftovers are harmless; a lifecycle rule can expire them
            return
