"""A manual promotion or rollback of a ModelAlias -> the pointer-publishing Job, and the
decision it ends in (pure).

The API asks by writing the alias's `spec.request` (a model and its FineTunedModel record);
the operator runs `kubetune-trainer publish` (the one pointer writer) in a short Job that
mounts the record's claim, with the trainer pods' restricted security, owned by the alias.
When it ends, the decision (policy `manual`) goes into the alias's history and, when the
pointer was written, its current model: the same `with_decision` a job's promotion uses.
"""

from __future__ import annotations

import json
from typing import Any

from kubetune_crd import names
from kubetune_crd.promotion import POLICY_MANUAL, PromotionOutcome
from kubetune_crd.registry import (
    ALIAS_KIND,
    AliasRequest,
    FineTunedModel,
    ModelAlias,
)
from kubetune_crd.resource import API_VERSION

from kubetune_operator.object_meta import controller_reference
from kubetune_operator.pod_builders import claim_volume, container_security, mount, pod_security
from kubetune_operator.settings import OperatorSettings

Manifest = dict[str, Any]
JOB_PREFIX = "kubetune-publish-"
PUBLISH_DEADLINE_SECONDS = 300
PUBLISH_BACKOFF_LIMIT = 2
PUBLISH_RESOURCES = {"cpu": "100m", "memory": "512Mi"}


def publish_job_name(alias: str, request_id: str) -> str:
    """`kubetune-publish-<alias>-<id>`, a DNS label (at most 63 characters)."""
    return f"{JOB_PREFIX}{alias[:36].rstrip('-')}-{request_id[:8]}"


def claim_of(uri: str | None) -> str | None:
    """The claim of a `pvc://<claim>/<path>` URI (None for S3 or no URI)."""
    if not uri or not uri.startswith("pvc://"):
        return None
    claim = uri.removeprefix("pvc://").split("/", 1)[0]
    return claim or None


def record_bits_per_byte(record: FineTunedModel | None) -> float | None:
    """The record's held-out bits per byte after training (None: unknown)."""
    metrics = record.spec.metrics if record is not None else None
    return metrics.bits_per_byte_after if metrics is not None else None


def publish_problem(request: AliasRequest, record: FineTunedModel | None) -> str | None:
    """Why the request cannot be published (None: it can)."""
    if record is None:
        return f"model record {request.record} not found"
    model = record.spec.model
    if model.name != request.model:
        return f"record {request.record} holds model {model.name}, not {request.model}"
    if claim_of(model.uri) is None or not model.path:
        return f"model {model.name} is not on a volume (manual S3 promotion is not supported)"
    return None


def publish_labels(alias: str) -> dict[str, str]:
    """Labels of the Job and its pod (the operator's Job watch selects managed-by)."""
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_COMPONENT: names.COMPONENT_PUBLISHER,
        names.LABEL_ALIAS: alias,
    }


def build_publish_job(
    alias: ModelAlias, request: AliasRequest, record: FineTunedModel, settings: OperatorSettings
) -> Manifest:
    """The Job that points the alias at the record's model (publish_problem() was None)."""
    model = record.spec.model
    claim = claim_of(model.uri)
    assert claim is not None and model.path  # publish_problem() checked
    name = str(alias.metadata["name"])
    command = [
        *settings.trainer_command,
        "publish",
        "--models-dir",
        names.MODELS_MOUNT,
        "--alias",
        name,
        "--model",
        model.name,
        "--path",
        model.path,
        "--format",
        model.format or names.FORMAT_LORA,
    ]
    if model.base_model:
        command += ["--base-model", model.base_model]
    labels = publish_labels(name)
    container = {
        "name": names.COMPONENT_PUBLISHER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.trainer_image_pull_policy,
        "command": command,
        "volumeMounts": [
            mount(names.VOLUME_MODELS, names.MODELS_MOUNT),
            mount(names.VOLUME_TMP, names.TMP_MOUNT),
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": dict(PUBLISH_RESOURCES), "limits": dict(PUBLISH_RESOURCES)},
        "securityContext": container_security(),
    }
    spec: Manifest = {
        "backoffLimit": PUBLISH_BACKOFF_LIMIT,
        "activeDeadlineSeconds": PUBLISH_DEADLINE_SECONDS,
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security(settings.trainer_uid),
                "containers": [container],
                "volumes": [
                    claim_volume(names.VOLUME_MODELS, claim),
                    {"name": names.VOLUME_TMP, "emptyDir": {}},
                ],
            },
        },
    }
    if settings.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": publish_job_name(name, request.id),
            "namespace": str(alias.metadata["namespace"]),
            "labels": labels,
            "ownerReferences": [controller_reference(API_VERSION, ALIAS_KIND, alias.metadata)],
        },
        "spec": spec,
    }


def pointer_version(message: str | None) -> int | None:
    """The version the publisher wrote (its termination message is the pointer JSON)."""
    try:
        doc = json.loads(message or "")
    except ValueError:
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return version if isinstance(version, int) and version >= 1 else None


def request_outcome(
    alias: ModelAlias,
    request: AliasRequest,
    record: FineTunedModel | None,
    *,
    promoted: bool,
    reason: str,
    time: str,
) -> PromotionOutcome:
    """The history entry of a manual request (no figures compared: a person decided)."""
    current = alias.status.current
    return PromotionOutcome(
        alias=str(alias.metadata["name"]),
        policy=POLICY_MANUAL,
        promoted=promoted,
        reason=f"{request.action}: {reason}"[:512],
        model=request.model,
        previous=current.model if current else None,
        challenger_bits_per_byte=record_bits_per_byte(record),
        champion_bits_per_byte=current.bits_per_byte if current else None,
        time=time,
    )
