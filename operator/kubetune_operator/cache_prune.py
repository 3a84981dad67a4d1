"""List-and-prune: the cache forgets objects whose DELETED watch event never came.

kopf re-watches after a lost connection and lists again after `410 Gone`, but its relist
only replays the objects that still exist: one deleted while the watch was down is never
reported, and kopf gives no "listing finished" signal to compare against. So each resync
(controller.py) lists every watched kind once and drops the cache entries that list no
longer holds. The functions here are the pure part: which entries are stale.

No lock is needed against a concurrent watch event: the cache is only touched from the
event loop, a snapshot of each entry's (uid, resourceVersion) is taken *before* the list, and
an entry is dropped only when the list lacks its uid and the entry is still exactly the one in
the snapshot. An entry that a watch event stored or replaced during the list is kept (the
next resync judges it); one created after the snapshot is not in it at all. The list must be
a consistent read (no `resourceVersion` parameter): an entry in the snapshot existed in etcd
before the list began, so a consistent list that lacks it proves it is gone (or no longer
matches the watch's selector, which the watch would also have reported as a deletion).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import TypeVar

from kubetune_operator.kube_objects import Obj, meta

K = TypeVar("K", bound=Hashable)

Version = tuple[str | None, str | None]
"""(uid, resourceVersion) of a cached object."""


def version_of(obj: Obj) -> Version:
    m = meta(obj)
    uid, rv = m.get("uid"), m.get("resourceVersion")
    return (str(uid) if uid else None, str(rv) if rv else None)


def snapshot(entries: Mapping[K, Obj]) -> dict[K, Version]:
    """Each cached entry's version, taken before the list."""
    return {key: version_of(obj) for key, obj in entries.items()}


def listed_uids(items: Iterable[Obj]) -> set[str]:
    """The uids of a list's items."""
    return {uid for uid, _ in map(version_of, items) if uid}


def stale_keys(
    before: Mapping[K, Version], entries: Mapping[K, Obj], listed: Collection[str]
) -> list[K]:
    """Keys to drop: unchanged since `before` was taken, and their uid is not `listed`."""
    return [
        key
        for key, version in before.items()
        if version[0] not in listed and key in entries and version_of(entries[key]) == version
    ]
