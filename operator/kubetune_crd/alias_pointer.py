"""An alias pointer file as `kubetune_trainer.publish` writes it and readers (serving, tests)
read it: `<aliases dir>/<alias>.json` holding
`{"alias", "model", "path" or "uri", "base_model", "format", "version", "updated"}`.

The writer replaces it atomically (temporary file, fsync, rename), so a reader sees the old or
the new one, never half of one. Unknown keys are kept (the writer may add some); a file that
does not parse or does not validate is reported and skipped, never half-applied.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubetune_crd.promotion import ALIAS_PATTERN, POINTER_SUFFIX

log = logging.getLogger(__name__)


class AliasPointer(BaseModel):
    """One published alias: which model it names now, and where that model's files are."""

    model_config = ConfigDict(extra="allow", frozen=True)

    alias: str = Field(pattern=ALIAS_PATTERN)
    model: str = Field(min_length=1, max_length=253)
    version: int = Field(ge=0)
    path: str | None = None
    uri: str | None = None
    base_model: str | None = None
    format: str | None = None
    updated: str | None = None


def read_pointer(file: Path) -> AliasPointer | None:
    """The pointer in `file`, or None (logged) when it is unreadable or invalid."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        pointer = AliasPointer.model_validate(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("skipping alias pointer %s: %s", file, str(exc).splitlines()[0])
        return None
    if pointer.alias != file.name.removesuffix(POINTER_SUFFIX):
        log.warning("skipping alias pointer %s: it names alias %r", file, pointer.alias)
        return None
    return pointer


def read_pointers(aliases_dir: Path, only: frozenset[str] = frozenset()) -> dict[str, AliasPointer]:
    """Every valid pointer in `aliases_dir` by alias (just the aliases in `only` when given).
    Temporary files of a writer in progress (`.<alias>.json.tmp...`) are not pointers."""
    pointers: dict[str, AliasPointer] = {}
    try:
        files = sorted(aliases_dir.glob(f"*{POINTER_SUFFIX}"))
    except OSError as exc:
        log.warning("cannot list %s: %s", aliases_dir, exc)
        return pointers
    for file in files:
        if file.name.startswith("."):
            continue
        if only and file.name.removesuffix(POINTER_SUFFIX) not in only:
            continue
        pointer = read_pointer(file)
        if pointer is not None:
            pointers[pointer.alias] = pointer
    return pointers
