"""The registry as the API answers it (pure views): records outlive their jobs and win over a
job's status for the same model, an alias filter, the comparison of models trained on the
same data ranked by held-out bits per byte, an alias with its history, and where a
rollback goes."""

from __future__ import annotations

from typing import Any

from kubetune_api.model_views import (
    alias_view,
    aliases_view,
    compare_view,
    current_models,
    model_detail,
    model_rows,
    models_view,
    pending_request,
    rollback_target,
)
from kubetune_api.views import record_from_obj
from kubetune_crd.registry import ModelAlias
from support.registry_records import finetuned_model_record

SHA = "cd" * 32


def _record(name: str, bpb: float | None, *, sha: str = SHA, seed: int = 42) -> dict[str, Any]:
    """A record as read back from the cluster (its namespace and creation time set)."""
    return finetuned_model_record(
        name,
        job=f"job-{name}",
        metrics={"bitsPerByteBefore": 2.0, "bitsPerByteAfter": bpb},
        namespace="team-a",
        creation_timestamp="2026-12-04T10:00:00Z",
        base_model="/models/tiny",
        created=f"2026-12-04T10:{len(name):02d}:00Z",
        dataset_url="data/f.jsonl",
        dataset_sha256=sha,
        seed=seed,
        hyperparameters={"seed": seed},
        samples=[{"prompt": "Hi?", "before": "eh", "after": "Hello!"}],
    )


def _job(name: str, model: str) -> Any:
    return record_from_obj(
        {
            "metadata": {
                "name": name,
                "namespace": "team-a",
                "resourceVersion": "1",
                "uid": "u",
                "creationTimestamp": "2026-12-04T09:00:00Z",
            },
            "spec": {"model": "tiny", "dataset": {"url": "data/f.jsonl"}},
            "status": {
                "phase": "Succeeded",
                "model": {
                    "name": model,
                    "path": f"models/{model}",
                    "uri": "pvc://x",
                    "baseModel": "/models/tiny",
                    "created": "2026-12-04T09:30:00Z",
                },
            },
        }
    )


def test_records_outlive_jobs_and_win_over_them() -> None:
    records = [_record("a", 1.5), {"metadata": {"name": "broken"}, "spec": {"job": 3}}]
    jobs = [_job("job-a", "a"), _job("job-old", "old")]  # job-a's record is the registry's
    rows = model_rows(records, jobs)
    assert [(r.entry.name, r.record is not None) for r in rows] == [("a", True), ("old", False)]
    view = models_view(rows).model_dump()
    assert view["total"] == 2 and view["models"][0]["size_mb"] == 3
    # the figures come with the list, from the record (the job may be gone) or the job
    assert view["models"][0]["metrics"] == {"bits_per_byte_before": 2.0, "bits_per_byte_after": 1.5}
    assert view["models"][0]["job_id"] == "job-a"
    assert (view["models"][1]["job_id"], view["models"][1]["metrics"]) == ("job-old", None)
    assert models_view(rows, current="old").model_dump()["total"] == 1
    assert models_view(rows, base_model="nope").total == 0


def test_model_detail_names_its_aliases_and_answers() -> None:
    rows = model_rows([_record("a", 1.5)], [_job("j-b", "b")])
    aliases = current_models(
        [
            {"metadata": {"name": "frigo"}, "status": {"current": {"model": "a"}}},
            {"metadata": {"name": "empty"}, "status": {}},
        ]
    )
    assert aliases == {"frigo": "a"}
    detail = model_detail(rows[0], aliases)
    assert (detail.aliases, detail.job, detail.format) == (["frigo"], "job-a", "peft-lora")
    assert detail.samples[0].after == "Hello!"
    assert detail.metrics is not None and detail.metrics["bits_per_byte_after"] == 1.5
    from_job = model_detail(rows[1], aliases)
    assert (from_job.name, from_job.aliases, from_job.job) == ("b", [], None)


