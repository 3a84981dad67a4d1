"""The few API calls the node agent makes, behind one small typed facade.

Pods are handled as plain API dicts (camelCase, as the server sends them) rather than the
client's model objects, so the pure modules (env, volumes, status) take the same shapes
that the unit tests write by hand.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from kubetune_local.nodeagent.envvars import secret_data

Obj = dict[str, Any]


class Kube:
    """CoreV1 calls used by the agent (pods, secrets, config maps, tokens, nodes)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core: Any = client.CoreV1Api(api_client)

    def lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's or ConfigMap's data as strings; None when it does not exist."""
        try:
            if kind == "Secret":
                obj = self._raw(
                    self.core.read_namespaced_secret(name, namespace, _preload_content=False)
                )
                return secret_data(obj)
            obj = self._raw(
                self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data: dict[str, str] = dict(obj.get("data") or {})
        for key, value in (obj.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value).decode("utf-8", "replace")
        return data

    def token(self, pod: Obj, audience: str | None, expiration: int) -> tuple[str, float]:
        """A TokenRequest for the pod's ServiceAccount, bound to the pod: (token, expiry)."""
        meta = pod["metadata"]
        spec = client.V1TokenRequestSpec(
            audiences=[audience] if audience else [],
            expiration_seconds=expiration,
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=meta["name"], uid=meta["uid"]
            ),
        )
        sa = pod["spec"].get("serviceAccountName") or "default"
        result = self.core.create_namespaced_service_account_token(
            sa, meta["namespace"], client.AuthenticationV1TokenRequest(spec=spec)
        )
        expiry = result.status.expiration_timestamp
        return str(result.status.token), expiry.timestamp() if expiry else time.time() + expiration

    def patch_pod_status(self, namespace: str, name: str, status: Obj) -> None:
        """Strategic-merge the pod's status (containers and conditions merge by name/type)."""
        try:
            self.core.patch_namespaced_pod_status(name, namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Remove the pod object at once (grace period 0), only if it is still this pod."""
        body = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
        )
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def list_pods(self, node: str) -> tuple[list[Obj], str]:
        """Pods bound to `node` and the list's resourceVersion."""
        raw = self._raw(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", _preload_content=False
            )
        )
        return list(raw.get("items") or []), str(raw["metadata"]["resourceVersion"])

    def watch_pods(
        self, node: str, resource_version: str, timeout: int = 120
    ) -> Iterator[tuple[str, Obj]]:
        """(event type, raw pod) from a watch starting after `resource_version`."""
        w = watch.Watch()
        stream = w.stream(
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
            resource_version=resource_version,
            timeout_seconds=timeout,
            allow_watch_bookmarks=True,
        )
        for event in stream:
            yield str(event["type"]), dict(event["raw_object"])

    @staticmethod
    def _raw(response: Any) -> Obj:
        data: Obj = json.loads(response.data)
        return data
