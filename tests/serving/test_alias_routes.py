"""The serving sidecar's pure logic: an alias resolves to its current version's adapter, a
request is counted on the adapter it resolved to, and a retired adapter drains only once its
last request ended (so it is never unloaded under a request); which adapter and path a pointer
means."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubetune_crd.alias_pointer import AliasPointer
from kubetune_serving.adapters import adapter_name, adapter_path, is_lora
from kubetune_serving.proxy import _rewrite
from kubetune_serving.routes import AliasRoutes


def _pointer(
    version: int, path: str | None = "models/m", fmt: str | None = "peft-lora"
) -> AliasPointer:
    return AliasPointer(alias="frigo", model=f"m{version}", version=version, path=path, format=fmt)


def test_pointer_to_adapter() -> None:
    assert adapter_name(_pointer(3)) == "frigo-v3"
    assert adapter_path(_pointer(1), Path("/models")) == Path("/models/models/m")
    assert adapter_path(_pointer(1, path="../etc"), Path("/models")) is None
    assert adapter_path(_pointer(1, path="/etc/passwd"), Path("/models")) is None
    assert adapter_path(_pointer(1, path=None), Path("/models")) is None
    assert is_lora(_pointer(1)) and is_lora(_pointer(1, fmt="peft-lora+merged"))
    assert not is_lora(_pointer(1, fmt="safetensors"))


def test_switch_drains_the_old_version_after_its_last_request() -> None:
    async def scenario() -> None:
        routes = AliasRoutes()
        assert routes.switch(_pointer(1)) is None
        assert routes.resolve("frigo") == "frigo-v1" and routes.resolve("smollm2") == "smollm2"
        held = routes.acquire("frigo")
        assert held == "frigo-v1"
        assert routes.switch(_pointer(2)) == "frigo-v1"
        assert routes.acquire("frigo") == "frigo-v2"  # new requests take the new version
        assert not await routes.drain("frigo-v1", timeout=0.05)  # one still running
        release = asyncio.create_task(routes.release(held))
        assert await routes.drain("frigo-v1", timeout=2)
        await release
        assert routes.in_flight == {"frigo-v2": 1}
        assert routes.is_current("frigo-v2") and not routes.is_current("frigo-v1")

    asyncio.run(scenario())


def test_only_an_alias_in_a_json_body_is_rewritten_and_counted() -> None:
    routes = AliasRoutes()
    routes.switch(_pointer(4))
    body, counted = _rewrite(b'{"model": "frigo", "messages": []}', routes)
    assert counted == "frigo-v4" and b'"frigo-v4"' in body
    assert _rewrite(b'{"model": "smollm2"}', routes) == (b'{"model": "smollm2"}', None)
    assert _rewrite(b"not json", routes) == (b"not json", None)
    assert _rewrite(b'["frigo"]', routes)[1] is None
    assert routes.in_flight == {"frigo-v4": 1}
