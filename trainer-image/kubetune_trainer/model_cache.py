"""The shared model cache: each hf:// base model revision downloaded once, verified, reused.

Layout under the cache root (the cache claim, else `<models volume>/.cache/kubetune-hub`):

    models/<org>--<name>/<commit>/                 a complete snapshot, marker inside
    models/<org>--<name>/.partial-<commit>/        a download in progress (or killed)
    models/<org>--<name>/.<commit>.lock            the download lock of that revision

- A snapshot is used only when its marker (`names.MODEL_CACHE_MARKER`, written last, then the
  directory renamed into place) names the commit and every file has the size it lists.
- Downloads happen under an exclusive POSIX lock (`fcntl.lockf`) on the revision's lock file:
  concurrent jobs wanting the same revision wait, then find the snapshot complete. The kernel
  (or the NFS lock manager) drops the lock of a killed process, so a download killed halfway
  leaves only `.partial-<commit>`: the next job takes the lock, keeps the files that verify
  and downloads the rest (huggingface_hub resumes its `.incomplete` files).
- Every downloaded file is verified against the Hub's size and hash (LFS sha256, or the git
  blob id of a regular file) before the marker is written; a mismatch is deleted and fetched
  again once, then the run fails as retryable.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kubetune_crd import names
from kubetune_crd.hub import HubRef, HubRefError, is_hub_ref, parse_hub_ref
from kubetune_crd.trainer_contract import TrainerRunConfig

from kubetune_trainer.durable import fsync_dir, fsync_file
from kubetune_trainer.errors import BadInputError, RetryableError
from kubetune_trainer.hub import HubClient, HubFile, describe, hub_client, mismatch

LOCK_TIMEOUT_S = float(os.environ.get("KUBETUNE_MODEL_CACHE_LOCK_TIMEOUT_SECONDS", "7200"))
LOCK_POLL_S = 0.5
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
log = logging.getLogger(__name__)

CacheResult = Literal["hit", "miss"]


@dataclass(frozen=True)
class CachedModel:
    """A verified snapshot of a model revision, ready to load."""

    path: Path
    repo_id: str
    commit: str
    cache: CacheResult
    downloaded_bytes: int = 0


def repo_dir(root: Path, repo_id: str) -> Path:
    return root / "models" / repo_id.replace("/", "--")


def _read_marker(snapshot: Path) -> dict[str, object] | None:
    try:
        data = json.loads((snapshot / names.MODEL_CACHE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def complete(snapshot: Path, commit: str) -> bool:
    """The marker names `commit` and every file it lists has its size (no re-hash: the
    hashes were checked when the snapshot was written)."""
    marker = _read_marker(snapshot)
    if marker is None or marker.get("commit") != commit:
        return False
    files = marker.get("files")
    if not isinstance(files, list):
        return False
    for entry in files:
        path = snapshot / str(entry.get("path", ""))
        if not path.is_file() or path.stat().st_size != entry.get("size"):
            return False
    return True


@contextmanager
def revision_lock(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """An exclusive POSIX record lock (works across nodes on NFS with lockd / NFSv4)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise RetryableError(f"cannot lock the model cache ({exc})") from None
                if time.monotonic() > deadline:
                    raise RetryableError(
                        f"another job has been downloading this model for over {timeout_s:.0f}s"
                    ) from None
                time.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def fetch_model(ref: HubRef, cache_root: Path, client: HubClient | None = None) -> CachedModel:
    """The snapshot of `ref`'s revision from the cache, downloading it first on a miss."""
    client = client or hub_client()
    folder = repo_dir(cache_root, ref.repo_id)
    # A full commit names an immutable snapshot: a complete one needs no Hub request at all.
    if (
        ref.revision
        and COMMIT_RE.match(ref.revision)
        and complete(folder / ref.revision, ref.revision)
    ):
        return CachedModel(folder / ref.revision, ref.repo_id, ref.revision, "hit")
    commit, files = client.files(ref)
    snapshot = folder / commit
    if complete(snapshot, commit):
        return CachedModel(snapshot, ref.repo_id, commit, "hit")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RetryableError(f"cannot write to the model cache {cache_root}: {exc}") from None
    with revision_lock(folder / f".{commit}.lock"):
        if complete(snapshot, commit):  # another job finished it while this one waited
            return CachedModel(snapshot, ref.repo_id, commit, "hit")
        downloaded = _download(ref, commit, files, folder, client)
    log.info(
        "%s: downloaded %d bytes into the model cache (commit %s)",
        describe(ref),
        downloaded,
        commit,
    )
    return CachedModel(snapshot, ref.repo_id, commit, "miss", downloaded)


