"""fsync helpers: what the checkpoint, model-store, model-cache and pointer writers share.

Each of them makes a write durable the same way before it publishes it (a completion
marker, a rename, a pointer): flush the file's data, then the directory entry that names it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    """The file's data on disk."""
    with path.open("rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """The directory's entries (a file created or renamed in it) on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
