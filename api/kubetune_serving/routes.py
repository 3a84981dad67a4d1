"""The alias -> adapter table the proxy resolves requests with, and in-flight request counts.

Everything runs on one asyncio event loop: `acquire` (resolve an alias and count the request
on the adapter it resolved to) has no `await` inside, so it is atomic with respect to
`switch` and `drain`. Once `switch` has pointed an alias at a new adapter no request can pick
the old one any more, so "its in-flight count reached zero" stays true: then, and only then,
the old adapter may be unloaded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from kubetune_crd.alias_pointer import AliasPointer

from kubetune_serving.adapters import adapter_name


@dataclass
class AliasRoutes:
    """Which adapter each alias names now, and how many requests run on each adapter."""

    current: dict[str, AliasPointer] = field(default_factory=dict)
    in_flight: Counter[str] = field(default_factory=Counter)
    _idle: asyncio.Condition = field(default_factory=asyncio.Condition)

    def resolve(self, model: str) -> str:
        """The adapter a request for `model` runs on: the alias's current adapter, or `model`
        itself when it is no alias (the base model, a versioned name, anything vLLM knows)."""
        pointer = self.current.get(model)
        return adapter_name(pointer) if pointer else model

    def acquire(self, model: str) -> str:
        """Resolve `model` and count one request in flight on the result (pair with `release`)."""
        target = self.resolve(model)
        self.in_flight[target] += 1
        return target

    async def release(self, target: str) -> None:
        """One request on `target` has ended (its response fully sent or abandoned)."""
        self.in_flight[target] -= 1
        if self.in_flight[target] <= 0:
            del self.in_flight[target]
            async with self._idle:
                self._idle.notify_all()

    def switch(self, pointer: AliasPointer) -> str | None:
        """Point `pointer.alias` at `pointer`'s adapter; the adapter it named before, if any."""
        previous = self.current.get(pointer.alias)
        self.current[pointer.alias] = pointer
        if previous is None or adapter_name(previous) == adapter_name(pointer):
            return None
        return adapter_name(previous)

    def remove(self, alias: str) -> str | None:
        """Forget `alias` (its pointer was deleted); the adapter it named, if any."""
        previous = self.current.pop(alias, None)
        return adapter_name(previous) if previous else None

    def is_current(self, adapter: str) -> bool:
        return any(adapter_name(p) == adapter for p in self.current.values())

    async def drain(self, adapter: str, timeout: float) -> bool:
        """Wait until no request runs on `adapter`; False when `timeout` seconds passed first."""
        async with self._idle:
            try:
                await asyncio.wait_for(
                    self._idle.wait_for(lambda: self.in_flight[adapter] <= 0), timeout
                )
            except asyncio.TimeoutError:
                return False
        return True
