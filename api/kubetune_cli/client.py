"""A small typed client of the kubetune HTTP API, shared by every CLI command.

It turns transport failures and error answers into two exceptions whose messages a user can
act on, so commands never print a stack trace for an unreachable API or a rejected request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx

READ_RETRY_BUDGET_S = 120.0
"""How long a read keeps honouring `Retry-After` before it reports the 503."""


def _retry_after(response: httpx.Response) -> float | None:
    """The answer's `Retry-After` in seconds (1 to 30), or None when it names none."""
    try:
        return min(max(float(response.headers["Retry-After"]), 1.0), 30.0)
    except (KeyError, ValueError):
        return None


class ApiUnreachableError(Exception):
    """The API did not answer (wrong URL, not running, network)."""


class ApiRequestError(Exception):
    """The API answered with an error status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    """The most useful text of an error answer (FastAPI's `detail`, field errors...)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # pydantic validation errors
        parts = []
        for err in detail:
            if isinstance(err, dict):
                loc = ".".join(str(x) for x in err.get("loc", []) if x != "body")
                parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
            else:
                parts.append(str(err))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("message") or detail)
    return str(detail)


class KubetuneClient:
    """Calls `/api/finetune/*` on one API server."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KubetuneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        # A read the API cannot serve right now (its Kubernetes API server is away) says when
        # to come back: wait and read again, for a bounded time. Writes are never re-sent.
        waited = 0.0
        while method == "GET" and response.status_code == 503 and waited < READ_RETRY_BUDGET_S:
            pause = _retry_after(response)
            if pause is None:
                break
            time.sleep(pause)
            waited += pause
            response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiRequestError(response.status_code, _detail(response))
        return response.json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachableError(
                f"cannot reach the kubetune API at {self.base_url} ({exc.__class__.__name__}: "
                f"{exc}). Is it running? Try `make dev-up`, or set --api-url / KUBETUNE_API_URL."
            ) from exc

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any API call, with the same errors as the named ones (the schedule commands)."""
        return self._request(method, path, **kwargs)

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/api/finetune/info")
        return result

    def start(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._request(
            "POST", "/api/finetune/start", json=body, headers=headers
        )
        return result

    def status(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/finetune/status/{job_id}")
        return result

    def jobs(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        result: dict[str, Any] = self._request("GET", "/api/finetune/jobs", params=params)
        return result

    def models(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        result: dict[str, Any] = self._request("GET", "/api/finetune/models", params=params)
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/api/finetune/cancel/{job_id}")
        return result

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """Log lines of the job's trainer pod; with `follow`, until the pod ends."""
        params = {"follow": "true"} if follow else {}
        try:
            with self._http.stream(
                "GET", f"/api/finetune/logs/{job_id}", params=params, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiRequestError(response.status_code, _detail(response))
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise ApiUnreachableError(
                f"cannot reach the kubetune API at {self.base_url}: {exc}"
            ) from exc
