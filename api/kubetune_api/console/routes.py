"""`/ui` routes: one HTML shell for every console page, and its static assets.

The shell is the same for every page and job id (the scripts read the page and the id from
the path), so a route here only checks the path and answers a file: no tenant, no key, no
apiserver call. Every answer carries a strict Content-Security-Policy (scripts, styles and
requests from this origin only; no inline code; no framing) and `nosniff`. The routes are
left out of the OpenAPI schema: they are pages, not API operations.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import RedirectResponse, Response
from kubetune_crd.names import job_id_to_name

router = APIRouter(prefix="/ui", include_in_schema=False)

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_ASSET_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}\.(js|css)$")
SHELL = "console.html"


def _load_assets() -> dict[str, bytes]:
    """Every file of the package's `static/` folder, read once at import."""
    folder = resources.files(__package__).joinpath("static")
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.rsplit(".", 1)[-1] in ("html", "js", "css")
    }


ASSETS = _load_assets()


def _file(name: str, *, cache: str) -> Response:
    body = ASSETS.get(name)
    if body is None:
        raise HTTPException(status_code=404, detail="not found", headers=SECURITY_HEADERS)
    media_type = _MEDIA_TYPES["." + name.rsplit(".", 1)[-1]]
    headers = {**SECURITY_HEADERS, "Cache-Control": cache}
    return Response(content=body, media_type=media_type, headers=headers)


def _page(status_code: int = 200) -> Response:
    page = _file(SHELL, cache="no-cache")
    page.status_code = status_code
    return page


@router.get("")
async def console() -> Response:
    """The job list."""
    return _page()


@router.get("/")
async def console_slash() -> Response:
    return RedirectResponse("/ui", status_code=308, headers=SECURITY_HEADERS)


@router.get("/models")
async def models_page() -> Response:
    """Fine-tuned models, their metrics and aliases."""
    return _page()


@router.get("/schedules")
async def schedules_page() -> Response:
    """Retraining schedules: cron, suspended, last and next run."""
    return _page()


@router.get("/start")
async def start_page() -> Response:
    """The start form."""
    return _page()


JobIdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/jobs/{job_id}")
async def job_page(job_id: JobIdPath) -> Response:
    """A job's page (the original API's job id, or a kubectl-made FineTuneJob's name). A
    string that names no job is answered 404 with the same page, which says "not found" in
    words (the API answers 404 for it too) rather than a bare JSON error."""
    return _page(200 if job_id_to_name(job_id) is not None else 404)


AssetPath = Annotated[str, Path(min_length=4, max_length=48)]


@router.get("/static/{name}")
async def asset(name: AssetPath) -> Response:
    """A script or stylesheet of the console (only the package's own files)."""
    if not _ASSET_NAME.match(name):
        raise HTTPException(status_code=404, detail="not found", headers=SECURITY_HEADERS)
    return _file(name, cache="no-cache")
