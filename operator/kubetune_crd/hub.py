"""Hugging Face Hub references: `hf://org/name[@revision]` (a model) and
`hf://datasets/org/name[@revision][/path/in/repo]` (a dataset file).

The grammar is huggingface_hub's own `HfFileSystem` URL form: a revision containing `/`
(`refs/pr/1`) is percent-encoded (`@refs%2Fpr%2F1`). The regular expressions below go into
the CRD schema (`spec.py`); `parse_hub_ref` adds what a schema pattern cannot say (no `..`
segment) and is what the API, the operator and the trainer all call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

HF_SCHEME = "hf://"
DATASETS_PREFIX = "datasets/"

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO = rf"{_SEGMENT}/{_SEGMENT}"
_REVISION = r"@[A-Za-z0-9._%-]{1,255}"
_PATH = r"(/[A-Za-z0-9._-]+)+"  # no nested counts: Go regexp (the apiserver) caps them

HUB_MODEL_PATTERN = rf"hf://{_REPO}({_REVISION})?"
"""A model repo on the Hub (no regex anchors: spec.py combines it with other forms)."""
HUB_DATASET_PATTERN = rf"hf://datasets/{_REPO}({_REVISION})?({_PATH})?"
"""A dataset repo, optionally a file inside it."""

_MODEL_RE = re.compile(rf"^hf://(?P<repo>{_REPO})(?P<rev>{_REVISION})?$")
_DATASET_RE = re.compile(
    rf"^hf://datasets/(?P<repo>{_REPO})(?P<rev>{_REVISION})?(?P<path>{_PATH})?$"
)

RepoType = Literal["model", "dataset"]


class HubRefError(ValueError):
    """Not a valid hf:// reference; the message says why."""


@dataclass(frozen=True)
class HubRef:
    """A parsed hf:// reference."""

    repo_type: RepoType
    repo_id: str
    revision: str | None = None
    """As written, percent-decoded (a branch, tag or commit); None: the repo's default branch."""
    path: str | None = None
    """A file inside a dataset repo; None: the repo's train split file."""

    @property
    def revision_or_default(self) -> str:
        return self.revision or "main"


def is_hub_ref(ref: str) -> bool:
    return ref.startswith(HF_SCHEME)


def parse_hub_ref(ref: str, expected: RepoType | None = None) -> HubRef:
    """Parse an hf:// reference; HubRefError when malformed or of the other kind."""
    if not is_hub_ref(ref):
        raise HubRefError(f"{ref!r} is not an hf:// reference")
    is_dataset = ref.startswith(HF_SCHEME + DATASETS_PREFIX)
    match = (_DATASET_RE if is_dataset else _MODEL_RE).match(ref)
    if match is None:
        form = (
            "hf://datasets/org/name[@revision][/path/in/repo]"
            if is_dataset
            else "hf://org/name[@revision]"
        )
        raise HubRefError(f"{ref!r} is not a valid Hub reference: use {form}")
    kind: RepoType = "dataset" if is_dataset else "model"
    if expected is not None and kind != expected:
        want = "a model (hf://org/name)" if expected == "model" else "a dataset (hf://datasets/...)"
        raise HubRefError(f"{ref!r} names a {kind} repo; expected {want}")
    revision = unquote(match.group("rev")[1:]) if match.group("rev") else None
    path = match.groupdict().get("path")
    path = path[1:] if path else None
    for part in [*match.group("repo").split("/"), *(path.split("/") if path else [])]:
        if part in (".", ".."):
            raise HubRefError(f"{ref!r} may not contain '.' or '..' segments")
    if revision is not None and (".." in revision.split("/") or revision.startswith("/")):
        raise HubRefError(f"{ref!r} has an invalid revision {revision!r}")
    return HubRef(kind, match.group("repo"), revision, path)
