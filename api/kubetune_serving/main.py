"""`kubetune-serving`: the sidecar next to vLLM (alias sync loop + proxy), one process.

    kubetune-serving --vllm-url http://127.0.0.1:8000 --models-dir /var/lib/kubetune/models \\
        --host 0.0.0.0 --port 8080

It waits for vLLM's `/health`, then keeps the aliases' adapters loaded (`sync`) and answers
clients on `--port` (`proxy`), the port the chart's Service exposes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from kubetune_serving.proxy import build_app
from kubetune_serving.routes import AliasRoutes
from kubetune_serving.sync import AliasSync
from kubetune_serving.vllm_admin import VLLMAdmin

log = logging.getLogger("kubetune.serving")
UPSTREAM_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune-serving", description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-url", default="http://127.0.0.1:8000")
    parser.add_argument("--models-dir", type=Path, default=Path("/var/lib/kubetune/models"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--interval", type=float, default=1.0, help="pointer poll, seconds")
    return parser


def build(args: argparse.Namespace) -> Starlette:
    """The proxy app, with the sync loop started and stopped by its lifespan."""
    upstream = httpx.AsyncClient(base_url=args.vllm_url, timeout=UPSTREAM_TIMEOUT)
    routes = AliasRoutes()
    sync = AliasSync(VLLMAdmin(upstream), routes, args.models_dir, args.interval)
    app = build_app(routes, upstream)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        while not await sync.admin.healthy():
            log.info("waiting for vLLM at %s", args.vllm_url)
            await asyncio.sleep(2)
        stop = asyncio.Event()
        task = asyncio.create_task(sync.run(stop))
        try:
            yield
        finally:
            stop.set()
            await task
            await upstream.aclose()

    app.router.lifespan_context = lifespan
    return app


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(build(args), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
