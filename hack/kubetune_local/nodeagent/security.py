"""A container's security context, resolved the way the kubelet does it (pure).

Pod-level `securityContext` gives runAsUser, runAsGroup, runAsNonRoot, fsGroup and
supplementalGroups; the container's own `securityContext` wins where both set a field and
alone sets readOnlyRootFilesystem, allowPrivilegeEscalation, capabilities and privileged.
`run_as` turns that into what the launcher applies (`RunAs`) and refuses what the kubelet
refuses: runAsNonRoot with uid 0, with the kubelet's messages (the container then waits
with reason CreateContainerConfigError). There are no images here, so a container without
runAsUser runs as the node agent's own user (root): its "image user".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kubetune_local.nodeagent.envvars import ConfigError

Obj = dict[str, Any]
SHARED_FIELDS = ("runAsUser", "runAsGroup", "runAsNonRoot")


@dataclass(frozen=True)
class RunAs:
    """Who a container runs as and what it may do, as the launcher applies it."""

    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    read_only_root: bool = False
    no_new_privs: bool = False
    drop: tuple[str, ...] = ()
    add: tuple[str, ...] = ()

    def to_payload(self) -> Obj:
        """The launcher's `security` entry."""
        return {
            "uid": self.uid,
            "gid": self.gid,
            "groups": list(self.groups),
            "read_only_root": self.read_only_root,
            "no_new_privs": self.no_new_privs,
            "drop": list(self.drop),
            "add": list(self.add),
        }


def effective_context(pod: Obj, container: Obj) -> Obj:
    """The container's securityContext over the pod's (the container wins field by field)."""
    pod_sc: Obj = (pod.get("spec") or {}).get("securityContext") or {}
    own: Obj = container.get("securityContext") or {}
    merged = {k: pod_sc[k] for k in SHARED_FIELDS if pod_sc.get(k) is not None}
    merged.update({k: v for k, v in own.items() if v is not None})
    return merged


def pod_label(pod: Obj) -> str:
    """The kubelet's `format.Pod`: name_namespace(uid)."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name', '')}_{meta.get('namespace', '')}({meta.get('uid', '')})"


def verify_run_as_non_root(pod: Obj, container: Obj, sc: Obj, image_uid: int) -> None:
    """ConfigError, worded as the kubelet's, when runAsNonRoot meets uid 0."""
    if not sc.get("runAsNonRoot"):
        return
    where = f'(pod: "{pod_label(pod)}", container: {container.get("name", "")})'
    if sc.get("runAsUser") is not None:
        if int(sc["runAsUser"]) == 0:
            raise ConfigError(f"container's runAsUser breaks non-root policy {where}")
        return
    if image_uid == 0:
        raise ConfigError(f"container has runAsNonRoot and image will run as root {where}")


def run_as(pod: Obj, container: Obj, image_uid: int | None = None) -> RunAs:
    """Resolve the container's identity and restrictions; ConfigError when refused."""
    image_uid = os.getuid() if image_uid is None else image_uid
    sc = effective_context(pod, container)
    verify_run_as_non_root(pod, container, sc, image_uid)
    pod_sc: Obj = (pod.get("spec") or {}).get("securityContext") or {}
    uid = int(sc["runAsUser"]) if sc.get("runAsUser") is not None else image_uid
    gid = int(sc["runAsGroup"]) if sc.get("runAsGroup") is not None else 0
    fs_group = pod_sc.get("fsGroup")
    groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if fs_group is not None:
        groups.append(int(fs_group))
    caps: Obj = sc.get("capabilities") or {}
    privileged = bool(sc.get("privileged"))
    return RunAs(
        uid=uid,
        gid=gid,
        groups=tuple(dict.fromkeys(groups)),
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        drop=() if privileged else tuple(str(c) for c in caps.get("drop") or []),
        add=tuple(str(c) for c in caps.get("add") or []),
    )


def home_for(uid: int) -> str:
    """HOME when the pod sets none: `/root` for root, else `/` -- what containerd gives a
    user the image's /etc/passwd does not know (the host's users are not the pod's)."""
    return "/root" if uid == 0 else "/"
