"""The CLI's reads wait out a 503 that names `Retry-After`; its writes are never re-sent.

A real HTTP server on 127.0.0.1 answers 503 + Retry-After (what the API says while its
Kubernetes API server is away) a given number of times, then 200.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubetune_cli.client import ApiRequestError, KubetuneClient


class Flaky(BaseHTTPRequestHandler):
    unavailable_left = 0
    calls: list[str] = []

    def _answer(self) -> None:
        type(self).calls.append(self.command)
        if type(self).unavailable_left > 0:
            type(self).unavailable_left -= 1
            body = {"detail": "the Kubernetes API server is unreachable", "reason": "x"}
            self.send_response(503)
            self.send_header("Retry-After", "1")
        else:
            body = {"job_id": "ft_20240115_103045_abc123", "status": "running"}
            self.send_response(200)
        data = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer  # noqa: N815
    do_POST = _answer  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Flaky.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_status_read_waits_out_retry_after(server: str) -> None:
    Flaky.unavailable_left = 2
    with KubetuneClient(server) as client:
        answer = client.status("ft_20240115_103045_abc123")
    assert answer["status"] == "running"
    assert Flaky.calls == ["GET", "GET", "GET"]


def test_write_is_not_resent_on_503(server: str) -> None:
    Flaky.unavailable_left = 1
    with KubetuneClient(server) as client, pytest.raises(ApiRequestError) as err:
        client.cancel("ft_20240115_103045_abc123")
    assert err.value.status_code == 503 and "unreachable" in err.value.detail
    assert Flaky.calls == ["POST"]
