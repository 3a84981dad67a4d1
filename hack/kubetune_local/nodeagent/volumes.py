"""Pod volumes as host directories, and the bind mounts that put them at their mountPaths.

The kubelet materialises each volume on the host and the container runtime mounts it into
the container. The node agent does the same with plain directories under its state dir:
`emptyDir` is a fresh directory, `persistentVolumeClaim` is `<pv-root>/<namespace>/<claim>`
(created on demand, shared by every pod using the claim), `hostPath` is the host path itself,
and `secret`, `configMap`, `downwardAPI` and `projected` (including `serviceAccountToken`,
obtained with the TokenRequest API) are files written into a directory. `mount_plan` is pure:
it turns a container's `volumeMounts` into (source, target, read-only) bind mounts.

With a pod-level `fsGroup`, emptyDirs, writable claims and the secret-like volumes are given
to that group as the kubelet does (`ownership`), so a non-root pod can use them.

Mount points that do not exist are created on the host (empty directories or files, e.g.
`/var/run/secrets/kubernetes.io/serviceaccount`, `/dev/termination-log`): directories are
not namespaced. Containers share the host's filesystem, so a mountPath over the repository
or its `.venv` would hide the Python the container runs: keep mountPaths elsewhere.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_local.nodeagent.envvars import (
    ConfigError,
    Lookup,
    expand,
    field_value,
    resource_value,
)
from kubetune_local.nodeagent.ownership import apply_fs_group, make_empty_dir

Obj = dict[str, Any]
# (audience, expirationSeconds) -> (token, expiry as a UNIX time)
TokenSource = Callable[[str | None, int], tuple[str, float]]

ALWAYS_READ_ONLY = frozenset({"secret", "configMap", "downwardAPI", "projected"})


@dataclass(frozen=True)
class Mount:
    """One bind mount of a host path onto a path inside the container's mount namespace."""

    source: Path
    target: str
    read_only: bool


def volume_kind(volume: Obj) -> str:
    """The volume source's key (`emptyDir`, `secret`...), or `unknown`."""
    for key, value in volume.items():
        if key != "name" and value is not None:
            return key
    return "unknown"


def project_keys(
    data: dict[str, str], items: list[Obj] | None, mode: int | None, optional: bool, what: str
) -> dict[str, tuple[str, int | None]]:
    """Files (relative path -> content, mode) of a secret/configMap source, per `items`."""
    if items:
        files: dict[str, tuple[str, int | None]] = {}
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise ConfigError(f"{what} has no key {item['key']!r}")
            files[item["path"]] = (data[item["key"]], item.get("mode") or mode)
        return files
    return {k: (v, mode) for k, v in data.items()}


def downward_files(
    pod: Obj, items: list[Obj], mode: int | None, node_cpus: int
) -> dict[str, tuple[str, int | None]]:
    """Files of a downwardAPI volume (or projected source)."""
    files: dict[str, tuple[str, int | None]] = {}
    containers = {c["name"]: c for c in (pod.get("spec") or {}).get("containers") or []}
    for item in items:
        if item.get("fieldRef"):
            value = field_value(pod, item["fieldRef"]["fieldPath"])
        else:
            ref = item["resourceFieldRef"]
            container = containers.get(ref.get("containerName") or "", {})
            value = resource_value(container, ref["resource"], ref.get("divisor"), node_cpus)
        files[item["path"]] = (value, item.get("mode") or mode)
    return files


def write_files(directory: Path, files: dict[str, tuple[str, int | None]]) -> None:
    """Write files atomically (temp file + rename) so readers never see half a token."""
    directory.mkdir(parents=True, exist_ok=True)
    for rel, (content, mode) in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(content)
        tmp.chmod(mode if mode is not None else 0o644)
        tmp.replace(path)


@dataclass
class _Token:
    directory: Path
    path: str
    audience: str | None
    expiration: int
    refresh_at: float


