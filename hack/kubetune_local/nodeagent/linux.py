"""The few Linux calls a container runtime needs that Python's `os` lacks, through libc.

mount/unshare (a private mount namespace, bind mounts, read-only remounts, a tmpfs),
prctl (no_new_privs, dropping capabilities from the bounding set) and capset (a root
process's own capabilities). Used only by the launcher (`launch`), which runs as root.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CAP_VERSION_3 = 0x20080522

MOUNT_OPTION_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}
# Linux capability numbers, in order (capability.h); Kubernetes names them without CAP_.
CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(
    source: str | None, target: str, flags: int, fstype: str | None = None, data: str = ""
) -> None:
    src = source.encode() if source is not None else None
    kind = fstype.encode() if fstype is not None else None
    _check(
        _libc.mount(src, target.encode(), kind, ctypes.c_ulong(flags), data.encode() or None),
        f"mount {source} {target}",
    )


def unshare_mounts() -> None:
    """A private mount namespace: nothing mounted from now on is seen by the host."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    mount(None, "/", MS_REC | MS_PRIVATE)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (`\\040`)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: str) -> list[tuple[str, int]]:
    """(mount point, its per-mount flags but read-only) for each line of a mountinfo text."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        flags = 0
        for option in fields[5].split(","):
            flags |= MOUNT_OPTION_FLAGS.get(option, 0)
        points.append((_unescape(fields[4]), flags))
    return points


def remount_read_only(skip: tuple[str, ...] = ("/proc", "/sys", "/dev")) -> None:
    """Make every mount of this namespace read-only (keeping nosuid, nodev... as they are),
    but the kernel's own filesystems under `skip`."""
    for point, flags in mount_points(Path("/proc/self/mountinfo").read_text()):
        if any(point == s or point.startswith(s + "/") for s in skip):
            continue
        mount(None, point, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def capability_numbers(names: list[str]) -> set[int]:
    """Capability numbers for Kubernetes names (`NET_ADMIN`, `CAP_CHOWN`, `ALL`)."""
    last = last_capability()
    found: set[int] = set()
    for raw in names:
        name = raw.upper().removeprefix("CAP_")
        if name == "ALL":
            found |= set(range(last + 1))
        elif name in CAPABILITIES and CAPABILITIES.index(name) <= last:
            found.add(CAPABILITIES.index(name))
    return found


def last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def drop_bounding(keep: set[int]) -> None:
    """Remove every capability not in `keep` from the bounding set (needs CAP_SETPCAP)."""
    for cap in range(last_capability() + 1):
        if cap not in keep:
            _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")


def set_own_capabilities(keep: set[int]) -> None:
    """A root process's effective, permitted and inheritable sets, reduced to `keep`."""
    mask = sum(1 << c for c in keep)
    low, high = mask & 0xFFFFFFFF, mask >> 32
    header = _CapHeader(CAP_VERSION_3, 0)
    data = (_CapData * 2)(_CapData(low, low, low), _CapData(high, high, high))
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def no_new_privs() -> None:
    """execve can no longer grant privileges (setuid bits, file capabilities)."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
