"""FineTuneSchedules: read and written straight on the apiserver (blocking calls).

A tenant has a handful of schedules, read far less often than jobs, so there is no cache:
each call is one request, inside `translated()` (ConflictError, NotFoundError or
StoreUnavailableError, as for every store call).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubetune_crd.resource import GROUP, SCHEDULE_PLURAL, VERSION

from kubetune_api.store.errors import REQUEST_TIMEOUT, NotFoundError, as_dict, translated

Obj = dict[str, Any]


class FineTuneSchedules:
    """The FineTuneSchedules of the tenants' namespaces."""

    def __init__(self, custom: k8s.CustomObjectsApi) -> None:
        self.custom = custom

    def create(self, namespace: str, body: Obj) -> Obj:
        """Create it; ConflictError when a schedule of that name exists."""
        with translated():
            obj = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, SCHEDULE_PLURAL, body, _request_timeout=REQUEST_TIMEOUT
            )
        return as_dict(obj)

    def get(self, namespace: str, name: str) -> Obj | None:
        try:
            with translated():
                obj = self.custom.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    SCHEDULE_PLURAL,
                    name,
                    _request_timeout=REQUEST_TIMEOUT,
                )
        except NotFoundError:
            return None
        return as_dict(obj)

    def list(self, namespace: str) -> list[Obj]:
        with translated():
            page = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, SCHEDULE_PLURAL, _request_timeout=REQUEST_TIMEOUT
            )
        items: list[Obj] = as_dict(page).get("items") or []
        return sorted(items, key=lambda o: str((o.get("metadata") or {}).get("name")))

    def set_suspend(self, namespace: str, name: str, suspend: bool) -> Obj:
        """Suspend or resume it (NotFoundError when it does not exist)."""
        patch = {"spec": {"suspend": suspend}}
        with translated():
            obj = self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                SCHEDULE_PLURAL,
                name,
                patch,
                _request_timeout=REQUEST_TIMEOUT,
            )
        return as_dict(obj)

    def delete(self, namespace: str, name: str, keep_jobs: bool) -> None:
        """Delete it; its runs go with it (garbage collector) unless `keep_jobs`. Models stay."""
        body = k8s.V1DeleteOptions(propagation_policy="Orphan" if keep_jobs else "Background")
        with translated():
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                SCHEDULE_PLURAL,
                name,
                body=body,
                _request_timeout=REQUEST_TIMEOUT,
            )
