"""Pure unit tests: job ids, dataset URL checks, status mapping, API keys.

The request, spec and echo are tested in test_api_request.py, the idempotency flow in
test_api_idempotency.py.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from kubetune_api.auth import bearer_token, hash_key, parse_keys
from kubetune_api.model_views import model_rows, models_view, size_mb
from kubetune_api.schedule_requests import schedule_view
from kubetune_api.service import FieldError, check_dataset
from kubetune_api.settings import Settings
from kubetune_api.validation import (
    DatasetURLError,
    address_problem,
    check_addresses,
    parse_dataset_url,
)
from kubetune_api.views import JobRecord, job_status, record_from_obj
from kubetune_crd.names import JOB_ID_RE, job_id_to_name, name_to_job_id, new_job_id

ROOT = "/var/lib/kubetune/datasets"


# -- job ids -------------------------------------------------------------------------------
def test_new_job_id_has_the_original_form() -> None:
    when = datetime(2024, 1, 15, 10, 30, 45, tzinfo=timezone.utc)
    assert new_job_id(when, "abc123") == "ft_20240115_103045_abc123"
    assert JOB_ID_RE.match(new_job_id())


def test_job_id_and_name_map_both_ways() -> None:
    assert job_id_to_name("ft_20240115_103045_abc123") == "ft-20240115-103045-abc123"
    assert name_to_job_id("ft-20240115-103045-abc123") == "ft_20240115_103045_abc123"
    for _ in range(50):
        job_id = new_job_id()
        name = job_id_to_name(job_id)
        assert name is not None and "_" not in name
        assert name_to_job_id(name) == job_id


def test_kubectl_names_are_their_own_ids() -> None:
    assert name_to_job_id("my-run") == "my-run"
    assert job_id_to_name("my-run") == "my-run"


@pytest.mark.parametrize(
    "bad",
    ["", "ft_2024", "FT_20240115_103045_abc123", "../x", "a" * 80, "ft-20240115-103045-abc123"],
)
def test_malformed_ids_name_nothing(bad: str) -> None:
    assert job_id_to_name(bad) is None


# -- dataset URLs --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "stored", "fmt"),
    [
        ("data/frigo_training.csv", "data/frigo_training.csv", "csv"),
        ("./data/frigo_training.jsonl", "data/frigo_training.jsonl", "jsonl"),
        (f"{ROOT}/data/x.csv", "data/x.csv", "csv"),
        ("https://example.com/frigo_data.jsonl", "https://example.com/frigo_data.jsonl", "jsonl"),
        ("s3://my-bucket/data/frigo.csv", "s3://my-bucket/data/frigo.csv", "csv"),
    ],
)
def test_accepted_dataset_urls(url: str, stored: str, fmt: str) -> None:
    parsed = parse_dataset_url(url, data_root=ROOT)
    assert (parsed.url, parsed.format) == (stored, fmt)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/a.csv", "scheme"),
        ("file:///etc/passwd.csv", "scheme"),
        ("ftp://example.com/a.csv", "scheme"),
        ("gs://bucket/a.csv", "scheme"),
        ("data/../../etc/passwd.csv", ".."),
        ("https://example.com/a/%2e%2e/b.csv", ".."),
        ("s3://bucket/../x.csv", ".."),
        ("/etc/passwd.csv", "outside the data root"),
        (f"{ROOT}-other/x.csv", "outside the data root"),
        ("https://localhost/a.csv", "internal"),
        ("https://metadata.google.internal/a.csv", "internal"),
        ("https://kubernetes.default.svc/a.csv", "internal"),
        ("https://user:pw@example.com/a.csv", "credentials"),
        ("data/frigo.parquet", "format"),
        ("data/frigo", "format"),
        ("data/a b.csv", "spaces"),
        ("", "empty"),
    ],
)
def test_rejected_dataset_urls(url: str, why: str) -> None:
    with pytest.raises(DatasetURLError, match=why):
        parse_dataset_url(url, data_root=ROOT)


def test_explicit_format_overrides_the_extension() -> None:
    assert parse_dataset_url("data/export.txt", data_root=ROOT, dataset_format="jsonl").format == (
        "jsonl"
    )


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.100.100.200",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_problem(address) is not None


def test_public_addresses_pass() -> None:
    assert address_problem("93.184.215.14") is None
    assert address_problem("2606:2800:21f:cb07:6820:80da:af6b:8b2e") is None


def test_a_host_with_any_private_address_is_refused() -> None:
    with pytest.raises(DatasetURLError, match="private"):
        check_addresses("rebind.example", ["93.184.215.14", "10.0.0.5"])
    with pytest.raises(DatasetURLError, match="does not resolve"):
        check_addresses("nowhere.example", [])


def test_check_dataset_resolves_https_hosts() -> None:
    settings = Settings(_env_file=None)
    resolved = {"good.example": ["93.184.215.14"], "evil.example": ["169.254.169.254"]}

    def resolver(host: str) -> list[str]:
        return resolved.get(host, [])

    assert check_dataset("https://good.example/a.csv", "auto", settings, resolver).kind == "https"
    for url in (
        "https://evil.example/a.csv",
        "https://nowhere.example/a.csv",
        "https://2130706433/a.csv",
        "https://[::1]/a.csv",
        "https://10.0.0.1/a.csv",
    ):
        with pytest.raises(FieldError) as info:
            check_dataset(url, "auto", settings, resolver)
        assert info.value.field == "dataset_url"


def test_unresolvable_hosts_can_be_allowed_offline() -> None:
    settings = Settings(allow_unresolvable_hosts=True)
    assert check_dataset("https://x.example/a.csv", "auto", settings, lambda h: []).kind == "https"


def test_dataset_file_must_exist_when_asked(tmp_path: Any) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ok.csv").write_text("text\nx\n")
    settings = Settings(data_root=str(tmp_path), check_dataset_exists=True)
    check_dataset("data/ok.csv", "auto", settings, lambda h: [])
    with pytest.raises(FieldError, match="not found"):
        check_dataset("data/missing.csv", "auto", settings, lambda h: [])


# -- status mapping ----------------------------------------------------------------------
def _obj(name: str, status: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "resourceVersion": meta.get("rv", "10"),
            "uid": "u-" + name,
            "creationTimestamp": meta.get("created", "2024-01-15T10:30:45Z"),
            "labels": meta.get("labels", {}),
        },
        "spec": {"model": meta.get("model", "phi"), "dataset": {"url": "data/a.csv"}},
        "status": status or {},
    }


@pytest.mark.parametrize(
    ("status", "word"),
    [
        ({}, "pending"),
        ({"phase": "Pending"}, "pending"),
        ({"phase": "Validating"}, "pending"),  # the CPU pre-flight: no such original word
        ({"phase": "Pending", "pending": {"reason": "Queued"}}, "queued"),
        ({"phase": "Running"}, "running"),
        ({"phase": "Succeeded"}, "completed"),
        ({"phase": "Failed"}, "failed"),
        ({"phase": "Cancelled"}, "cancelled"),
    ],
)
def test_phases_map_to_the_original_words(status: dict[str, Any], word: str) -> None:
    assert record_from_obj(_obj("ft-20240115-103045-abc123", status)).original_status == word


def test_status_view_has_the_original_fields_first() -> None:
    rec = record_from_obj(
        _obj(
            "ft-20240115-103045-abc123",
            {
                "phase": "Succeeded",
                "progress": {"fraction": 0.97, "step": 30, "loss": 1.1},
                "model": {
                    "name": "phi-x",
                    "path": "models/phi-x",
                    "uri": "pvc://c/models/phi-x",
                    "baseModel": "microsoft/phi-1_5",
                },
            },
        )
    )
    view = job_status(rec).model_dump()
    assert list(view)[:4] == ["job_id", "status", "progress", "model_path"]
    assert view["job_id"] == "ft_20240115_103045_abc123"
    assert (view["status"], view["progress"], view["model_path"]) == (
        "completed",
        1.0,
        "models/phi-x",
    )


def test_status_view_reports_the_world_size_once_known() -> None:
    name = "ft-20240115-103045-abc123"
    before = job_status(record_from_obj(_obj(name, {"phase": "Pending"}))).model_dump()
    assert (before["world_size"], before["effective_batch_size"]) == (None, None)
    status = {"phase": "Running", "worldSize": 4, "effectiveBatchSize": 32}
    view = job_status(record_from_obj(_obj(name, status))).model_dump()
    assert (view["world_size"], view["effective_batch_size"]) == (4, 32)
    assert list(view)[:4] == ["job_id", "status", "progress", "model_path"]


def test_models_view_marks_the_latest_per_base_model() -> None:
    def done(name: str, alias: str, created: str, size: int) -> JobRecord:
        status = {
            "phase": "Succeeded",
            "model": {
                "name": name,
                "path": f"models/{name}",
                "uri": "pvc://x",
                "sizeBytes": size,
                "baseModel": "id",
                "baseModelAlias": alias,
                "created": created,
            },
        }
        return record_from_obj(_obj("j-" + name, status, model=alias))

    records = [
        done("phi-old", "phi", "2024-01-14T10:00:00Z", 10 * 1024 * 1024),
        done("phi-new", "phi", "2024-01-15T10:30:45Z", 2540 * 1024 * 1024),
        done("mistral-a", "mistral", "2024-01-14T15:00:00Z", 100),
        record_from_obj(_obj("j-running", {"phase": "Running"})),
    ]
    view = models_view(model_rows([], records)).model_dump()
    assert view["total"] == 3
    names = [(m["name"], m["latest"]) for m in view["models"]]
    assert names == [("phi-new", True), ("mistral-a", True), ("phi-old", False)]
    first = view["models"][0]
    assert first == {
        "name": "phi-new",
        "base_model": "phi",
        "created": "2024-01-15T10:30:45",
        "size_mb": 2540,
        "latest": True,
        "path": "models/phi-new",
        "job_id": "j-phi-new",  # then the registry's extra fields
        "metrics": None,
    }
    assert size_mb(None) == 0 and size_mb(1) == 1


# -- auth ---------------------------------------------------------------------------------
def test_api_keys_are_hashed_entries() -> None:
    import base64

    digest = hash_key("secret-key")
    data = {
        digest: base64.b64encode(b"team-a").decode(),
        "not-a-hash": base64.b64encode(b"team-b").decode(),
    }
    assert parse_keys(data) == {digest: "team-a"}
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_status_shows_the_world_size_once_known() -> None:
    from kubetune_cli.render import status_lines

    base = {"job_id": "ft_20240115_103045_abc123", "status": "running", "progress": 0.5}
    assert not any(line.startswith("world:") for line in status_lines(base))
    assert "world:    2" in status_lines({**base, "world_size": 2})


# -- schedules -------------------------------------------------------------------------------
def test_a_schedules_view_shows_its_latest_runs_promotion_decision() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "nightly", "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"model": "tiny"}},
        "status": {
            "lastRunName": "ft-20261201-020000-abcdef",
            "lastResult": "Succeeded",
            "lastPromotion": {
                "alias": "frigo",
                "policy": "if-better",
                "promoted": False,
                "reason": "challenger 2.100 bits/byte is not better than champion 1.900",
                "model": "nightly-1",
                "previous": "nightly-0",
                "challengerBitsPerByte": 2.1,
                "championBitsPerByte": 1.9,
            },
        },
    }
    view = schedule_view(obj)
    assert view.last_run == "ft_20261201_020000_abcdef"
    assert view.last_promotion is not None
    assert (view.last_promotion.model, view.last_promotion.promoted) == ("nightly-1", False)
    assert view.last_promotion.champion_bits_per_byte == 1.9
    del obj["status"]["lastPromotion"]
    assert schedule_view(obj).last_promotion is None
