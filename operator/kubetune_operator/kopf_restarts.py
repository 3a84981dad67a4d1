"""Run kopf again in the same process when its watching fails, instead of leaving it dead.

kopf 1.45 re-watches after connection errors and lists again after `410 Gone`, but a watch
stream's ERROR event other than 410 raises its `WatchingError`, and an API error that outlasts
its `networking.error_backoffs` (about 54 s of 5xx answers) escapes its watch loop as well.
Either fails kopf's orchestrator: `kopf.operator()` runs the cleanup handlers (the controller
stops) and raises. A Deployment would restart the container, but `make dev-up` runs the operator
as a plain process, so main.py runs kopf again here, after a back-off: the startup handler
builds a fresh controller, which pre-lists Jobs and pods while kopf's watches list everything
again, so the new cache holds no object deleted while the old watch was failing.

A failure before the startup handler finished (no permission, the progress port taken) still
ends the process: running again would not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger("kubetune.operator")

MIN_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0
"""A run that lasted this long resets the back-off."""


async def run_restarting(
    run_once: Callable[[], Awaitable[None]],
    starts: Callable[[], int],
    min_delay: float = MIN_DELAY_SECONDS,
    max_delay: float = MAX_DELAY_SECONDS,
) -> int:
    """Await `run_once()` until it returns (a stop signal); the number of restarts.

    `starts()` counts the runs that got through startup: a run that fails before it moved is
    not restarted (its error is raised).
    """
    loop = asyncio.get_running_loop()
    delay, restarts = min_delay, 0
    while True:
        before, began = starts(), loop.time()
        try:
            await run_once()
            return restarts
        except Exception as exc:
            if starts() == before:
                raise
            if loop.time() - began >= HEALTHY_RUN_SECONDS:
                delay = min_delay
            log.error("kopf stopped (%r); running it again in %.1f s, relisting", exc, delay)
        if await _stop_signalled_within(delay):
            return restarts
        restarts += 1
        delay = min(delay * 2, max_delay)


async def _stop_signalled_within(seconds: float) -> bool:
    """Sleep, unless SIGINT/SIGTERM comes first (kopf's own handlers are not running now)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return stop.is_set()
