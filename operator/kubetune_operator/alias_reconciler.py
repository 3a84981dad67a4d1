"""Manual promotions and rollbacks of ModelAliases: level-triggered, one alias at a time.

Triggered by the alias's watch events and by its publish Job's; each run reads the alias and
does the next step of its pending `spec.request` (one whose id is not `status.observedRequest`):

1. no publish Job yet: read the FineTunedModel record; a request that cannot be published
   (record gone, S3 model) is decided at once as not promoted; else create the Job (a 409 on
   a second run adopts it: the name comes from the request id);
2. the Job ended: succeeded -> the alias names the model (the pointer version from the
   publisher's termination message); failed -> not promoted, with the publisher's last word.

The decision goes into the alias's status with `observedRequest` in one resourceVersion-
guarded patch, so it is recorded once, and an Event goes on the alias.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubetune_crd import names
from kubetune_crd.registry import (
    ALIAS_PLURAL,
    MODEL_PLURAL,
    AliasRequest,
    FineTunedModel,
    ModelAlias,
)
from pydantic import ValidationError

from kubetune_operator.events import post_transitions
from kubetune_operator.kube import ApiError, KubeClient, job_path, pod_path
from kubetune_operator.pod_readers import job_condition, terminated_state
from kubetune_operator.publish_builders import (
    build_publish_job,
    pointer_version,
    publish_job_name,
    publish_problem,
    record_bits_per_byte,
    request_outcome,
)
from kubetune_operator.registry_writer import alias_target, registry_path, with_decision
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.transitions import decision_transition

Obj = dict[str, Any]
log = logging.getLogger("kubetune.operator.alias")
_locks: dict[tuple[str, str], asyncio.Lock] = {}


async def _get(client: KubeClient, path: str, params: dict[str, str] | None = None) -> Obj | None:
    try:
        return await client.get(path, params)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def _record(client: KubeClient, namespace: str, name: str) -> FineTunedModel | None:
    obj = await _get(client, registry_path(MODEL_PLURAL, namespace, name))
    if obj is None:
        return None
    try:
        return FineTunedModel.from_k8s(obj)
    except ValidationError as exc:
        log.warning("unreadable FineTunedModel %s/%s: %s", namespace, name, exc)
        return None


async def _last_word(client: KubeClient, namespace: str, job_name: str) -> str:
    """The publisher's termination message (its pointer JSON, or its error)."""
    pods = await client.get(pod_path(namespace), {"labelSelector": f"job-name={job_name}"})
    for pod in reversed(pods.get("items") or []):
        message = (terminated_state(pod) or {}).get("message")
        if message:
            return str(message).strip()
    return ""


async def _decide(
    client: KubeClient,
    obj: Obj,
    request: AliasRequest,
    record: FineTunedModel | None,
    *,
    published: bool,
    reason: str,
    version: int | None,
    instance: str,
) -> None:
    """Record the request's decision: promoted when the pointer was published."""
    alias = ModelAlias.from_k8s(obj)
    target = None
    if published and record is not None:
        target = alias_target(
            record.spec.model, str(record.metadata["name"]), record_bits_per_byte(record), version
        )
    promoted = target is not None
    outcome = request_outcome(
        alias, request, record, promoted=promoted, reason=reason, time=names.now_rfc3339()
    )
    if promoted:
        outcome = outcome.model_copy(update={"version": version})
    new = with_decision(alias.status, outcome, target) or alias.status
    status = new.model_copy(update={"observed_request": request.id})
    namespace, name = str(alias.metadata["namespace"]), str(alias.metadata["name"])
    patch = {
        "metadata": {"resourceVersion": alias.metadata.get("resourceVersion")},
        "status": status.to_k8s(),
    }
    updated = await client.merge_patch(
        registry_path(ALIAS_PLURAL, namespace, name, "status"), patch
    )
    log.info("alias %s/%s: %s", namespace, name, outcome.reason)
    await post_transitions(client, updated, [decision_transition(outcome)], instance)


def _ended(job: Obj) -> bool:
    return bool((job.get("status") or {}).get("succeeded")) or (
        (job_condition(job, "Failed") or {}).get("status") == "True"
    )


async def _step(
    client: KubeClient, settings: OperatorSettings, namespace: str, name: str, instance: str
) -> None:
    obj = await _get(client, registry_path(ALIAS_PLURAL, namespace, name))
    if obj is None:
        return
    alias = ModelAlias.from_k8s(obj)
    request = alias.spec.request
    if request is None or alias.status.observed_request == request.id:
        return
    job_name = publish_job_name(name, request.id)
    job = await _get(client, job_path(namespace, job_name))
    if job is not None and not _ended(job):
        return  # publishing: its end is the next event
    record = await _record(client, namespace, request.record)
    if job is None:
        problem = publish_problem(request, record)
        if problem is None and record is not None:
            try:
                manifest = build_publish_job(alias, request, record, settings)
                await client.post(job_path(namespace), manifest)
            except ApiError as exc:
                if exc.status != 409:
                    raise
            log.info("alias %s/%s: publishing %s (%s)", namespace, name, request.model, job_name)
            return
        published, version = False, None
        reason = problem or f"model record {request.record} not found"
    else:
        message = await _last_word(client, namespace, job_name)
        published = bool((job.get("status") or {}).get("succeeded"))
        version = pointer_version(message) if published else None
        if published:
            reason = f"{request.model} published"
        else:
            reason = f"pointer not written: {message[-300:] or 'the publish Job failed'}"
    await _decide(
        client,
        obj,
        request,
        record,
        published=published,
        reason=reason,
        version=version,
        instance=instance,
    )


async def reconcile_alias(
    client: KubeClient, settings: OperatorSettings, namespace: str, name: str, instance: str
) -> None:
    """Do the next step of the alias's pending request (nothing when none is pending)."""
    lock = _locks.setdefault((namespace, name), asyncio.Lock())
    async with lock:
        for attempt in range(3):
            try:
                await _step(client, settings, namespace, name, instance)
                return
            except ApiError as exc:
                if exc.status == 409 and attempt < 2:  # the alias changed under us: read again
                    continue
                raise
