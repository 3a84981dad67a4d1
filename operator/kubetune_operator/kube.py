"""A small asyncio Kubernetes API client (aiohttp, JSON in and out).

kopf watches; this client writes (Jobs, Services, NetworkPolicies, FineTuneJob status, Events,
TokenReviews) and reads a claim's access modes. The official `kubernetes` package is used
only to load credentials (in-cluster service account or kubeconfig). Its synchronous client
would need a thread per call and deserialises into slow model objects; the operator creates
hundreds of Jobs at once, so it speaks plain JSON.
"""

from __future__ import annotations

import json
import logging
import ssl
from typing import Any

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubetune_crd.resource import GROUP, PLURAL, VERSION

Obj = dict[str, Any]
log = logging.getLogger("kubetune.operator.kube")

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: Obj | str, method: str, path: str) -> None:
        self.status = status
        self.body = body
        message = body.get("message", "") if isinstance(body, dict) else str(body)[:500]
        self.reason = body.get("reason", "") if isinstance(body, dict) else ""
        self.message = str(message)
        super().__init__(f"{method} {path}: {status} {self.reason} {self.message}")


def load_configuration() -> k8s_client.Configuration:
    """In-cluster service account when inside a pod, else the kubeconfig (KUBECONFIG)."""
    cfg = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=cfg)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=cfg)
    return cfg


class KubeClient:
    """JSON requests against one API server with the operator's credentials."""

    def __init__(self, cfg: k8s_client.Configuration, connections: int = 32) -> None:
        self._cfg = cfg
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self.host = str(cfg.host).rstrip("/")

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.host.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=self._cfg.ssl_ca_cert or None)
        if self._cfg.cert_file:
            ctx.load_cert_chain(self._cfg.cert_file, self._cfg.key_file)
        if not self._cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _headers(self) -> dict[str, str]:
        hook = getattr(self._cfg, "refresh_api_key_hook", None)
        if hook is not None:
            hook(self._cfg)  # re-reads a rotated service-account token when due
        auth = self._cfg.get_api_key_with_prefix(
            "authorization"
        ) or self._cfg.get_api_key_with_prefix("BearerToken")
        headers = {"Accept": "application/json", "User-Agent": "kubetune-operator"}
        if auth:
            headers["Authorization"] = auth if " " in auth else f"Bearer {auth}"
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl())
            timeout = aiohttp.ClientTimeout(total=60, connect=10)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        """Send one request; the decoded JSON answer, or ApiError."""
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        session = self._get_session()
        async with session.request(
            method, self.host + path, data=data, params=params, headers=headers
        ) as resp:
            text = await resp.text()
            try:
                payload: Any = await resp.json(content_type=None) if text else {}
            except ValueError:
                payload = text
            if resp.status >= 400:
                raise ApiError(resp.status, payload, method, path)
            return payload if isinstance(payload, dict) else {"raw": payload}

    async def get(self, path: str, params: dict[str, str] | None = None) -> Obj:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Obj) -> Obj:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, body: Obj) -> Obj:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def delete(self, path: str, body: Obj | None = None) -> Obj:
        return await self.request("DELETE", path, body=body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def job_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    return f"{base}/{name}" if name else base


def ftj_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    if not name:
        return base
    return f"{base}/{name}/{subresource}" if subresource else f"{base}/{name}"


def pod_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/pods"
    return f"{base}/{name}" if name else base


def service_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/services"
    return f"{base}/{name}" if name else base


def network_policy_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    return f"{base}/{name}" if name else base


def pvc_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
