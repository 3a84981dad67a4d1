"""A small Hugging Face Hub-compatible server on 127.0.0.1 for tests (no Hub is reachable).

It answers what huggingface_hub 2.x asks (see its `hf_api.py` and `file_download.py`):

- `GET /api/{models|datasets}/{org}/{name}/revision/{rev}[?blobs=true]`: `{id, sha, siblings:
  [{rfilename, size, blobId, lfs: {size, sha256, pointerSize}}]}`
- `HEAD|GET /{org}/{name}/resolve/{rev}/{path}` and `/datasets/{org}/{name}/resolve/...`:
  `X-Repo-Commit`, `ETag` (the git blob id, or for LFS files `X-Linked-Etag` = the sha256),
  `Content-Length`, `X-Linked-Size`; `Range: bytes=N-` answers 206 (huggingface_hub resumes).
- Errors as the Hub words them: `X-Error-Code` GatedRepo (401 without a valid token, also for
  a wrong token), RepoNotFound, RevisionNotFound, EntryNotFound.

Revisions: `main` or the repo's commit (a fake but stable sha1 of its files). Each request is
recorded (`requests`) so tests can count downloads; `bytes_per_second` slows file bodies
so a test can kill a download halfway.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass
class HubFileData:
    data: bytes
    lfs: bool

    @property
    def blob_id(self) -> str:
        return hashlib.sha1(f"blob {len(self.data)}\0".encode() + self.data).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class HubRepo:
    repo_type: str
    repo_id: str
    files: dict[str, HubFileData]
    gated: bool = False

    @property
    def commit(self) -> str:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + self.files[name].blob_id.encode())
        return digest.hexdigest()


@dataclass
class HubState:
    repos: dict[tuple[str, str], HubRepo] = field(default_factory=dict)
    token: str = "hf_test_token_0123456789"
    bytes_per_second: float | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def downloads(self, fragment: str = "") -> list[str]:
        """Paths of the file bodies served (GET .../resolve/...) containing `fragment`."""
        with self.lock:
            return [
                p for m, p in self.requests if m == "GET" and "/resolve/" in p and fragment in p
            ]


class HubServer:
    """The server thread; `url` is its HF_ENDPOINT."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("BoundHubHandler", (HubHandler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_repo(
        self, repo_type: str, repo_id: str, directory: Path, *, gated: bool = False
    ) -> HubRepo:
        files = {
            p.relative_to(directory).as_posix(): HubFileData(
                p.read_bytes(), p.suffix in LFS_SUFFIXES
            )
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
        repo = HubRepo(repo_type, repo_id, files, gated)
        self.state.repos[(repo_type, repo_id)] = repo
        return repo


class HubHandler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    # --- routing -------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _route(self, body: bool) -> None:
        path = urlsplit(self.path).path
        with self.state.lock:
            self.state.requests.append((self.command, path))
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] == ["api"] and len(parts) >= 6 and parts[4] == "revision":
            repo_type = {"models": "model", "datasets": "dataset"}.get(parts[1], "")
            self._info(repo_type, f"{parts[2]}/{parts[3]}", "/".join(parts[5:]))
            return
        repo_type = "model"
        if parts[:1] == ["datasets"]:
            repo_type, parts = "dataset", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            self._file(repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), body)
            return
        self._error(404, "RepoNotFound", "not a Hub route")

    # --- answers -------------------------------------------------------------------------
    def _repo(self, repo_type: str, repo_id: str, revision: str) -> HubRepo | None:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        if repo.gated and self.headers.get("Authorization") != f"Bearer {self.state.token}":
            self._error(401, "GatedRepo", f"Access to {repo_id} is restricted: authenticate")
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", repo.commit)
            return None
        return repo

    def _info(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_type, repo_id, revision)
        if repo is None:
            return
        siblings: list[dict[str, Any]] = []
        for name, f in sorted(repo.files.items()):
            entry: dict[str, Any] = {"rfilename": name, "size": len(f.data), "blobId": f.blob_id}
            if f.lfs:
                entry["lfs"] = {"size": len(f.data), "sha256": f.sha256, "pointerSize": 134}
            siblings.append(entry)
        payload = {"id": repo_id, "sha": repo.commit, "private": False, "siblings": siblings}
        if repo.gated:
            payload["gated"] = "manual"
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _file(self, repo_type: str, repo_id: str, revision: str, name: str, body: bool) -> None:
        repo = self._repo(repo_type, repo_id, revision)
        if repo is None:
            return
        f = repo.files.get(name)
        if f is None:
            self._error(404, "EntryNotFound", f"{name} does not exist", repo.commit)
            return
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and ranged[6:].split("-")[0].isdigit():
            start = min(int(ranged[6:].split("-")[0]), len(f.data))
        chunk = f.data[start:]
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", repo.commit)
        etag = f.sha256 if f.lfs else f.blob_id
        self.send_header("ETag", f'"{etag}"')
        if f.lfs:
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(len(f.data)))
        self.send_header("Content-Length", str(len(chunk)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
        self.end_headers()
        if body:
            self._send_slowly(chunk)

    def _send_slowly(self, data: bytes) -> None:
        rate = self.state.bytes_per_second
        step = 64 * 1024
        for offset in range(0, len(data), step):
            try:
                self.wfile.write(data[offset : offset + step])
            except (BrokenPipeError, ConnectionResetError):
                return
            if rate:
                time.sleep(step / rate)

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
