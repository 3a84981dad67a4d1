"""One container's launch spec: its command, environment, mounts, user and devices.

What the kubelet and the container runtime work out before starting a container, from the
pod and the node: the environment (service variables, the image-less PATH of the project's
Python environment, HOME for the user it runs as, env/envFrom, the GPUs allocated to it),
the command (`command`/`args`, or the image's name as the program), the bind mounts with
the termination-message file, the memory limit, and the security context (`security`),
which may refuse the container (runAsNonRoot with uid 0). A kubetune image declares its
non-root user in its /etc/passwd (programs such as kopf look their user up); a container
whose uid or gid the host does not know gets the host's /etc/passwd and /etc/group with
that entry added, bound read-only over its own.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_local.nodeagent.cgroups import cluster_prefix
from kubetune_local.nodeagent.config import AgentConfig
from kubetune_local.nodeagent.devices import Allocator, requested
from kubetune_local.nodeagent.envvars import (
    ConfigError,
    Lookup,
    expand_command,
    parse_quantity,
    resolve_env,
)
from kubetune_local.nodeagent.process import CONTAINER_ENV, SHIM_POD_ENV, LaunchSpec
from kubetune_local.nodeagent.security import RunAs, home_for, run_as
from kubetune_local.nodeagent.status import ContainerRecord
from kubetune_local.nodeagent.volumes import Mount, VolumeBuilder, mount_plan

Obj = dict[str, Any]
TERMINATION_LOG_MODE = 0o666  # the kubelet's: whatever user the container runs as writes it

# Passed through from the agent to every container: host quirks, not configuration.
PASSTHROUGH = (
    "OMP_WAIT_POLICY",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
)


def host_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The agent's host quirks every container inherits. This node shares its few cores with
    the control plane: OpenMP threads sleep instead of spinning unless the host says otherwise
    (spinning slows a trainer 10-20x there; in a real Job the trainer keeps the library's default).
    """
    env = {k: environ[k] for k in PASSTHROUGH if k in environ}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def default_argv(image: str, args: list[str], path: str) -> list[str]:
    """What runs when a container has no `command` (the image's ENTRYPOINT is unknown here).

    Args that start with a program on PATH run as they are (images like `python` have no
    ENTRYPOINT); otherwise the image's base name, when it is a program on PATH (the
    `kubetune-trainer` image runs `kubetune-trainer`), is put in front of them.
    """
    if args and shutil.which(args[0], path=path):
        return args
    name = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return [name, *args] if name and shutil.which(name, path=path) else []


def _known(lookup: Any, ident: int | str) -> bool:
    try:
        lookup(ident)
    except KeyError:
        return False
    return True


def identity_mounts(uid: int, gid: int, cdir: Path) -> list[Mount]:
    """/etc/passwd and /etc/group that name the container's user and group, as the image's
    would, when the host's do not (none when they do)."""
    mounts = []
    if not _known(pwd.getpwuid, uid):
        name = "kubetune" if not _known(pwd.getpwnam, "kubetune") else f"kubetune-{uid}"
        entry = f"{name}:x:{uid}:{gid}:kubetune:/:/usr/sbin/nologin\n"
        mounts.append(_with_entry(Path("/etc/passwd"), entry, cdir / "passwd"))
    if not _known(grp.getgrgid, gid):
        name = "kubetune" if not _known(grp.getgrnam, "kubetune") else f"kubetune-{gid}"
        mounts.append(_with_entry(Path("/etc/group"), f"{name}:x:{gid}:\n", cdir / "group"))
    return mounts


def _with_entry(host: Path, entry: str, copy: Path) -> Mount:
    text = host.read_text() if host.exists() else ""
    copy.write_text(text + ("" if not text or text.endswith("\n") else "\n") + entry)
    copy.chmod(0o644)
    return Mount(copy, str(host), True)


