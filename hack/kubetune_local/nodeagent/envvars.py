"""Container environment, resolved the way the kubelet does it.

The node agent runs containers as local processes, so it has to build their environment
itself: `envFrom` first, then `env` in order, `valueFrom` references (fieldRef,
resourceFieldRef, secretKeyRef, configMapKeyRef, honouring `optional`) and the kubelet's
`$(VAR)` expansion (`$$` escapes a dollar; unknown references stay as written). Everything
here is pure: Secrets and ConfigMaps come in through a `Lookup` callable, so it is unit
tested without a cluster.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

Obj = dict[str, Any]
# (kind, namespace, name) -> the object's string data, or None when it does not exist.
Lookup = Callable[[str, str, str], "dict[str, str] | None"]


class ConfigError(Exception):
    """A container references something missing (the kubelet's CreateContainerConfigError)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand `$(VAR)` references like the kubelet: `$$` is a literal `$`, unknown names stay."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    if name in env:
                        out.append(env[name])
                    else:
                        out.append(text[i : end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def secret_data(secret: Obj) -> dict[str, str]:
    """The decoded `data` (plus `stringData`) of a Secret given as an API dict."""
    data = {
        k: base64.b64decode(v).decode("utf-8", "replace")
        for k, v in (secret.get("data") or {}).items()
    }
    data.update(secret.get("stringData") or {})
    return data


def field_value(pod: Obj, path: str) -> str:
    """The value of a downward-API `fieldRef.fieldPath` for this pod (podIP is 127.0.0.1)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    for prefix, key in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        values: dict[str, str] = meta.get(key) or {}
        if path == prefix:
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return values.get(path[len(prefix) + 2 : -2], "")
    raise ConfigError(f"unsupported fieldRef {path!r}")


_DIVISORS = {"": 1.0, "1": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_quantity(q: str) -> float:
    """A Kubernetes quantity (`500m`, `2Gi`, `1.5`) as a float in base units."""
    q = str(q).strip()
    for suffix, factor in _BINARY.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    if q and q[-1] in "mkMGT":
        return float(q[:-1]) * _DIVISORS[q[-1]]
    return float(q)


def resource_value(container: Obj, resource: str, divisor: str | None, node_cpus: int) -> str:
    """A `resourceFieldRef` value: the container's limit or request, rounded up."""
    section, _, name = resource.partition(".")
    res = (container.get("resources") or {}).get(section) or {}
    if name in res:
        value = parse_quantity(res[name])
    elif section == "limits" and name == "cpu":
        value = float(node_cpus)
    else:
        value = 0.0
    div = parse_quantity(divisor) if divisor else 1.0
    result = value / div
    return str(int(result) if result == int(result) else int(result) + 1)


def resolve_env(
    pod: Obj, container: Obj, base: Mapping[str, str], lookup: Lookup, node_cpus: int = 1
) -> dict[str, str]:
    """The environment of `container`: `base` (service, agent), then envFrom, then env."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if ref is None:
                continue
            data = lookup(kind, ns, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"{kind.lower()} {ref['name']!r} not found")
            for k, v in data.items():
                env[prefix + k] = v
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item or item.get("valueFrom") is None:
            env[name] = expand(item.get("value") or "", env)
            continue
        value = _value_from(pod, container, item["valueFrom"], ns, lookup, node_cpus)
        if value is not None:
            env[name] = value
    return env


def _value_from(
    pod: Obj, container: Obj, source: Obj, ns: str, lookup: Lookup, node_cpus: int
) -> str | None:
    if source.get("fieldRef"):
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if source.get("resourceFieldRef"):
        ref = source["resourceFieldRef"]
        return resource_value(container, ref["resource"], ref.get("divisor"), node_cpus)
    for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
        ref = source.get(key)
        if ref is None:
            continue
        data = lookup(kind, ns, ref["name"])
        if data is not None and ref["key"] in data:
            return data[ref["key"]]
        if ref.get("optional"):
            return None
        what = "not found" if data is None else f"has no key {ref['key']!r}"
        raise ConfigError(f"{kind.lower()} {ref['name']!r} {what}")
    raise ConfigError(f"unsupported valueFrom {sorted(source)}")


def expand_command(container: Obj, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The container's `command` and `args` with `$(VAR)` expanded against its environment."""
    command = [expand(str(c), env) for c in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    return command, args
