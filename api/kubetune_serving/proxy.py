"""The ASGI proxy in front of vLLM: requests for `model: <alias>` run on its current version.

Everything is forwarded to vLLM's OpenAI-compatible server as it is, streaming both ways,
except that a JSON body whose `model` is an alias gets the alias's current adapter name
instead. Resolving the name and counting the request in flight on that adapter happen in one
step of the event loop (`AliasRoutes.acquire`), and the count is released once the response
has been fully sent or abandoned, so an adapter is never unloaded under a request.
`GET /v1/models` also lists each alias (as an adapter of the base model); `/livez` is the
sidecar's own liveness (vLLM's `/health`, forwarded, is the pod's readiness).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kubetune_serving.adapters import adapter_name
from kubetune_serving.routes import AliasRoutes

HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}
MAX_BODY = 8 * 1024 * 1024


def _rewrite(body: bytes, routes: AliasRoutes) -> tuple[bytes, str | None]:
    """The body with an alias replaced by its adapter; the adapter counted (None: no alias)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body, None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), str):
        return body, None
    if doc["model"] not in routes.current:
        return body, None
    doc["model"] = routes.acquire(doc["model"])
    return json.dumps(doc).encode(), doc["model"]


def build_app(routes: AliasRoutes, upstream: httpx.AsyncClient) -> Starlette:
    """The proxy app forwarding to `upstream` (an httpx client with vLLM's base URL)."""

    async def models(request: Request) -> Response:
        resp = await upstream.get("/v1/models")
        doc: dict[str, Any] = resp.json()
        data = doc.get("data") or []
        base = next((m.get("id") for m in data if not m.get("parent")), None)
        for alias, pointer in sorted(routes.current.items()):
            data.append(
                {
                    "id": alias,
                    "object": "model",
                    "parent": base,
                    "root": adapter_name(pointer),
                    "owned_by": "kubetune",
                }
            )
        return JSONResponse({**doc, "data": data}, status_code=resp.status_code)

    async def forward(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": {"message": "request body too large"}}, 413)
        body, counted = _rewrite(body, routes) if body else (body, None)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            upstream_req = upstream.build_request(
                request.method,
                request.url.path,
                params=request.query_params,
                headers=headers,
                content=body,
            )
            resp = await upstream.send(upstream_req, stream=True)
        except httpx.HTTPError as exc:
            if counted:
                await routes.release(counted)
            return JSONResponse({"error": {"message": f"vLLM unreachable: {exc}"}}, 502)

        done = False

        async def close() -> None:  # once: after the last chunk, or when the client left
            nonlocal done
            if done:
                return
            done = True
            await resp.aclose()
            if counted:
                await routes.release(counted)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            finally:
                await close()

        out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
        return StreamingResponse(
            chunks(),
            status_code=resp.status_code,
            headers=out_headers,
            background=BackgroundTask(close),
        )

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    return Starlette(
        routes=[
            Route("/livez", livez, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/{path:path}", forward, methods=methods),
        ]
    )
