"""The model registry, read straight from the apiserver: FineTunedModels and ModelAliases.

The operator writes both (a record for each stored model, the alias's current model and its
history); the API reads them, and writes only an alias's `spec.request` (a manual promotion
or rollback, which the operator carries out). A tenant holds a few hundred models at most, read when
someone lists them, so there is no cache: each call is one list or get inside `translated()`.
A cluster without the registry's CRDs (an operator older than the API) reads as empty.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubetune_crd.registry import ALIAS_KIND, ALIAS_PLURAL, MODEL_PLURAL
from kubetune_crd.resource import API_VERSION, GROUP, VERSION

from kubetune_api.store.errors import REQUEST_TIMEOUT, NotFoundError, as_dict, translated

Obj = dict[str, Any]


class ModelRegistry:
    """FineTunedModel records and ModelAliases of the tenants' namespaces."""

    def __init__(self, custom: k8s.CustomObjectsApi) -> None:
        self.custom = custom

    def _list(self, namespace: str, plural: str) -> list[Obj]:
        try:
            with translated():
                page = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, _request_timeout=REQUEST_TIMEOUT
                )
        except NotFoundError:  # the CRD is not installed
            return []
        items: list[Obj] = as_dict(page).get("items") or []
        return items

    def models(self, namespace: str) -> list[Obj]:
        return self._list(namespace, MODEL_PLURAL)

    def aliases(self, namespace: str) -> list[Obj]:
        return self._list(namespace, ALIAS_PLURAL)

    def alias(self, namespace: str, name: str) -> Obj | None:
        try:
            with translated():
                obj = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, ALIAS_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
        except NotFoundError:
            return None
        return as_dict(obj)

    def ask(self, namespace: str, alias: str, request: Obj, resource_version: str | None) -> Obj:
        """Write the alias's spec.request: on the alias as read (`resource_version`; a change
        in between is a ConflictError), or on a new alias when there was none."""
        with translated():
            if resource_version is None:
                body = {
                    "apiVersion": API_VERSION,
                    "kind": ALIAS_KIND,
                    "metadata": {"name": alias, "namespace": namespace},
                    "spec": {"request": request},
                }
                obj = self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, ALIAS_PLURAL, body, _request_timeout=REQUEST_TIMEOUT
                )
            else:
                patch = {
                    "metadata": {"resourceVersion": resource_version},
                    "spec": {"request": request},
                }
                obj = self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    ALIAS_PLURAL,
                    alias,
                    patch,
                    _request_timeout=REQUEST_TIMEOUT,
                )
        return as_dict(obj)
