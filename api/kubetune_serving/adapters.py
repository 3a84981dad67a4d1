"""Which vLLM adapter an alias pointer version is, and where its files are on this pod.

Each published version is loaded into vLLM under a name of its own, `<alias>-v<version>`, so a
request runs wholly on one version and the previous one can stay loaded until its last
request has ended (see the package docstring for why vLLM's own in-place reload is not used).
"""

from __future__ import annotations

from pathlib import Path

from kubetune_crd import names
from kubetune_crd.alias_pointer import AliasPointer


def adapter_name(pointer: AliasPointer) -> str:
    """The name this version is loaded under in vLLM: `<alias>-v<version>`."""
    return f"{pointer.alias}-v{pointer.version}"


def is_lora(pointer: AliasPointer) -> bool:
    """Whether the model is a LoRA adapter (unknown format: assumed, vLLM checks it)."""
    return pointer.format is None or pointer.format.startswith(names.FORMAT_LORA)


def adapter_path(pointer: AliasPointer, models_dir: Path) -> Path | None:
    """The adapter's directory: a relative `path` is inside the models volume (`models/<name>`,
    claim-relative); None for an S3-only model (vLLM loads adapters from local files)."""
    if not pointer.path:
        return None
    path = Path(pointer.path)
    if path.is_absolute() or ".." in path.parts:
        return None  # the writer only writes claim-relative paths: anything else is not ours
    return models_dir / path
