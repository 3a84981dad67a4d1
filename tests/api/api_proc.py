"""Run `kubetune-api` as a subprocess against a cluster (real HTTP), stop it by PID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from kubetune_local.cluster import free_ports
from support.service_proc import ServiceProcess


class ApiProcess(ServiceProcess):
    """One API server. `settings` are KUBETUNE_API_* variables without the prefix."""

    command = "kubetune-api"
    env_prefix = "KUBETUNE_API_"

    def __init__(self, kubeconfig: str | Path, settings: dict[str, Any] | None = None) -> None:
        (self.port,) = free_ports(1)
        defaults = {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            "API_KEYS_REFRESH_SECONDS": "1",
        }
        for key, value in (settings or {}).items():
            defaults[key] = str(value).lower() if isinstance(value, bool) else str(value)
        super().__init__(kubeconfig, defaults)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        return self.url + "/readyz"

    def restart(self) -> ApiProcess:
        self.stop()
        return self.start()

    def client(self, api_key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)
