"""List-and-prune (cache_prune.py): which cache entries a resync drops, and why none wrongly.

The pure part decides from a snapshot taken before the list, the cache as it is after it,
and the listed uids. The restart policy (kopf_restarts.py) is tested with stand-in runs: it
is pure control flow around `kopf.operator()`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubetune_crd import names
from kubetune_operator.cache_prune import listed_uids, snapshot, stale_keys
from kubetune_operator.informer_cache import InformerCache
from kubetune_operator.kopf_restarts import run_restarting


def _obj(name: str, uid: str, rv: int, ftj: str = "ft-a") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": uid,
            "resourceVersion": str(rv),
            "labels": {names.LABEL_FINETUNEJOB: ftj, names.LABEL_MANAGED_BY: names.MANAGED_BY},
        }
    }


def test_unlisted_unchanged_entry_is_dropped_and_listed_one_kept() -> None:
    cache = InformerCache()
    cache.store_pod(_obj("gone", "u1", 10))
    cache.store_pod(_obj("alive", "u2", 11))
    before = snapshot(cache.pods)
    listed = listed_uids([_obj("alive", "u2", 12)])
    assert stale_keys(before, cache.pods, listed) == [("ns", "gone")]


def test_entry_changed_by_a_watch_event_during_the_list_is_kept() -> None:
    cache = InformerCache()
    cache.store_ftj(_obj("ft-a", "u1", 10))
    before = snapshot(cache.ftjs)
    cache.store_ftj(_obj("ft-a", "u1", 20))  # MODIFIED arrives while the list is in flight
    assert stale_keys(before, cache.ftjs, listed_uids([])) == []


def test_entry_stored_after_the_snapshot_is_kept() -> None:
    cache = InformerCache()
    before = snapshot(cache.jobs)
    cache.store_job(_obj("ft-a", "u1", 30))  # created after the list's read
    assert stale_keys(before, cache.jobs, listed_uids([])) == []


def test_entry_deleted_by_a_watch_event_during_the_list_is_not_reported() -> None:
    cache = InformerCache()
    job = _obj("ft-a", "u1", 10)
    cache.store_job(job)
    before = snapshot(cache.jobs)
    cache.store_job(job, deleted=True)
    assert stale_keys(before, cache.jobs, listed_uids([])) == []


def test_recreated_object_with_the_same_name_drops_the_old_copy() -> None:
    cache = InformerCache()
    cache.store_job(_obj("ft-a", "old-uid", 10))
    before = snapshot(cache.jobs)
    listed = listed_uids([_obj("ft-a", "new-uid", 40)])
    assert stale_keys(before, cache.jobs, listed) == [("ns", "ft-a")]


def _runs(outcomes: list[BaseException | None], starts: list[int]) -> Any:
    """A stand-in for one kopf.operator() run: counts a start, then fails or returns."""

    async def run_once() -> None:
        outcome = outcomes.pop(0)
        starts[0] += 1
        if outcome is not None:
            raise outcome

    return run_once


def test_a_run_that_fails_after_startup_is_run_again() -> None:
    starts = [0]
    outcomes: list[BaseException | None] = [RuntimeError("watch failed"), None]
    restarts = asyncio.run(
        run_restarting(_runs(outcomes, starts), lambda: starts[0], min_delay=0.01)
    )
    assert (restarts, starts[0], outcomes) == (1, 2, [])


def test_a_run_that_fails_before_startup_ends_the_process() -> None:
    async def refused() -> None:
        raise RuntimeError("cannot start: port taken")

    with pytest.raises(RuntimeError, match="port taken"):
        asyncio.run(run_restarting(refused, lambda: 0, min_delay=0.01))
