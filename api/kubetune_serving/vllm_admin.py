"""vLLM's runtime LoRA endpoints, as the sync loop uses them.

vLLM (started with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) loads an
adapter with `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and drops one with
`POST /v1/unload_lora_adapter {"lora_name"}`; `GET /v1/models` lists the base model and every
loaded adapter (an adapter's entry has the base model as `parent`); `GET /health` is 200 once
the engine is up. Loading a name that is already loaded is an error in vLLM; here it counts as
done (a restarted sidecar finds the adapters it loaded before).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


class AdminError(Exception):
    """vLLM refused or failed an adapter operation (the message is vLLM's answer)."""


@dataclass
class VLLMAdmin:
    """A client of one vLLM server's health, model list and adapter endpoints."""

    client: httpx.AsyncClient

    async def healthy(self) -> bool:
        try:
            return (await self.client.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def adapters(self) -> set[str]:
        """Names of the adapters vLLM has loaded now."""
        resp = await self.client.get("/v1/models")
        resp.raise_for_status()
        return {m["id"] for m in resp.json().get("data", []) if m.get("parent")}

    async def load(self, name: str, path: Path) -> None:
        """Load the adapter at `path` as `name` (already loaded under that name: done)."""
        resp = await self.client.post(
            "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}
        )
        if resp.status_code == 200:
            log.info("loaded adapter %s from %s", name, path)
            return
        if "already been loaded" in resp.text:
            log.info("adapter %s was already loaded", name)
            return
        raise AdminError(f"vLLM could not load {name} from {path}: {resp.status_code} {resp.text}")

    async def unload(self, name: str) -> None:
        """Unload the adapter `name` (not loaded: done)."""
        resp = await self.client.post("/v1/unload_lora_adapter", json={"lora_name": name})
        if resp.status_code == 200:
            log.info("unloaded adapter %s", name)
            return
        if resp.status_code == 404 or "not found" in resp.text.lower():
            return
        raise AdminError(f"vLLM could not unload {name}: {resp.status_code} {resp.text}")
