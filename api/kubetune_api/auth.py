"""API keys: bearer tokens whose sha256 maps to a tenant namespace.

Keys live hashed in a Secret (`KUBETUNE_API_API_KEYS_SECRET`, default `kubetune-api-keys`):
each entry's name is the lower-case hex sha256 of an API key, its value the tenant namespace.

    kubectl create secret generic kubetune-api-keys \\
        --from-literal=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)=team-a

The Secret is re-read every `api_keys_refresh_seconds`, so keys can be added and revoked
without a restart. With `auth_disabled` every request acts on the configured namespace.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Tenant:
    namespace: str
    key_hash: str | None = None


def parse_keys(data: dict[str, str], *, encoded: bool = True) -> dict[str, str]:
    """Secret data -> {sha256 hex: namespace}; malformed entries are logged and skipped."""
    keys: dict[str, str] = {}
    for name, value in data.items():
        try:
            namespace = base64.b64decode(value).decode("utf-8") if encoded else value
        except (ValueError, UnicodeDecodeError):
            log.warning("api key entry %s: value is not base64 text, skipped", name[:8])
            continue
        digest = name.strip().lower()
        namespace = namespace.strip()
        if not _SHA256_HEX.match(digest) or not _NAMESPACE.match(namespace):
            log.warning("api key entry %s...: not <sha256 hex>=<namespace>, skipped", digest[:8])
            continue
        keys[digest] = namespace
    return keys


class KeyRing:
    """The current {key hash: namespace} map, refreshed from the Secret in the background."""

    def __init__(
        self,
        load: Callable[[], dict[str, str] | None],
        *,
        refresh_seconds: float,
    ) -> None:
        self._load = load
        self._refresh = refresh_seconds
        self._keys: dict[str, str] = {}
        self.loaded = threading.Event()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-keys", daemon=True)

    def start(self) -> None:
        self.reload()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def reload(self) -> None:
        try:
            data = self._load()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("could not load API keys: %s", self.last_error)
            return
        if data is None:
            log.warning("API keys Secret not found: no key is accepted")
            data = {}
        self._keys = parse_keys(data)
        self.last_error = None
        self.loaded.set()

    def _run(self) -> None:
        while not self._stop.wait(self._refresh):
            self.reload()

    def namespaces(self) -> set[str]:
        return set(self._keys.values())

    def lookup(self, api_key: str) -> Tenant | None:
        # Hashed per request (about a microsecond): no raw key is kept in memory.
        digest = hash_key(api_key)
        namespace = self._keys.get(digest)  # the current keys: revocation applies at once
        return Tenant(namespace=namespace, key_hash=digest) if namespace else None


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
