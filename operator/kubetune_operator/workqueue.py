"""A deduplicating work queue of object keys, like client-go's (asyncio).

A key added while it waits is not queued twice; a key added while a worker handles it is
handled once more afterwards (never by two workers at once). Reconciles are level-triggered:
the worker reads the latest cached objects, so coalescing many watch events into one
reconcile loses nothing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Keys to reconcile; `get` waits for one, `done` releases it."""

    def __init__(self) -> None:
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._urgent: set[K] = set()
        self._soon: set[K] = set()
        self._wakeup = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K, urgent: bool = False) -> None:
        """Queue `key` (at the front when `urgent`: e.g. a FineTuneJob still without a Job)."""
        if self.closed:
            return
        if key in self._dirty:
            if urgent and key not in self._processing and key not in self._urgent:
                self._queue.remove(key)
                self._queue.appendleft(key)
                self._urgent.add(key)
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        if urgent:
            self._queue.appendleft(key)
            self._urgent.add(key)
        else:
            self._queue.append(key)
        self._wakeup.set()

    def urgent_waiting(self) -> bool:
        """Whether urgent keys (FineTuneJobs still without a Job) wait for a worker."""
        return bool(self._urgent)

    def add_soon(self, key: K, delay: float) -> None:
        """Queue `key` after `delay` unless it is queued or already scheduled: many watch events
        about one object within `delay` become one reconcile."""
        if delay <= 0:
            self.add(key)
        elif key not in self._dirty and key not in self._soon:
            self._soon.add(key)

            def fire() -> None:
                self._soon.discard(key)
                self.add(key)

            handle = asyncio.get_running_loop().call_later(delay, fire)
            self._timers.add(handle)

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self.add(key)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def retry(self, key: K, base: float = 0.5, cap: float = 60.0) -> float:
        """Re-add `key` after an exponential back-off; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(cap, base * float(2**failures))
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    async def get(self) -> K:
        while not self._queue:
            if self.closed:
                raise asyncio.CancelledError
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._urgent.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._wakeup.set()
