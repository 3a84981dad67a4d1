"""The Hugging Face Hub as a source: endpoint check, token, error classification, datasets.

- Endpoint: huggingface.co, or `HF_ENDPOINT` (a mirror) once its address passed the SSRF
  guard: https and public addresses only, unless the operator set
  `KUBETUNE_HUB_ALLOW_INTERNAL=true` (an in-cluster mirror): then http and loopback/private
  addresses too, but never link-local (cloud metadata) or reserved ones.
- Token: `HF_TOKEN` (from spec.hub.tokenSecretRef's Secret); it is handed to huggingface_hub
  and scrubbed from every message this module writes.
- Errors: refused access (401/403, gated or private) and missing repos, revisions or files are
  BadInputError (retrying cannot help); 5xx, 429 and network trouble are RetryableError.
- Datasets (`hf://datasets/org/name[@revision][/path]`): one file downloaded into the run's
  work directory at the resolved commit, checked against the Hub's size and sha256.
  Models go through the shared cache (`model_cache.py`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from kubetune_crd import names
from kubetune_crd.hub import HubRef

from kubetune_trainer.errors import BadInputError, RetryableError
from kubetune_trainer.sources import (
    MAX_DATASET_BYTES,
    FetchedDataset,
    IPAddress,
    Resolver,
    checked_address,
    is_public_address,
    system_resolver,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
DATASET_SUFFIXES = (".jsonl", ".csv")


@dataclass(frozen=True)
class HubFile:
    """A file of a repo at one commit, as the Hub describes it."""

    name: str
    size: int | None
    blob_id: str | None
    """The git blob sha1 (regular files)."""
    sha256: str | None
    """The LFS object's sha256 (large files)."""


