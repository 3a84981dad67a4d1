"""Dataset URL checks: what the API lets the trainer fetch.

Accepted: `https://host/...` (host resolving only to public addresses), `s3://bucket/key`,
`hf://datasets/org/name[@revision][/path]` (the Hub: the operator's endpoint, checked by
the trainer), and paths relative to the data root (or absolute paths inside it, stored
relative). Rejected:
any other scheme, `..` segments (also percent-encoded), credentials in URLs, hosts that are
or resolve to loopback, private, link-local, metadata, multicast or reserved addresses,
and files whose format is neither csv nor jsonl.

The checks are pure functions; only `resolve_host` does I/O (DNS). The trainer still fetches
the URL itself later; it must not follow redirects to other hosts (DNS may change between
this check and the fetch).
"""

from __future__ import annotations

import ipaddress
import posixpath
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from kubetune_crd.hub import HubRefError, parse_hub_ref

SUPPORTED_FORMATS = ("csv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl"}

# Names that must never be fetched whatever they resolve to.
_BLOCKED_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")
_BLOCKED_SUFFIXES = (".localhost", ".local", ".internal", ".cluster.local", ".svc")

# Cloud metadata endpoints outside the ranges `is_global` already excludes.
_METADATA_NETWORKS = (
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
    ipaddress.ip_network("192.0.0.192/32"),  # Oracle Cloud
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IPv6
)

Kind = Literal["path", "https", "s3", "hub"]


class DatasetURLError(ValueError):
    """The dataset URL is not acceptable; the message says why."""


@dataclass(frozen=True)
class ParsedDataset:
    """A dataset URL that passed the syntactic checks."""

    url: str
    """The form stored in the FineTuneJob spec (absolute paths made relative)."""
    kind: Kind
    format: str
    """csv or jsonl: the explicit format, else the file extension's."""
    host: str | None = None
    """For https: the host name or address still to be checked (`check_addresses`)."""


def _has_dotdot(path: str) -> bool:
    decoded = path
    for _ in range(3):  # %252e%252e decodes twice
        decoded = unquote(decoded)
    return any(seg == ".." for seg in decoded.replace("\\", "/").split("/"))


def _format_of(path: str, explicit: str) -> str:
    if explicit in SUPPORTED_FORMATS:
        return explicit
    suffix = posixpath.splitext(unquote(path).rstrip("/"))[1].lower()
    fmt = _EXTENSIONS.get(suffix)
    if fmt is None:
        raise DatasetURLError(
            f"unsupported dataset format {suffix or '(no extension)'!r}: "
            f"supported formats are {', '.join(SUPPORTED_FORMATS)} (or set dataset_format)"
        )
    return fmt


def parse_dataset_url(url: str, *, data_root: str, dataset_format: str = "auto") -> ParsedDataset:
    """Check a dataset URL's syntax; raises DatasetURLError."""
    if url != url.strip() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise DatasetURLError("dataset URL must not contain spaces or control characters")
    if not url:
        raise DatasetURLError("dataset URL is empty")
    if "\\" in url:
        raise DatasetURLError("dataset URL must not contain backslashes")
    if _has_dotdot(url):
        raise DatasetURLError("dataset URL must not contain '..' segments")

    if "://" in url or ":" in url.split("/", 1)[0]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "https":
            return _parse_https(url, dataset_format)
        if scheme == "s3":
            return _parse_s3(url, dataset_format)
        if scheme == "hf":
            return _parse_hub(url, dataset_format)
        raise DatasetURLError(
            f"dataset URL scheme {scheme or '(none)'!r} is not allowed: use https://, s3://, "
            "hf://datasets/org/name[@revision][/path] or a path relative to the data root"
        )
    return _parse_path(url, data_root, dataset_format)


def _parse_https(url: str, dataset_format: str) -> ParsedDataset:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise DatasetURLError("dataset URL must not carry credentials")
    try:
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise DatasetURLError(f"dataset URL has an invalid host or port: {exc}") from None
    if not host:
        raise DatasetURLError("https dataset URL needs a host")
    host = host.rstrip(".").lower()
    if not host:
        raise DatasetURLError("https dataset URL needs a host")
    if host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES):
        raise DatasetURLError(f"dataset host {host!r} is an internal name")
    fmt = _format_of(parts.path, dataset_format)
    return ParsedDataset(url=url, kind="https", format=fmt, host=host)


