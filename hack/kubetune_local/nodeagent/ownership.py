"""A pod's `fsGroup` applied to its volumes, as the kubelet's SetVolumeOwnership does.

Every file and directory of the volume gets group fsGroup; files get user and group
read-write (read-only for secret-like volumes), directories also the x bits and setgid, so
what the pod's non-root user creates there belongs to the fsGroup too. Symbolic links are
re-grouped but not followed. emptyDirs start world-writable (mode 0777), as the kubelet
makes them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

RW_MASK = 0o660
RO_MASK = 0o440
EXEC_MASK = 0o110
EMPTY_DIR_MODE = 0o777


def _own(path: Path, gid: int, mask: int, is_dir: bool) -> None:
    st = path.lstat()
    if st.st_gid != gid:
        os.lchown(path, -1, gid)
    if stat.S_ISLNK(st.st_mode):
        return
    mode = stat.S_IMODE(st.st_mode) | mask
    if is_dir:
        mode |= stat.S_ISGID | EXEC_MASK
    if mode != stat.S_IMODE(st.st_mode) or st.st_gid != gid:  # chown may clear setgid
        path.chmod(mode)


def apply_fs_group(root: Path, gid: int, read_only: bool = False) -> None:
    """Give `root` and everything under it to group `gid` (see the module doc)."""
    mask = RO_MASK if read_only else RW_MASK
    if not root.exists():
        return
    _own(root, gid, mask, root.is_dir() and not root.is_symlink())
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            with contextlib.suppress(FileNotFoundError):  # a pod may be deleting files
                path = Path(dirpath, name)
                _own(path, gid, mask, not path.is_symlink())
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                _own(Path(dirpath, name), gid, mask, False)


def make_empty_dir(path: Path) -> None:
    """An emptyDir's directory: created when missing, world-writable like the kubelet's."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(EMPTY_DIR_MODE)