def test_compare_ranks_only_models_of_the_same_data() -> None:
    records = [
        _record("worse", 1.9),
        _record("best", 1.1),
        _record("unknown", None),
        _record("other-data", 0.5, sha="ef" * 32),
        _record("other-seed", 0.4, seed=1),
    ]
    rows = model_rows(records, [])
    reference = next(r for r in rows if r.entry.name == "worse")
    view = compare_view(rows, reference)
    assert [(e.rank, e.name, e.bits_per_byte) for e in view.models] == [
        (1, "best", 1.1),
        (2, "worse", 1.9),
        (3, "unknown", None),
    ]
    assert view.total == 3 and view.dataset["sha256"] == SHA


def test_alias_view_current_and_history() -> None:
    obj = {
        "metadata": {"name": "frigo"},
        "status": {
            "current": {"model": "a", "path": "models/a", "version": 2, "bitsPerByte": 1.2},
            "history": [
                {"alias": "frigo", "policy": "always", "promoted": True, "model": "a"},
                {
                    "alias": "frigo",
                    "policy": "if-better",
                    "promoted": False,
                    "model": "b",
                    "challengerBitsPerByte": 3.0,
                    "championBitsPerByte": 1.2,
                },
            ],
        },
    }
    view = alias_view(obj)
    assert (view.alias, view.model, view.path, view.version) == ("frigo", "a", "models/a", 2)
    assert [(h.model, h.promoted) for h in view.history] == [("a", True), ("b", False)]
    assert view.history[1].champion_bits_per_byte == 1.2
    empty = alias_view({"metadata": {"name": "new"}})
    assert (empty.model, empty.history) == (None, [])


def test_aliases_list_by_name_with_their_last_decision() -> None:
    decision = {"alias": "frigo", "policy": "if-better", "promoted": False, "model": "b"}
    objs = [
        {
            "metadata": {"name": "frigo"},
            "spec": {
                "request": {
                    "id": "abcdef0123456789",
                    "action": "promote",
                    "model": "c",
                    "record": "j-c",
                }
            },
            "status": {
                "current": {"model": "a", "uri": "s3://bucket/a", "version": 2},
                "history": [{**decision, "promoted": True, "model": "a"}, decision],
            },
        },
        {"metadata": {"name": "broken"}, "status": {"history": "not a list"}},
        {"metadata": {"name": "empty"}},
    ]
    view = aliases_view(objs)
    assert view.total == 2 and [a.alias for a in view.aliases] == ["empty", "frigo"]
    empty, frigo = view.aliases
    assert (empty.model, empty.last_decision, empty.pending) == (None, None, None)
    assert (frigo.model, frigo.path, frigo.version) == ("a", "s3://bucket/a", 2)
    assert frigo.last_decision is not None
    assert (frigo.last_decision.model, frigo.last_decision.promoted) == ("b", False)
    assert frigo.pending is not None and frigo.pending.model == "c"
    assert "history" not in view.model_dump()["aliases"][0]


def test_rollback_goes_to_the_model_before_the_current_one() -> None:
    def alias(current: str | None, promoted: list[tuple[str, bool]], **spec: Any) -> ModelAlias:
        history = [
            {"alias": "frigo", "policy": "always", "promoted": p, "model": m} for m, p in promoted
        ]
        status = {"current": {"model": current} if current else None, "history": history}
        return ModelAlias.from_k8s({"metadata": {"name": "frigo"}, "spec": spec, "status": status})

    assert rollback_target(alias(None, [])) is None
    assert rollback_target(alias("a", [("a", True)])) is None
    assert rollback_target(alias("a", [("a", True), ("b", False)])) is None  # b never named
    assert rollback_target(alias("b", [("a", True), ("c", False), ("b", True)])) == "a"
    request = {"id": "abcdef0123", "action": "promote", "model": "c", "record": "job-c"}
    assert pending_request(alias("a", [], request=request)) is not None
    done = alias("a", [], request=request)
    done.status.observed_request = "abcdef0123"
    assert pending_request(done) is None
