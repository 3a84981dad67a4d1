"""Starts one container process: its mount namespace, its user and its restrictions.

Run as `python -m kubetune_local.nodeagent.launch SPEC.json` by the container's shim (a
separate small process rather than a `preexec_fn`, which is unsafe in the multi-threaded
agent). As root it joins the container's cgroup, unshares the mount namespace and makes `/`
private so nothing leaks back to the host, then:

1. for a non-root container, puts a tmpfs over any directory that user could not traverse
   on the way to the project's Python environment (an interpreter under /root, a checkout in
   a private home) and binds just those paths back, read-only: the rest stays hidden;
2. creates the mount points, then for `readOnlyRootFilesystem` remounts every filesystem
   read-only (but /proc, /sys and /dev);
3. bind-mounts every volume at its mountPath, read-write or read-only as asked;
4. changes to the working directory, drops capabilities, becomes runAsUser/runAsGroup with
   the supplementary groups (fsGroup included), sets no_new_privs when
   allowPrivilegeEscalation is false, and `exec`s the command: the container's PID is this
   process's PID.

Needs root (CAP_SYS_ADMIN, CAP_SETUID...): the agent runs everything as root.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from kubetune_local.nodeagent import linux

Obj = dict[str, Any]


def make_target(source_fd: int, target: str) -> None:
    """Create the mount point `target` to match the source's type, when missing."""
    tgt = Path(target)
    if stat.S_ISDIR(os.fstat(source_fd).st_mode):
        tgt.mkdir(parents=True, exist_ok=True)
    elif not tgt.exists():
        tgt.parent.mkdir(parents=True, exist_ok=True)
        tgt.touch()


def bind(source_fd: int, target: str, read_only: bool) -> None:
    """Bind the path open as `source_fd` onto `target`, read-only or read-write as asked.

    Sources are opened (O_PATH) before any mount, so a mountPath that shadows the agent's
    state dir cannot hide the sources of the mounts after it. The remount sets the new
    mount's own flag: a bind copies its source mount's flags, read-only ones included.
    """
    source = f"/proc/self/fd/{source_fd}"
    linux.mount(source, target, linux.MS_BIND | linux.MS_REC)
    flags = linux.MS_REMOUNT | linux.MS_BIND | (linux.MS_RDONLY if read_only else 0)
    linux.mount(source, target, flags)


def shadowed(path: str, targets: list[str]) -> bool:
    """Whether a mount at one of `targets` hides `path` (a target strictly above it)."""
    return any(Path(path).is_relative_to(t) and Path(path) != Path(t) for t in targets)


def traversable(directory: Path, uid: int, gids: set[int]) -> bool:
    """Whether `uid` (with groups `gids`) may pass through `directory` (its x bit)."""
    if uid == 0:
        return True
    st = directory.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def blocking_dir(path: str, uid: int, gids: set[int]) -> Path | None:
    """The topmost directory above `path` that `uid` cannot pass through, if any."""
    target = Path(path)
    for parent in reversed(target.parents):
        if not traversable(parent, uid, gids):
            return parent
    return None


def unhide(paths: list[str], uid: int, gids: set[int]) -> None:
    """Make `paths` reachable for `uid`: a tmpfs over each blocking directory, with just
    these paths bound back (read-only) inside it."""
    blocked: dict[Path, list[str]] = {}
    for path in paths:
        top = blocking_dir(path, uid, gids)
        if top is not None and Path(path).exists():
            blocked.setdefault(top, []).append(path)
    for top, inside in sorted(blocked.items(), key=lambda item: len(item[0].parts)):
        fds = [os.open(p, os.O_PATH) for p in inside]
        linux.mount("tmpfs", str(top), 0, "tmpfs", "mode=0755")
        for path, fd in zip(inside, fds, strict=True):
            make_target(fd, path)
            bind(fd, path, read_only=True)
            os.close(fd)