@dataclass
class VolumeBuilder:
    """Materialises a pod's volumes under `pod_dir/volumes` and keeps projected tokens fresh."""

    pod: Obj
    pod_dir: Path
    pv_root: Path
    lookup: Lookup
    token_source: TokenSource
    node_cpus: int = 1
    paths: dict[str, Path] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    _tokens: list[_Token] = field(default_factory=list)

    @property
    def fs_group(self) -> int | None:
        group = ((self.pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        return int(group) if group is not None else None

    def build(self) -> dict[str, Path]:
        """Create every volume of the pod; raises ConfigError when a required source is missing."""
        for volume in (self.pod.get("spec") or {}).get("volumes") or []:
            name = volume["name"]
            kind = volume_kind(volume)
            self.kinds[name] = kind
            self.paths[name] = self._build_one(name, kind, volume.get(kind) or {})
        return self.paths

    def _build_one(self, name: str, kind: str, source: Obj) -> Path:
        """Materialise one volume; the host path its mounts bind."""
        ns = self.pod["metadata"].get("namespace", "default")
        target = self.pod_dir / "volumes" / name
        group = self.fs_group
        if kind == "persistentVolumeClaim":
            target = self.pv_root / str(ns) / str(source["claimName"])
            target.mkdir(parents=True, exist_ok=True)
            if group is not None and not source.get("readOnly"):
                apply_fs_group(target, group)
            return target
        if kind == "hostPath":
            host = Path(str(source["path"]))
            if source.get("type") in ("DirectoryOrCreate", None, "") and not host.exists():
                host.mkdir(parents=True, exist_ok=True)
            return host
        if kind in ("secret", "configMap"):
            self._write_ref(target, kind, ns, source)
        elif kind == "downwardAPI":
            items = source.get("items") or []
            mode = source.get("defaultMode")
            write_files(target, downward_files(self.pod, items, mode, self.node_cpus))
        elif kind == "projected":
            self._write_projected(target, ns, source)
        else:  # emptyDir and anything unsupported: a fresh directory
            make_empty_dir(target)
            if group is not None:
                apply_fs_group(target, group)
            return target
        if group is not None:
            apply_fs_group(target, group, read_only=True)
        return target

    def _write_ref(
        self, target: Path, kind: str, ns: str, source: Obj, mode: int | None = None
    ) -> None:
        api_kind = "Secret" if kind == "secret" else "ConfigMap"
        name = source.get("secretName") or source.get("name") or ""
        data = self.lookup(api_kind, ns, name)
        optional = bool(source.get("optional"))
        if data is None:
            if not optional:
                raise ConfigError(f"{kind} {name!r} not found")
            target.mkdir(parents=True, exist_ok=True)
            return
        default_mode = source.get("defaultMode", mode)
        write_files(
            target,
            project_keys(data, source.get("items"), default_mode, optional, f"{kind} {name!r}"),
        )

    def _write_projected(self, target: Path, ns: str, source: Obj) -> None:
        target.mkdir(parents=True, exist_ok=True)
        mode = source.get("defaultMode")
        for src in source.get("sources") or []:
            if src.get("secret"):
                self._write_ref(
                    target,
                    "secret",
                    ns,
                    {**src["secret"], "secretName": src["secret"].get("name")},
                    mode,
                )
            elif src.get("configMap"):
                self._write_ref(target, "configMap", ns, src["configMap"], mode)
            elif src.get("downwardAPI"):
                write_files(
                    target,
                    downward_files(
                        self.pod, src["downwardAPI"].get("items") or [], mode, self.node_cpus
                    ),
                )
            elif src.get("serviceAccountToken"):
                sat = src["serviceAccountToken"]
                token = _Token(
                    target,
                    sat["path"],
                    sat.get("audience"),
                    int(sat.get("expirationSeconds") or 3600),
                    0.0,
                )
                self._refresh(token, mode)
                self._tokens.append(token)

    def _refresh(self, token: _Token, mode: int | None = None) -> None:
        value, expiry = self.token_source(token.audience, token.expiration)
        now = time.time()
        token.refresh_at = now + 0.8 * max(expiry - now, 1.0)
        write_files(token.directory, {token.path: (value, mode if mode is not None else 0o600)})
        group = self.fs_group
        if group is not None:
            apply_fs_group(token.directory / token.path, group, read_only=True)

    def refresh_tokens(self) -> None:
        """Renew projected service-account tokens past 80% of their lifetime (as the kubelet)."""
        for token in self._tokens:
            if time.time() >= token.refresh_at:
                self._refresh(token)

    def cleanup(self) -> None:
        """Remove the pod's own volume directories (claims and host paths stay)."""
        shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)


def mount_plan(
    container: Obj, paths: dict[str, Path], kinds: dict[str, str], env: dict[str, str]
) -> list[Mount]:
    """Bind mounts for a container's volumeMounts, parents before children.

    `subPath`/`subPathExpr` select a path inside the volume (created as a directory when
    missing, like the kubelet); secret, configMap, downwardAPI and projected volumes are
    always read-only.
    """
    mounts: list[Mount] = []
    for vm in container.get("volumeMounts") or []:
        name = vm["name"]
        if name not in paths:
            raise ConfigError(f"volumeMount {name!r} names no volume of the pod")
        source = paths[name]
        sub = vm.get("subPath") or (expand(vm["subPathExpr"], env) if vm.get("subPathExpr") else "")
        if sub:
            if Path(sub).is_absolute() or ".." in Path(sub).parts:
                raise ConfigError(f"invalid subPath {sub!r}")
            source = source / sub
            if not source.exists():
                source.mkdir(parents=True, exist_ok=True)
        read_only = bool(vm.get("readOnly")) or kinds.get(name) in ALWAYS_READ_ONLY
        mounts.append(Mount(source, vm["mountPath"], read_only))
    return sorted(mounts, key=lambda m: len(Path(m.target).parts))
