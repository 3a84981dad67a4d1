"""Where the time between a FineTuneJob's watch event and its Job's creation goes.

Served by the liveness probe (`jobCreateMs`); the benchmarks read it to tell queueing,
building and the API server's create latency apart at hundreds of FineTuneJobs.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from kubetune_operator.kube_objects import Key


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max, rounded to 0.1 ({} for no values)."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 1)}


class CreateTimings:
    """Milliseconds per stage of the latest `size` Job creations.

    `queue`: handler -> a worker picks the key up; `build`: parse + pure Job builder;
    `post`: the Job create call (API server latency); `total`: handler -> Job created.
    """

    STAGES = ("queue", "build", "post", "total")

    def __init__(self, size: int = 2000) -> None:
        self.samples: deque[tuple[float, float, float, float]] = deque(maxlen=size)
        self._seen_at: dict[Key, float] = {}

    def seen(self, key: Key) -> None:
        """The first watch event of a FineTuneJob that still needs its Job."""
        self._seen_at.setdefault(key, time.monotonic())

    def forget(self, key: Key) -> None:
        self._seen_at.pop(key, None)

    def created(
        self, key: Key, dequeued: float | None, post_start: float, post_end: float
    ) -> float | None:
        """Record one creation; the milliseconds since the watch event (None if unknown)."""
        seen = self._seen_at.pop(key, None)
        if seen is None:
            return None
        if dequeued is not None:
            self.add(seen, dequeued, post_start, post_end)
        return (post_end - seen) * 1000.0

    def add(self, seen: float, dequeued: float, post_start: float, post_end: float) -> None:
        ms = 1000.0
        self.samples.append(
            (
                (dequeued - seen) * ms,
                (post_start - dequeued) * ms,
                (post_end - post_start) * ms,
                (post_end - seen) * ms,
            )
        )

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": len(self.samples)}
        for i, stage in enumerate(self.STAGES):
            out[stage] = percentiles([sample[i] for sample in self.samples])
        return out