def drop_privileges(security: Obj) -> None:
    """Capabilities, user, groups and no_new_privs, as the container's securityContext says."""
    every = set(range(linux.last_capability() + 1))
    keep = (every - linux.capability_numbers(security.get("drop") or [])) | (
        linux.capability_numbers(security.get("add") or []) & every
    )
    uid, gid = int(security.get("uid", 0)), int(security.get("gid", 0))
    if keep != every:
        linux.drop_bounding(keep)
    os.setgroups([int(g) for g in security.get("groups") or []])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # to a non-root uid: every capability is gone
    if uid == 0 and keep != every:
        linux.set_own_capabilities(keep)
    if security.get("no_new_privs"):
        linux.no_new_privs()


def set_up_mounts(spec: Obj, security: Obj) -> None:
    """The container's mount namespace: hidden paths, mount points, read-only root, volumes."""
    uid = int(security.get("uid", 0))
    gids = {int(security.get("gid", 0)), *(int(g) for g in security.get("groups") or [])}
    read_only_root = bool(security.get("read_only_root"))
    linux.unshare_mounts()
    mounts: list[Obj] = spec["mounts"]
    fds = [os.open(m["source"], os.O_PATH) for m in mounts]
    targets = [m["target"] for m in mounts]
    keep = [k for k in spec.get("keep_visible", []) if shadowed(k, targets)]
    keep_fds = [os.open(k, os.O_PATH) for k in keep]
    if uid != 0:  # its Python environment, and the agent's working directory it starts in
        workdir = [spec["workdir"]] if spec.get("host_workdir") else []
        unhide([*spec.get("keep_visible", []), *workdir], uid, gids)
    for m, fd in zip(mounts, fds, strict=True):
        make_target(fd, m["target"])
    if read_only_root:
        if not spec.get("host_workdir"):  # made now: the root is read-only from here on
            with contextlib.suppress(OSError):
                Path(spec["workdir"]).mkdir(parents=True, exist_ok=True)
        linux.remount_read_only()
    for m, fd in zip(mounts, fds, strict=True):
        bind(fd, m["target"], m["read_only"])
    for path, fd in zip(keep, keep_fds, strict=True):
        make_target(fd, path)
        bind(fd, path, read_only=read_only_root)  # the project's Python env, back on top
    for fd in fds + keep_fds:
        os.close(fd)


def enter_host_workdir(fd: int, path: str) -> None:
    """Change to the agent's directory: by its path when the mounts left it there (so
    getcwd works), else through the descriptor opened before a mount shadowed it."""
    try:
        now, then = Path(path).stat(), os.fstat(fd)
        same = (now.st_dev, now.st_ino) == (then.st_dev, then.st_ino)
    except OSError:
        same = False
    if same:
        os.chdir(path)
    else:
        os.fchdir(fd)
    os.close(fd)


def set_up(spec: Obj) -> None:
    """Everything before exec; OSError when something cannot be set up."""
    os.umask(0o022)
    security: Obj = spec.get("security") or {}
    if spec.get("cgroup"):
        Path(spec["cgroup"], "cgroup.procs").write_text(str(os.getpid()))
    # Everything that lives on the host (volume sources, the agent's working directory)
    # is opened before the first mount: a mountPath may shadow its parent directories
    # (an emptyDir at /tmp while the agent's state dir is under /tmp).
    host_workdir = None
    if spec.get("host_workdir"):
        host_workdir = os.open(spec["workdir"], os.O_RDONLY | os.O_DIRECTORY)
    non_root = int(security.get("uid", 0)) != 0
    if spec["mounts"] or security.get("read_only_root") or non_root:
        set_up_mounts(spec, security)
    if host_workdir is not None:
        enter_host_workdir(host_workdir, spec["workdir"])
    else:
        workdir = Path(spec["workdir"])  # a path inside the container's mounts
        workdir.mkdir(parents=True, exist_ok=True)
        os.chdir(workdir)
    if security:
        drop_privileges(security)


def main() -> None:
    """Read the spec, set up the container and exec its command."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        set_up(spec)
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
