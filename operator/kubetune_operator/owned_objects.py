"""Create, adopt and delete the objects a FineTuneJob owns (Job, Service, NetworkPolicy).

Every such object has a deterministic name, so creating is idempotent: a 409 means it exists
already (an earlier run of the operator, maybe killed right after the create), and it is
adopted when its controller owner is this FineTuneJob's uid. An object of that name owned by
someone else (e.g. a deleted FineTuneJob's, not yet collected) is waited out, never taken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from kubetune_crd.resource import KIND

from kubetune_operator.create_error import CreateError
from kubetune_operator.kube import (
    ApiError,
    KubeClient,
    job_path,
    network_policy_path,
    service_path,
)
from kubetune_operator.kube_objects import Obj, meta, owner_uid

log = logging.getLogger("kubetune.operator")


@dataclass(frozen=True)
class Created:
    """The object now in place (None if not), why not, and whether it existed already."""

    obj: Obj | None = None
    error: CreateError | None = None
    adopted: bool = False


@dataclass(frozen=True)
class OwnedKind:
    """A kind of owned object and where it lives in the API."""

    kind: str
    path: Callable[[str, str | None], str]

    def collection(self, namespace: str) -> str:
        return self.path(namespace, None)

    def item(self, namespace: str, name: str) -> str:
        return self.path(namespace, name)


JOB = OwnedKind("Job", job_path)
SERVICE = OwnedKind("Service", service_path)
NETWORK_POLICY = OwnedKind("NetworkPolicy", network_policy_path)


def not_owned(kind: OwnedKind, name: str) -> CreateError:
    return CreateError(
        f"a {kind.kind} named {name} that this FineTuneJob does not own exists "
        "(waiting for it to go away)"
    )


async def create_or_adopt(
    client: KubeClient, kind: OwnedKind, manifest: Obj, owner: str
) -> Created:
    """Create `manifest`; adopt an existing one owned by `owner` (a FineTuneJob uid)."""
    namespace, name = str(meta(manifest)["namespace"]), str(meta(manifest)["name"])
    try:
        return Created(obj=await client.post(kind.collection(namespace), manifest))
    except ApiError as exc:
        if exc.status == 409:
            return await adopt(client, kind, namespace, name, owner)
        if exc.status in (400, 422):
            return Created(error=CreateError(exc.message, permanent=True))
        if exc.status in (403, 404):
            return Created(error=CreateError(f"{exc.status} {exc.reason}: {exc.message}"))
        raise


async def adopt(
    client: KubeClient, kind: OwnedKind, namespace: str, name: str, owner: str
) -> Created:
    """The existing object when `owner` controls it."""
    try:
        existing = await client.get(kind.item(namespace, name))
    except ApiError as exc:
        if exc.status == 404:
            gone = CreateError(f"the {kind.kind} was deleted while being adopted; retrying")
            return Created(error=gone)
        raise
    if owner_uid(existing, KIND) == owner:
        log.info("adopted existing %s %s/%s", kind.kind, namespace, name)
        return Created(obj=existing, adopted=True)
    return Created(error=not_owned(kind, name))


async def delete_owned(
    client: KubeClient, kind: OwnedKind, namespace: str, name: str, uid: str | None = None
) -> bool:
    """Delete in the background (the garbage collector removes dependents); False if gone.

    With `uid`, only that very object (a precondition), never a successor of the same name.
    """
    body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    if uid is not None:
        body["preconditions"] = {"uid": uid}
    try:
        await client.delete(kind.item(namespace, name), body)
    except ApiError as exc:
        if exc.status in (404, 409):
            return False
        raise
    return True
