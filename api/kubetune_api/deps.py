"""Shared state of one app instance and the dependencies handlers use."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from kubetune_crd.catalog import Catalog
from kubetune_crd.names import job_id_to_name

from kubetune_api.auth import KeyRing, Tenant, bearer_token
from kubetune_api.metrics import Metrics
from kubetune_api.service import Resolver
from kubetune_api.settings import Settings
from kubetune_api.store.cluster import ClusterStore
from kubetune_api.store.errors import API_KEYS_NOT_LOADED, NOT_CONNECTED, StoreUnavailableError
from kubetune_api.validation import resolve_host
from kubetune_api.views import JobRecord

_DNS_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="dns")


def resolver_with_timeout(timeout: float) -> Resolver:
    """getaddrinfo has no timeout of its own: bound it (an unanswered lookup resolves to [])."""

    def resolve(host: str) -> list[str]:
        future = _DNS_POOL.submit(resolve_host, host)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return []

    return resolve


@dataclass
class AppState:
    settings: Settings
    catalog: Catalog
    metrics: Metrics
    resolver: Resolver
    store: ClusterStore | None = None
    keyring: KeyRing | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def default_tenant(self) -> Tenant:
        """Every request's tenant when authentication is off."""
        return Tenant(namespace=self.settings.namespace)

    def require_store(self) -> ClusterStore:
        if self.store is None:
            raise StoreUnavailableError(
                "not connected to the Kubernetes API server yet", reason=NOT_CONNECTED
            )
        return self.store


async def app_state(request: Request) -> AppState:
    """`async` on purpose: FastAPI runs a plain `def` dependency in the thread pool, and
    those thread hops were most of a cached read's cost."""
    state: AppState = request.app.state.kubetune
    return state


State = Annotated[AppState, Depends(app_state)]


def tenant_of(request: Request, state: AppState) -> Tenant:
    """The caller's tenant: from the bearer API key, or the configured namespace (auth off);
    401 otherwise (503 while no API key has been loaded yet: the apiserver did not answer).
    Plain function, so hot routes can call it without dependency resolution."""
    if state.settings.auth_disabled:
        return state.default_tenant
    keyring = state.keyring
    if keyring is None or not keyring.loaded.is_set():  # no key is known yet: not the caller's
        raise StoreUnavailableError("the API keys are not loaded yet", reason=API_KEYS_NOT_LOADED)
    token = bearer_token(request.headers.get("authorization"))
    tenant = keyring.lookup(token) if token else None
    if tenant is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.tenant = tenant.namespace
    return tenant


async def current_tenant(request: Request, state: State) -> Tenant:
    """The caller's tenant (see `tenant_of`)."""
    return tenant_of(request, state)


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]


async def find_job(state: AppState, tenant: Tenant, job_id: str) -> JobRecord:
    """The tenant's job with that id, or 404 (also for another tenant's job)."""
    store = state.require_store()
    name = job_id_to_name(job_id)
    rec = await store.jobs.find(tenant.namespace, name) if name is not None else None
    if rec is None:
        raise HTTPException(status_code=404, detail=f"job {job_id} not found")
    return rec
