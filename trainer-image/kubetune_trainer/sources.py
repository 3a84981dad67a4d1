"""Fetching the dataset: a mounted volume, https, s3 or the Hub (`hub.py`), with path and
SSRF guards.

- Volume paths resolve under the data root; `..`, absolute paths outside it and symlinks
  that escape it are refused.
- https only (no other scheme). Every host, including each redirect's, must resolve only to
  public addresses: loopback, private, link-local (cloud metadata), CGNAT, multicast and
  reserved ranges are refused. The connection goes to the address that was checked (no DNS
  rebinding between check and connect), with TLS verified against the host name. Size and
  total time are capped.
- s3://bucket/key through boto3 (endpoint from AWS_ENDPOINT_URL or the caller).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

from kubetune_trainer.errors import BadInputError, RetryableError

MAX_DATASET_BYTES = int(os.environ.get("KUBETUNE_MAX_DATASET_BYTES", str(2 * 1024**3)))
HTTPS_TIMEOUT_S = float(os.environ.get("KUBETUNE_HTTPS_TIMEOUT_SECONDS", "600"))
MAX_REDIRECTS = 5
CHUNK = 1024 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]
AddressPolicy = Callable[[IPAddress], bool]


@dataclass(frozen=True)
class FetchedDataset:
    """A dataset file on local disk, where it came from, and its digest."""

    path: Path
    uri: str
    sha256: str
    size: int
    revision: str | None = None
    """The commit of an hf:// dataset (its `uri` names it too)."""


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# ---------------------------------------------------------------- volume paths


def resolve_volume_path(url: str, data_root: str | Path) -> Path:
    """The real path of a dataset on the data volume, refusing anything outside the root."""
    root = Path(data_root).resolve()
    if "\x00" in url:
        raise BadInputError("dataset path contains a NUL byte")
    pure = PurePosixPath(url)
    if ".." in pure.parts:
        raise BadInputError(f"dataset path {url!r} may not contain '..'")
    candidate = Path(url) if pure.is_absolute() else root / url
    if not candidate.absolute().is_relative_to(root):
        raise BadInputError(f"dataset path {url!r} is outside the data volume ({root})")
    real = candidate.resolve()
    if not real.is_relative_to(root):
        raise BadInputError(f"dataset path {url!r} leads outside the data volume (symlink)")
    if not real.exists():
        raise BadInputError(f"dataset {url!r} not found on the data volume ({root})")
    if not real.is_file():
        raise BadInputError(f"dataset {url!r} is not a file")
    return real


# ---------------------------------------------------------------- https


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (metadata endpoints are not)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_private
        and not ip.is_reserved
    )