def _parse_s3(url: str, dataset_format: str) -> ParsedDataset:
    parts = urlsplit(url)
    if not url.startswith("s3://"):
        raise DatasetURLError("s3 dataset URL must start with s3:// (lower case)")
    bucket = parts.netloc
    key = parts.path.lstrip("/")
    if not bucket or "@" in bucket or ":" in bucket:
        raise DatasetURLError("s3 dataset URL needs a bucket: s3://bucket/key")
    if not key:
        raise DatasetURLError("s3 dataset URL needs an object key: s3://bucket/key")
    if parts.query or parts.fragment:
        raise DatasetURLError("s3 dataset URL must not have a query or fragment")
    fmt = _format_of(key, dataset_format)
    return ParsedDataset(url=url, kind="s3", format=fmt)


def _parse_hub(url: str, dataset_format: str) -> ParsedDataset:
    """hf://datasets/org/name[@revision][/path]: without a path the trainer picks the repo's
    train split file, so the format may stay `auto` (the file's extension decides later)."""
    try:
        ref = parse_hub_ref(url, "dataset")
    except HubRefError as exc:
        raise DatasetURLError(str(exc)) from None
    if ref.path is None:
        fmt = dataset_format if dataset_format in SUPPORTED_FORMATS else "auto"
    else:
        fmt = _format_of(ref.path, dataset_format)
    return ParsedDataset(url=url, kind="hub", format=fmt)


def _parse_path(url: str, data_root: str, dataset_format: str) -> ParsedDataset:
    if "?" in url or "#" in url:
        raise DatasetURLError("dataset path must not contain '?' or '#'")
    path = url
    if path.startswith("/"):
        root = posixpath.normpath(data_root)
        norm = posixpath.normpath(path)
        if root == "/" or not norm.startswith(root.rstrip("/") + "/"):
            raise DatasetURLError(
                f"absolute dataset path outside the data root ({data_root}): use a path "
                "relative to the data root"
            )
        path = norm[len(root.rstrip("/")) + 1 :]
    if path.startswith("~"):
        raise DatasetURLError("dataset path must not start with '~'")
    if ":" in path:
        raise DatasetURLError("dataset path must not contain ':'")
    norm_rel = posixpath.normpath(path)
    if norm_rel in (".", "") or norm_rel.startswith("/"):
        raise DatasetURLError("dataset path names no file")
    fmt = _format_of(norm_rel, dataset_format)
    return ParsedDataset(url=norm_rel, kind="path", format=fmt)


def address_problem(address: str, *, internal_ok: bool = False) -> str | None:
    """Why an IP address may not be reached, or None when it is public. `internal_ok` (a
    tracking server, usually in the cluster): loopback and private addresses are fine too;
    cloud metadata, link-local and reserved addresses never are."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            inner = address_problem(str(embedded), internal_ok=internal_ok)
            if inner:
                return inner
    if any(ip in net for net in _METADATA_NETWORKS):
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is a link-local address (includes cloud metadata)"
    if ip.is_multicast or ip.is_unspecified:
        return f"{ip} is a reserved address"
    if internal_ok:
        return None
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_private:
        return f"{ip} is a private address"
    if ip.is_reserved:
        return f"{ip} is a reserved address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def check_addresses(host: str, addresses: list[str]) -> None:
    """Raise DatasetURLError unless every address `host` resolves to is public."""
    if not addresses:
        raise DatasetURLError(f"dataset host {host!r} does not resolve")
    for address in addresses:
        problem = address_problem(address)
        if problem:
            raise DatasetURLError(f"dataset host {host!r} is not allowed: {problem}")


def resolve_host(host: str) -> list[str]:
    """All addresses `host` resolves to (blocking DNS); [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def check_local_file(relative: str, data_root: str) -> None:
    """For local development: the relative path must be a file under the data root."""
    root = Path(data_root).resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise DatasetURLError("dataset path leaves the data root")
    if not target.is_file():
        raise DatasetURLError(f"dataset file {relative!r} not found under the data root")
