"""Starts one container process inside its own mount namespace.

Run as `python -m kubetune_local.nodeagent.launch SPEC.json` by the node agent (a separate
small process rather than a `preexec_fn`, which is unsafe in the multi-threaded agent). It
joins the container's cgroup, unshares the mount namespace, makes `/` private so nothing
leaks back to the host, bind-mounts every volume at its mountPath (read-only where asked),
changes to the working directory and `exec`s the command: the container's PID is this
process's PID. Needs root (CAP_SYS_ADMIN); the agent runs everything as root.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import stat
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    _check(
        _libc.mount(src, target.encode(), None, ctypes.c_ulong(flags), None),
        f"mount {source} {target}",
    )


def bind(source_fd: int, target: str, read_only: bool) -> None:
    """Bind the path open as `source_fd` onto `target` (created to match its type when missing).

    Sources are opened (O_PATH) before any mount, so a mountPath that shadows the agent's
    state dir cannot hide the sources of the mounts after it.
    """
    tgt = Path(target)
    if stat.S_ISDIR(os.fstat(source_fd).st_mode):
        tgt.mkdir(parents=True, exist_ok=True)
    elif not tgt.exists():
        tgt.parent.mkdir(parents=True, exist_ok=True)
        tgt.touch()
    source = f"/proc/self/fd/{source_fd}"
    _mount(source, target, MS_BIND | MS_REC)
    if read_only:
        _mount(source, target, MS_REMOUNT | MS_BIND | MS_RDONLY)


def shadowed(path: str, targets: list[str]) -> bool:
    """Whether a mount at one of `targets` hides `path` (a target strictly above it)."""
    return any(Path(path).is_relative_to(t) and Path(path) != Path(t) for t in targets)


def main() -> None:
    """Read the spec, set up the namespace and exec the container's command."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        if spec.get("cgroup"):
            Path(spec["cgroup"], "cgroup.procs").write_text(str(os.getpid()))
        # Everything that lives on the host (volume sources, the agent's working directory)
        # is opened before the first mount: a mountPath may shadow its parent directories
        # (an emptyDir at /tmp while the agent's state dir is under /tmp).
        host_workdir = None
        if spec.get("host_workdir"):
            host_workdir = os.open(spec["workdir"], os.O_RDONLY | os.O_DIRECTORY)
        if spec["mounts"]:
            _check(_libc.unshare(CLONE_NEWNS), "unshare")
            _mount(None, "/", MS_REC | MS_PRIVATE)
            fds = [os.open(m["source"], os.O_PATH) for m in spec["mounts"]]
            targets = [m["target"] for m in spec["mounts"]]
            keep = [k for k in spec.get("keep_visible", []) if shadowed(k, targets)]
            keep_fds = [os.open(k, os.O_PATH) for k in keep]
            for m, fd in zip(spec["mounts"], fds, strict=True):
                bind(fd, m["target"], m["read_only"])
            for path, fd in zip(keep, keep_fds, strict=True):
                bind(fd, path, read_only=False)  # the project's Python env, back on top
            for fd in fds + keep_fds:
                os.close(fd)
        if host_workdir is not None:
            os.fchdir(host_workdir)
            os.close(host_workdir)
        else:
            workdir = Path(spec["workdir"])  # a path inside the container's mounts
            workdir.mkdir(parents=True, exist_ok=True)
            os.chdir(workdir)
    except OSError as exc:
        print(f"kubetune node agent: container setup failed: {exc}", file=sys.stderr, flush=True)
        os._exit(128)
    argv: list[str] = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])  # noqa: S606 - exec is the point
    except OSError as exc:
        print(f"kubetune node agent: cannot run {argv[0]!r}: {exc}", file=sys.stderr, flush=True)
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


if __name__ == "__main__":
    main()
