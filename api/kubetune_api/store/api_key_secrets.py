"""The Secret that maps hashed API keys to tenant namespaces (read by `auth.KeyRing`)."""

from __future__ import annotations

from kubernetes import client as k8s

from kubetune_api.store.errors import REQUEST_TIMEOUT, NotFoundError, translated


class ApiKeySecrets:
    """Reads the API keys Secret; the keyring refreshes from it."""

    def __init__(self, core: k8s.CoreV1Api) -> None:
        self.core = core

    def read(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data (base64 values, as stored), or None when it does not exist."""
        try:
            with translated():
                secret = self.core.read_namespaced_secret(
                    name, namespace, _request_timeout=REQUEST_TIMEOUT
                )
        except NotFoundError:
            return None
        return {
            str(k): v if isinstance(v, str) else v.decode() for k, v in (secret.data or {}).items()
        }
