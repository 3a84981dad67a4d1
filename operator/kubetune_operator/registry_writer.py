"""The operator's writes to the model registry, when a FineTuneJob has stored its model.

A FineTunedModel record (named like the job, no owner reference: it outlives the job) is
created, or its spec refreshed; when the job asked for `spec.promotion`, the trainer's
decision (`status.promotion`) goes into the alias's ModelAlias: its current model when
promoted, and a history entry either way, each with both figures, and an Event on the alias.
Before a promoting job's Job is created, `champion_of` turns the alias's current model into
the run config's champion, so the challenger's trainer evaluates it on its own held-out split.

The builders are pure; `record_success` and `read_alias` do the I/O. Every write is
idempotent (create, or merge-patch on 409; a history entry is added once), so a reconcile
that runs twice, or after a restart, records nothing twice.
"""

from __future__ import annotations

import logging
from typing import Any

from kubetune_crd import names
from kubetune_crd.promotion import PromotionOutcome
from kubetune_crd.registry import (
    ALIAS_KIND,
    ALIAS_PLURAL,
    HISTORY_MAX,
    MODEL_KIND,
    MODEL_PLURAL,
    AliasTarget,
    DatasetRecord,
    FineTunedModelSpec,
    ModelAlias,
    ModelAliasStatus,
)
from kubetune_crd.resource import API_VERSION, GROUP, VERSION, FineTuneJob
from kubetune_crd.status import FineTuneJobStatus, ModelInfo
from kubetune_crd.trainer_contract import ChampionModel

from kubetune_operator.events import post_transitions
from kubetune_operator.kube import ApiError, KubeClient
from kubetune_operator.transitions import decision_transition

Obj = dict[str, Any]
CONFLICT_RETRIES = 5
log = logging.getLogger("kubetune.operator.registry")


def registry_path(plural: str, namespace: str, name: str | None = None, sub: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
    path = f"{base}/{name}" if name else base
    return f"{path}/{sub}" if sub else path


# -- pure builders ------------------------------------------------------------------------------
def model_record(ftj: FineTuneJob, status: FineTuneJobStatus) -> Obj | None:
    """The FineTunedModel of a Succeeded job's model (None without a stored model)."""
    if status.model is None:
        return None
    meta, spec = ftj.metadata, ftj.spec
    record = FineTunedModelSpec(
        job=str(meta["name"]),
        job_uid=meta.get("uid"),
        method=spec.method.type,
        model=status.model,
        dataset=DatasetRecord(
            url=spec.dataset.url,
            sha256=status.model.dataset_sha256,
            validation_split=spec.dataset.validation_split,
            seed=spec.hyperparameters.seed,
        ),
        hyperparameters=spec.hyperparameters,
        metrics=status.metrics,
        samples=status.samples,
    )
    return {
        "apiVersion": API_VERSION,
        "kind": MODEL_KIND,
        "metadata": {
            "name": str(meta["name"]),
            "namespace": str(meta["namespace"]),
            "labels": {
                names.LABEL_MANAGED_BY: names.MANAGED_BY,
                names.LABEL_FINETUNEJOB: str(meta["name"]),
            },
        },
        "spec": record.to_k8s(),
    }


def alias_target(
    model: ModelInfo, record: str, bits_per_byte: float | None, version: int | None
) -> AliasTarget:
    """What the alias names once `model` (FineTunedModel `record`) is published."""
    return AliasTarget(
        model=model.name,
        record=record,
        path=model.path,
        uri=model.uri,
        format=model.format,
        base_model=model.base_model,
        bits_per_byte=bits_per_byte,
        version=version,
    )


def with_decision(
    current: ModelAliasStatus, outcome: PromotionOutcome, target: AliasTarget | None
) -> ModelAliasStatus | None:
    """The alias status after `outcome` (None when it is recorded already); `target`, the
    model it names when promoted, is required then."""
    if any(h.model == outcome.model and h.time == outcome.time for h in current.history):
        return None
    history = [*current.history, outcome][-HISTORY_MAX:]
    if outcome.promoted:
        assert target is not None, "a promotion names its target"
    named = target if outcome.promoted else current.current
    return current.model_copy(update={"current": named, "history": history})


def champion_of(alias: ModelAlias | None) -> ChampionModel | None:
    """The run config's champion: the alias's current model, if it has one."""
    if alias is None or alias.status.current is None:
        return None
    cur = alias.status.current
    if not (cur.path or (cur.uri or "").startswith("s3://")):
        return None
    return ChampionModel(
        alias=str(alias.metadata.get("name")),
        name=cur.model,
        path=cur.path,
        uri=cur.uri if not cur.path else None,
        format=cur.format or names.FORMAT_LORA,
        base_model=cur.base_model,
    )


# -- I/O ----------------------------------------------------------------------------------------
async def read_alias(client: KubeClient, namespace: str, alias: str) -> ModelAlias | None:
    try:
        return ModelAlias.from_k8s(await client.get(registry_path(ALIAS_PLURAL, namespace, alias)))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def _upsert(client: KubeClient, plural: str, manifest: Obj) -> Obj:
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        return await client.post(registry_path(plural, namespace), manifest)
    except ApiError as exc:
        if exc.status != 409:
            raise
    body = {k: v for k, v in manifest.items() if k in ("metadata", "spec")}
    return await client.merge_patch(registry_path(plural, namespace, name), body)


async def record_success(
    client: KubeClient, ftj: FineTuneJob, status: FineTuneJobStatus, instance: str
) -> None:
    """The job's model into the registry and its promotion decision into the alias."""
    record = model_record(ftj, status)
    if record is None:
        return
    namespace, job = str(ftj.metadata["namespace"]), str(ftj.metadata["name"])
    await _upsert(client, MODEL_PLURAL, record)
    outcome = status.promotion
    if outcome is None:
        return
    model = status.model  # not None: model_record() returned a record
    assert model is not None
    target = alias_target(model, job, outcome.challenger_bits_per_byte, outcome.version)
    for attempt in range(CONFLICT_RETRIES):
        alias_obj = await _alias_object(client, namespace, outcome.alias)
        new = with_decision(ModelAlias.from_k8s(alias_obj).status, outcome, target)
        if new is None:
            return
        # resourceVersion: two jobs deciding at once must not overwrite each other's entry
        version = alias_obj["metadata"].get("resourceVersion")
        patch = {"metadata": {"resourceVersion": version}, "status": new.to_k8s()}
        try:
            updated = await client.merge_patch(
                registry_path(ALIAS_PLURAL, namespace, outcome.alias, "status"), patch
            )
        except ApiError as exc:
            if exc.status == 409 and attempt + 1 < CONFLICT_RETRIES:
                continue
            raise
        log.info("alias %s/%s: %s", namespace, outcome.alias, outcome.reason)
        await post_transitions(client, updated, [decision_transition(outcome)], instance)
        return


async def _alias_object(client: KubeClient, namespace: str, alias: str) -> Obj:
    """The ModelAlias, created (empty) when it does not exist yet."""
    manifest: Obj = {
        "apiVersion": API_VERSION,
        "kind": ALIAS_KIND,
        "metadata": {"name": alias, "namespace": namespace},
        "spec": {},
    }
    try:
        return await client.post(registry_path(ALIAS_PLURAL, namespace), manifest)
    except ApiError as exc:
        if exc.status != 409:
            raise
    return await client.get(registry_path(ALIAS_PLURAL, namespace, alias))