def system_resolver(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RetryableError(f"cannot resolve dataset host {host!r}: {exc}") from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def checked_address(
    host: str,
    port: int,
    resolver: Resolver,
    policy: AddressPolicy,
    what: str = "dataset host",
    allowed: str = "only public https URLs are allowed",
    refused_kind: str = "non-public",
) -> str:
    """The first address of `host` (a literal IP or resolved); BadInputError when any of its
    addresses is refused by `policy` (the dataset and Hub endpoint guards share it)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    addresses = [literal] if literal is not None else resolver(host, port)
    if not addresses:
        raise RetryableError(f"{what} {host!r} has no address")
    refused = [str(a) for a in addresses if not policy(a)]
    if refused:
        raise BadInputError(
            f"{what} {host!r} resolves to a {refused_kind} address ({', '.join(refused)}); "
            + allowed
        )
    return str(addresses[0])


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to a pre-checked IP while verifying TLS against the URL's host name."""

    def __init__(self, host: str, port: int, ip: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self._ip = ip
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port or 443), timeout=self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def _validate_https(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise BadInputError(f"dataset URL scheme {parts.scheme or 'none'!r} refused: use https://")
    if not parts.hostname:
        raise BadInputError(f"dataset URL {url!r} has no host")
    if parts.username or parts.password:
        raise BadInputError("dataset URL may not carry credentials")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return parts.hostname, parts.port or 443, path


def fetch_https(
    url: str,
    dest: Path,
    *,
    max_bytes: int = MAX_DATASET_BYTES,
    timeout_s: float = HTTPS_TIMEOUT_S,
    resolver: Resolver = system_resolver,
    policy: AddressPolicy = is_public_address,
    ssl_context: ssl.SSLContext | None = None,
) -> FetchedDataset:
    """Download an https URL to `dest` under the SSRF guards; redirects are re-checked."""
    context = ssl_context or ssl.create_default_context()
    deadline = time.monotonic() + timeout_s
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        host, port, path = _validate_https(current)
        ip = checked_address(host, port, resolver, policy)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RetryableError(f"dataset download exceeded {timeout_s:.0f}s")
        conn = _PinnedHTTPSConnection(host, port, ip, min(remaining, 60.0), context)
        try:
            conn.request("GET", path, headers={"User-Agent": "kubetune-trainer", "Host": host})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise RetryableError(f"redirect without Location from {host}")
                current = urljoin(current, location)
                continue
            if response.status in (401, 403, 404, 410):
                raise BadInputError(f"dataset URL answered HTTP {response.status}: {url}")
            if response.status != 200:
                raise RetryableError(f"dataset URL answered HTTP {response.status}: {url}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise BadInputError(f"dataset is {declared} bytes; the limit is {max_bytes}")
            return _stream_to(response, dest, url, max_bytes, deadline, timeout_s)
        except (OSError, http.client.HTTPException) as exc:
            raise RetryableError(f"dataset download from {host} failed: {exc}") from None
        finally:
            conn.close()
    raise BadInputError(f"dataset URL redirected more than {MAX_REDIRECTS} times")


def _stream_to(
    response: http.client.HTTPResponse,
    dest: Path,
    url: str,
    max_bytes: int,
    deadline: float,
    timeout_s: float,
) -> FetchedDataset:
    digest = hashlib.sha256()
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as f:
        while chunk := response.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise BadInputError(f"dataset is larger than the limit of {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise RetryableError(f"dataset download exceeded {timeout_s:.0f}s")
            digest.update(chunk)
            f.write(chunk)
    return FetchedDataset(dest, url, digest.hexdigest(), size)


# ---------------------------------------------------------------- s3


def split_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise BadInputError(f"not an s3:// URI: {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client; credentials and AWS_ENDPOINT_URL come from the environment."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"}
        if endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        else None,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or os.environ.get("AWS_REGION") or None,
        config=config,
    )


def classify_s3_error(exc: Exception, what: str) -> Exception:
    """BadInputError for missing/forbidden objects, RetryableError for transient ones."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return BadInputError(f"{what}: no S3 credentials (AWS_ACCESS_KEY_ID / secret)")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NoSuchBucket", "NotFound"):
            return BadInputError(f"{what}: not found ({code})")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return BadInputError(f"{what}: access denied ({code}); check the credentials secret")
        return RetryableError(f"{what}: S3 error {code}")
    if isinstance(exc, BotoCoreError | OSError):
        return RetryableError(f"{what}: {exc}")
    return exc


def fetch_s3(
    uri: str, dest: Path, *, client: Any = None, max_bytes: int = MAX_DATASET_BYTES
) -> FetchedDataset:
    """Download s3://bucket/key to `dest`."""
    bucket, key = split_s3_uri(uri)
    if not key or key.endswith("/"):
        raise BadInputError(f"dataset URI {uri!r} names no object")
    s3 = client or s3_client()
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if int(head.get("ContentLength", 0)) > max_bytes:
            raise BadInputError(
                f"dataset is {head['ContentLength']} bytes; the limit is {max_bytes}"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(dest))
    except BadInputError:
        raise
    except Exception as exc:
        raise classify_s3_error(exc, f"dataset {uri}") from None
    digest, size = sha256_file(dest)
    return FetchedDataset(dest, uri, digest, size)


# ---------------------------------------------------------------- entry point


def fetch_dataset(url: str, data_root: str | Path, work_dir: Path) -> FetchedDataset:
    """Resolve the spec's dataset URL to a local file (downloading https/s3 to work_dir)."""
    scheme = urlsplit(url).scheme
    if scheme == "hf":
        from kubetune_crd.hub import HubRefError, parse_hub_ref

        from kubetune_trainer.hub import fetch_hub_dataset

        try:
            ref = parse_hub_ref(url, "dataset")
        except HubRefError as exc:
            raise BadInputError(str(exc)) from None
        return fetch_hub_dataset(ref, work_dir)
    if scheme == "s3":
        return fetch_s3(url, work_dir / "dataset" / _basename(url))
    if scheme == "https":
        return fetch_https(url, work_dir / "dataset" / _basename(url))
    if scheme:
        raise BadInputError(
            f"dataset URL scheme {scheme!r} refused: use a volume path, https://, s3:// "
            "or hf://datasets/"
        )
    path = resolve_volume_path(url, data_root)
    digest, size = sha256_file(path)
    return FetchedDataset(path, url, digest, size)


def _basename(url: str) -> str:
    name = PurePosixPath(urlsplit(url).path).name
    safe = "".join(c for c in name if c.isalnum() or c in "._-")
    return safe or "dataset"