@dataclass
class ContainerSpecs:
    """Builds the launch specs of one pod's containers."""

    pod: Obj
    cfg: AgentConfig
    pod_dir: Path
    log_dir: Path
    lookup: Lookup
    volumes: VolumeBuilder
    allocator: Allocator | None = None

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    def markers(self, container: str) -> dict[str, str]:
        """Variables that let the agent and cluster-down find every process of this pod."""
        return {
            "KUBETUNE_LOCAL_CLUSTER": self.cfg.cluster_marker,
            "KUBETUNE_POD_UID": self.uid,
            CONTAINER_ENV: container,
        }

    def base_env(self, path: str, user: RunAs, container: str) -> dict[str, str]:
        env = host_env(os.environ)
        port = str(self.cfg.api_port)
        env.update(
            {
                "PATH": path,
                "HOME": home_for(user.uid),
                "HOSTNAME": self.pod["metadata"]["name"],
                "PYTHONUNBUFFERED": "1",
                "KUBERNETES_SERVICE_HOST": self.cfg.api_host,
                "KUBERNETES_SERVICE_PORT": port,
                "KUBERNETES_SERVICE_PORT_HTTPS": port,
                "KUBERNETES_PORT": f"tcp://{self.cfg.api_host}:{port}",
            }
        )
        env.update(self.markers(container))
        return env

    def device_env(self, spec: Obj) -> dict[str, str]:
        """The GPUs allocated to the container, as a device plugin would expose them."""
        if self.allocator is None:
            return {}
        count = requested(spec)
        ids = self.allocator.allocate(self.uid, spec["name"], count, self.pod_dir) if count else []
        return self.allocator.gpus.env(ids)

    def build(self, spec: Obj, rec: ContainerRecord) -> LaunchSpec:
        """The launch spec of the container's next run; ConfigError when it cannot start."""
        user = run_as(self.pod, spec)
        path = f"{self.cfg.python_bin}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
        base = self.base_env(path, user, rec.name)
        env = resolve_env(self.pod, spec, base, self.lookup, os.cpu_count() or 1)
        env.update(self.device_env(spec))
        command, args = expand_command(spec, env)
        argv = command + args if command else default_argv(rec.image, args, env.get("PATH", path))
        if not argv:
            raise ConfigError(
                f"container {rec.name!r} has no command and image {rec.image!r} maps to no program"
            )
        run = rec.restart_count + (1 if rec.terminated is not None else 0)
        cdir = self.pod_dir / "containers" / rec.name
        cdir.mkdir(parents=True, exist_ok=True)
        mounts = mount_plan(spec, self.volumes.paths, self.volumes.kinds, env)
        tlog = cdir / f"{run}.termination-log"
        tlog.write_bytes(b"")
        tlog.chmod(TERMINATION_LOG_MODE)
        mounts.append(
            Mount(tlog, spec.get("terminationMessagePath") or "/dev/termination-log", False)
        )
        mounts.extend(identity_mounts(user.uid, user.gid, cdir))
        # Without a workingDir the container starts in a directory of the agent, opened
        # before the volumes are mounted: a mountPath over its parent (an emptyDir at /tmp
        # with the state dir under /tmp) must not hide it.
        host_workdir = not spec.get("workingDir")
        workdir = spec.get("workingDir") or str(cdir / "work")
        if host_workdir:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        launcher_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KUBETUNE_POD") and k != "KUBETUNE_COMPONENT"
        }
        launcher_env.update(
            {
                "KUBETUNE_LOCAL_CLUSTER": self.cfg.cluster_marker,
                SHIM_POD_ENV: self.uid,
                CONTAINER_ENV: rec.name,
            }
        )
        return LaunchSpec(
            argv=argv,
            env=env,
            workdir=workdir,
            host_workdir=host_workdir,
            mounts=mounts,
            log_path=self.log_dir / rec.name / f"{run}.log",
            spec_path=cdir / f"{run}.json",
            launcher_env=launcher_env,
            cgroup_name=f"{cluster_prefix(self.cfg.cluster_marker)}{self.uid}-{rec.name}-{run}",
            memory_limit=int(parse_quantity(limit)) if limit else None,
            security=user.to_payload(),
        )
