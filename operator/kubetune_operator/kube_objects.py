"""Small readers of any Kubernetes object as the watches deliver it (plain JSON dicts).

The cache, the reconciler and the status derivation all need an object's key, its
resourceVersion and its controlling owner; these are the one copy of each.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]
"""(namespace, FineTuneJob name): the key the work queue and the caches use."""


def meta(obj: Obj | None) -> Obj:
    return dict((obj or {}).get("metadata") or {})


def key_of(obj: Obj) -> Key:
    m = meta(obj)
    return str(m.get("namespace", "")), str(m.get("name", ""))


def labels_of(obj: Obj) -> dict[str, str]:
    return dict(meta(obj).get("labels") or {})


def resource_version(obj: Obj) -> int | None:
    try:
        return int(str(meta(obj).get("resourceVersion")))
    except (TypeError, ValueError):
        return None


def newer(old: Obj | None, new: Obj) -> bool:
    """Whether `new` is at least as recent as `old` (resourceVersions are etcd revisions)."""
    if old is None:
        return True
    a, b = resource_version(old), resource_version(new)
    return a is None or b is None or b >= a


def slim(obj: Obj) -> Obj:
    """Drop managedFields: they are most of an object's size and never read here."""
    m = obj.get("metadata")
    if isinstance(m, dict) and "managedFields" in m:
        obj = {**obj, "metadata": {k: v for k, v in m.items() if k != "managedFields"}}
    return obj


def owner_uid(obj: Obj, kind: str) -> str | None:
    """The uid of the controlling owner of `kind`, if any."""
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return str(ref.get("uid"))
    return None
