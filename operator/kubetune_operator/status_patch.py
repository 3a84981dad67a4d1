"""The JSON merge patch (RFC 7386) that turns the stored status into the derived one.

The operator writes only the difference, on the status subresource, so an unchanged status
costs no write at all. `status.progress` belongs to the progress endpoint while the job runs:
the reconciler leaves it alone, except for the final 100% on success.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator.kube_objects import Obj


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch turning `old` into `new` ({} when equal)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: Obj = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = merge_patch(old[key], value)
            if sub != {}:
                patch[key] = sub
        elif old[key] != value:
            patch[key] = value
    return patch


def status_patch(stored: Obj, derived: Obj) -> Obj:
    """The patch of `status` from `stored` to `derived`, progress excepted until success."""
    old = dict(stored)
    if derived.get("phase") != "Succeeded":
        old.pop("progress", None)
        derived = {k: v for k, v in derived.items() if k != "progress"}
    patch: Obj = merge_patch(old, derived)
    return patch
