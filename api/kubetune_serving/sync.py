"""The watch loop: alias pointers on the models volume -> adapters loaded in vLLM.

Every `interval` seconds it reads `<models dir>/aliases/*.json`. For an alias whose pointer
names a version the routes do not serve yet it loads the new version (`<alias>-v<version>`)
into vLLM, switches the alias to it, waits until no request runs on the previous version and
only then unloads it. A version that fails to load (vLLM validates the adapter) leaves the
alias on the version it had: the failure is logged and retried at the next change of the
pointer, never served. A deleted pointer keeps the last version served (a deletion is not a
promotion; the registry's alias record says what happened).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from kubetune_crd.alias_pointer import AliasPointer, read_pointers
from kubetune_crd.promotion import ALIASES_DIR

from kubetune_serving.adapters import adapter_name, adapter_path, is_lora
from kubetune_serving.routes import AliasRoutes
from kubetune_serving.vllm_admin import AdminError, VLLMAdmin

log = logging.getLogger(__name__)
DRAIN_SECONDS = 300.0


@dataclass
class AliasSync:
    """Keeps vLLM's adapters and the proxy's routes in step with the pointers."""

    admin: VLLMAdmin
    routes: AliasRoutes
    models_dir: Path
    interval: float = 1.0
    failed: set[str] = field(default_factory=set)  # adapter names that would not load
    retiring: set[asyncio.Task[None]] = field(default_factory=set)  # unloads waiting to drain

    async def step(self) -> None:
        """One pass over the pointers (what the loop runs every `interval`)."""
        for alias, pointer in read_pointers(self.models_dir / ALIASES_DIR).items():
            current = self.routes.current.get(alias)
            if current is not None and current.version >= pointer.version:
                continue
            name = adapter_name(pointer)
            if name in self.failed:
                continue
            await self._serve(pointer, name)

    async def _serve(self, pointer: AliasPointer, name: str) -> None:
        path = adapter_path(pointer, self.models_dir)
        if path is None or not is_lora(pointer):
            log.warning("alias %s: %s is not a LoRA adapter on the volume", pointer.alias, name)
            self.failed.add(name)
            return
        try:
            await self.admin.load(name, path)
        except AdminError as exc:
            log.error("alias %s stays on its version: %s", pointer.alias, exc)
            self.failed.add(name)
            return
        previous = self.routes.switch(pointer)
        log.info("alias %s now serves %s (%s)", pointer.alias, name, pointer.model)
        if previous is not None:
            task = asyncio.create_task(self._retire(previous))
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)

    async def _retire(self, adapter: str) -> None:
        """Unload `adapter` once its last request has ended."""
        if not await self.routes.drain(adapter, DRAIN_SECONDS):
            log.warning("adapter %s still busy after %ss: unloading", adapter, DRAIN_SECONDS)
        if self.routes.is_current(adapter):
            return  # pointed at again meanwhile
        try:
            await self.admin.unload(adapter)
        except AdminError as exc:
            log.warning("%s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: a pass, then a pause."""
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # a bad pass must not stop serving
                log.exception("alias sync pass failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