def _download(
    ref: HubRef, commit: str, files: list[HubFile], folder: Path, client: HubClient
) -> int:
    """Fill `.partial-<commit>`, verify it, write the marker, rename it into place (lock held)."""
    partial = folder / f".partial-{commit}"
    partial.mkdir(exist_ok=True)
    downloaded = 0
    for hub_file in files:
        target = partial / hub_file.name
        if target.is_file() and mismatch(target, hub_file) is None:
            continue  # left complete by a download that was killed later
        for attempt in (1, 2):
            target.unlink(missing_ok=True)
            client.download(ref, hub_file.name, commit, partial)
            problem = mismatch(target, hub_file)
            if problem is None:
                downloaded += target.stat().st_size
                break
            if attempt == 2:
                target.unlink(missing_ok=True)
                raise RetryableError(
                    f"{describe(ref)} file {hub_file.name!r} arrived damaged ({problem})"
                )
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # huggingface_hub's download records
    for hub_file in files:  # durable before the marker says so
        fsync_file(partial / hub_file.name)
    marker = {
        "repo": ref.repo_id,
        "commit": commit,
        "revision": ref.revision_or_default,
        "files": [
            {
                "path": f.name,
                "size": (partial / f.name).stat().st_size,
                "sha256": f.sha256,
                "blobId": f.blob_id,
            }
            for f in files
        ],
    }
    _write_synced(partial / names.MODEL_CACHE_MARKER, json.dumps(marker, indent=1))
    snapshot = folder / commit
    if snapshot.exists():  # a snapshot without a valid marker: never used, replaced
        shutil.rmtree(snapshot)
    partial.rename(snapshot)
    fsync_dir(folder)
    return downloaded


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def cache_root(cfg: TrainerRunConfig, work: Path) -> Path:
    """The shared cache the operator named, else a directory of this run only."""
    return Path(cfg.model_cache_dir) if cfg.model_cache_dir else work / "hub-cache"


def local_model(ref: str, cfg: TrainerRunConfig, work: Path) -> str:
    """A loadable path for `ref`: an hf:// model's cached snapshot, anything else as is."""
    if not is_hub_ref(ref):
        return ref
    try:
        parsed = parse_hub_ref(ref, "model")
    except HubRefError as exc:
        raise BadInputError(f"base model: {exc}") from None
    return str(fetch_model(parsed, cache_root(cfg, work)).path)


@dataclass(frozen=True)
class BaseModelPin:
    """An hf:// base model as the run used it: the reference, its commit, cache hit or miss."""

    ref: str
    commit: str
    cache: CacheResult


def resolve_base_model(
    cfg: TrainerRunConfig, work: Path
) -> tuple[TrainerRunConfig, BaseModelPin | None]:
    """The run config with an hf:// base model replaced by its cached snapshot's path, and the
    pin; any other base model is returned as is (None)."""
    if not is_hub_ref(cfg.base_model):
        return cfg, None
    try:
        ref = parse_hub_ref(cfg.base_model, "model")
    except HubRefError as exc:
        raise BadInputError(f"base model: {exc}") from None
    cached = fetch_model(ref, cache_root(cfg, work))
    log.info(
        "base model %s: commit %s, model cache %s", cfg.base_model, cached.commit, cached.cache
    )
    pin = BaseModelPin(cfg.base_model, cached.commit, cached.cache)
    return cfg.model_copy(update={"base_model": str(cached.path)}), pin