@dataclass(frozen=True)
class HubClient:
    """Where the Hub is and the token to show it (never printed)."""

    endpoint: str
    token: str | None

    def api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token or False)

    def scrub(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text

    def download(self, ref: HubRef, filename: str, commit: str, local_dir: Path) -> Path:
        """One file of the repo at `commit` into `local_dir` (huggingface_hub resumes a file
        an earlier attempt left incomplete)."""
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(
                ref.repo_id,
                filename,
                repo_type=ref.repo_type,
                revision=commit,
                local_dir=local_dir,
                endpoint=self.endpoint,
                token=self.token or False,
            )
        except Exception as exc:
            raise hub_error(exc, f"{describe(ref)} file {filename!r}", self) from None
        return Path(path)

    def files(self, ref: HubRef) -> tuple[str, list[HubFile]]:
        """(commit, files) of the ref's revision: one API call."""
        api = self.api()
        info_of = api.dataset_info if ref.repo_type == "dataset" else api.model_info
        try:
            info = info_of(ref.repo_id, revision=ref.revision_or_default, files_metadata=True)
        except Exception as exc:
            raise hub_error(exc, describe(ref), self) from None
        if not info.sha:
            raise RetryableError(f"{describe(ref)}: the Hub named no commit for the revision")
        files = [
            HubFile(
                s.rfilename,
                s.size,
                s.blob_id,
                s.lfs.sha256 if s.lfs else None,
            )
            for s in info.siblings or []
        ]
        return str(info.sha), files


def describe(ref: HubRef) -> str:
    kind = "dataset" if ref.repo_type == "dataset" else "model"
    return f"Hub {kind} {ref.repo_id}@{ref.revision_or_default}"


# ---------------------------------------------------------------- endpoint and token


def internal_address_ok(ip: IPAddress) -> bool:
    """Loopback and private ranges (a mirror in the cluster); never link-local, multicast,
    unspecified or reserved addresses (cloud metadata lives in link-local)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return False
    return bool(ip.is_loopback or ip.is_private or is_public_address(ip))


def check_endpoint(url: str, allow_internal: bool, resolver: Resolver = system_resolver) -> str:
    """The endpoint without a trailing slash; BadInputError when the guard refuses it."""
    parts = urlsplit(url)
    allowed = ("https", "http") if allow_internal else ("https",)
    if parts.scheme not in allowed:
        raise BadInputError(f"{names.ENV_HF_ENDPOINT} must be an https:// URL, not {url!r}")
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise BadInputError(
            f"{names.ENV_HF_ENDPOINT} {url!r} needs a host and no credentials, query or fragment"
        )
    checked_address(
        parts.hostname,
        parts.port or (443 if parts.scheme == "https" else 80),
        resolver,
        internal_address_ok if allow_internal else is_public_address,
        what="Hub endpoint host",
        refused_kind="refused",
        allowed="only public addresses"
        + (" or loopback/private ones" if allow_internal else "")
        + " are allowed",
    )
    return url.rstrip("/")


def hub_client(
    env: Mapping[str, str] | None = None, resolver: Resolver = system_resolver
) -> HubClient:
    """The Hub this trainer talks to, checked, with the token from the environment."""
    env = os.environ if env is None else env
    endpoint = env.get(names.ENV_HF_ENDPOINT) or DEFAULT_ENDPOINT
    allow_internal = env.get(names.ENV_HUB_ALLOW_INTERNAL, "").lower() == "true"
    if endpoint != DEFAULT_ENDPOINT:
        endpoint = check_endpoint(endpoint, allow_internal, resolver)
    return HubClient(endpoint, env.get(names.ENV_HF_TOKEN) or None)


def hub_error(exc: Exception, what: str, client: HubClient) -> Exception:
    """BadInputError for refused, gated or missing repos/revisions/files; RetryableError for
    transient trouble. The message never holds the token."""
    from huggingface_hub import errors as hf

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf.GatedRepoError) or status in (401, 403):
        if client.token:
            why = "the token from spec.hub.tokenSecretRef was refused or has no access to it"
        else:
            why = (
                "no token was given: set spec.hub.tokenSecretRef to a Secret whose "
                f"{names.HF_TOKEN_SECRET_KEY} key holds a token with access"
            )
        return BadInputError(
            f"{what}: the Hub refused access (HTTP {status}, gated or private repo); {why}"
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return BadInputError(f"{what}: revision not found on the Hub")
    if isinstance(exc, hf.RemoteEntryNotFoundError | hf.EntryNotFoundError):
        return BadInputError(f"{what}: file not found in the repo")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return BadInputError(f"{what}: repository not found on the Hub")
    if (
        isinstance(exc, hf.HfHubHTTPError)
        and status is not None
        and 400 <= status < 500
        and status != 429  # too many requests: later
    ):
        return BadInputError(f"{what}: the Hub answered HTTP {status}")
    first = client.scrub(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
    return RetryableError(f"{what}: could not be fetched from the Hub ({first[:300]})")


# ---------------------------------------------------------------- verification


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (what the Hub reports as a regular file's blob id)."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def mismatch(path: Path, expected: HubFile) -> str | None:
    """Why the local file is not the Hub's, or None when it matches size and hash."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"{size} bytes, the Hub says {expected.size}"
    if expected.sha256 is not None:
        if sha256_of(path) != expected.sha256:
            return "sha256 differs from the Hub's"
    elif expected.blob_id is not None and git_blob_sha1(path) != expected.blob_id:
        return "git blob id differs from the Hub's"
    return None


# ---------------------------------------------------------------- datasets


def default_split_file(files: Sequence[HubFile], ref: HubRef) -> HubFile:
    """The repo's train split file: `train.jsonl|csv` at the root, then under `data/`, then
    the one file whose name starts with `train`, then the repo's only csv/jsonl file."""
    candidates = [f for f in files if f.name.lower().endswith(DATASET_SUFFIXES)]
    tiers = [
        [f for f in candidates if "/" not in f.name and PurePosixPath(f.name).stem == "train"],
        [
            f
            for f in candidates
            if PurePosixPath(f.name).parent.as_posix() == "data"
            and PurePosixPath(f.name).stem == "train"
        ],
        [f for f in candidates if PurePosixPath(f.name).name.lower().startswith("train")],
        candidates,
    ]
    for tier in tiers:
        if len(tier) == 1:
            return tier[0]
        if len(tier) > 1:
            listed = ", ".join(sorted(f.name for f in tier)[:10])
            raise BadInputError(
                f"{describe(ref)} has several candidate train files ({listed}): name one, "
                f"hf://datasets/{ref.repo_id}[@revision]/<path>"
            )
    raise BadInputError(
        f"{describe(ref)} has no .jsonl or .csv file to train on "
        "(other formats are not supported: convert the split to jsonl)"
    )


def fetch_hub_dataset(
    ref: HubRef, work_dir: Path, client: HubClient | None = None, max_bytes: int = MAX_DATASET_BYTES
) -> FetchedDataset:
    """Download the dataset file at the revision's commit; the URI names that commit."""
    client = client or hub_client()
    commit, files = client.files(ref)
    if ref.path is None:
        wanted = default_split_file(files, ref)
    else:
        found = [f for f in files if f.name == ref.path]
        if not found:
            raise BadInputError(f"{describe(ref)} has no file {ref.path!r}")
        wanted = found[0]
    if wanted.size is not None and wanted.size > max_bytes:
        raise BadInputError(f"dataset is {wanted.size} bytes; the limit is {max_bytes}")
    local = client.download(ref, wanted.name, commit, work_dir / "hub-dataset")
    problem = mismatch(local, wanted)
    if problem:
        raise RetryableError(f"{describe(ref)} file {wanted.name!r} arrived damaged ({problem})")
    size = local.stat().st_size
    uri = f"hf://datasets/{ref.repo_id}@{commit}/{wanted.name}"
    return FetchedDataset(local, uri, sha256_of(local), size, revision=commit)
