"""Prometheus metrics: requests, latencies, jobs by phase, cache health. One registry per app."""

from __future__ import annotations

from collections import Counter as TallyCounter
from collections.abc import Callable, Iterator
from typing import get_args

from kubetune_crd.status import Phase
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kubetune_api.store.cluster import ClusterStore

PHASES: tuple[str, ...] = get_args(Phase)


class _StoreCollector(Collector):
    """Reads jobs by phase and cache state from the store at scrape time."""

    def __init__(self, store: Callable[[], ClusterStore | None]) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = self._store()
        jobs = GaugeMetricFamily(
            "kubetune_api_jobs", "FineTuneJobs in the cache by phase", labels=["phase"]
        )
        synced = GaugeMetricFamily("kubetune_api_cache_synced", "1 once the cache is listed")
        restarts = GaugeMetricFamily(
            "kubetune_api_watch_restarts", "Watch interruptions resumed since start"
        )
        relists = GaugeMetricFamily(
            "kubetune_api_cache_relists", "Full LISTs of the job cache (start, 410 Gone)"
        )
        age = GaugeMetricFamily(
            "kubetune_api_cache_age_seconds",
            "Seconds the job cache may lag the apiserver (0 while its watch is connected)",
        )
        if store is not None:
            tally = TallyCounter(rec.phase or "Pending" for rec in store.jobs.cache.all())
            for phase in PHASES:
                jobs.add_metric([phase], tally.get(phase, 0))
            synced.add_metric([], 1.0 if store.jobs.synced() else 0.0)
            restarts.add_metric([], store.jobs.watch_restarts())
            relists.add_metric([], store.jobs.relists())
            age.add_metric([], store.jobs.cache_age())
        yield from (jobs, synced, restarts, relists, age)


class Metrics:
    def __init__(self, store: Callable[[], ClusterStore | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kubetune_api_requests",
            "HTTP requests by method, route and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kubetune_api_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.jobs_created = Counter(
            "kubetune_api_jobs_created",
            "FineTuneJobs created through the API",
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))

        # (method, route, status) -> label children: `labels()` costs more than the update.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # a race only builds the same children twice
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
