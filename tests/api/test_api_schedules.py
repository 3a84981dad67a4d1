"""`/api/finetune/schedules` and `kubetune schedule` against the real cluster (no operator: the
API stores FineTuneSchedules and creates "run now" FineTuneJobs itself)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from kubernetes import client
from kubetune_cli.main import EXIT_REJECTED, main
from kubetune_local.testing import wait_for

from api.api_proc import ApiProcess
from api.conftest import list_jobs

pytestmark = pytest.mark.cluster

GROUP, VERSION, SCHEDULES = "kubetune.io", "v1alpha1", "finetuneschedules"
BASE = "/api/finetune/schedules"
MONTHLY: dict[str, Any] = {
    "name": "frigo-monthly",
    "schedule": "0 2 1 * *",
    "time_zone": "Pacific/Kiritimati",  # UTC+14: its date is often not UTC's
    "model": "tiny",
    "dataset_url": "data/frigo_{{ .Year }}{{ .Month }}{{ .Day }}.csv",
    "model_name": "frigo-{{ .Year }}-{{ .Month }}",
    "epochs": 1,
}


@pytest.fixture(scope="module", autouse=True)
def schedule_crd(crd: None) -> None:
    """Both CRDs (`install_crd` applies every generated one)."""


def stored(custom: client.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, SCHEDULES
    )["items"]
    return items


def test_create_get_list_suspend_and_delete(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    with api.client() as http:
        created = http.post(BASE, json=MONTHLY)
        assert created.status_code == 201, created.text
        view = created.json()
        assert (view["name"], view["schedule"], view["time_zone"]) == (
            "frigo-monthly",
            "0 2 1 * *",
            "Pacific/Kiritimati",
        )
        assert (view["suspend"], view["concurrency_policy"]) == (False, "Forbid")
        assert view["dataset_url"] == MONTHLY["dataset_url"]
        assert view["job_template"]["hyperparameters"]["epochs"] == 1

        [obj] = stored(custom, namespace)
        template = obj["spec"]["jobTemplate"]
        assert template["dataset"]["url"] == MONTHLY["dataset_url"]  # placeholders kept
        assert template["output"]["modelName"] == "frigo-{{ .Year }}-{{ .Month }}"
        assert template["output"]["pvc"]["claimName"] == "kubetune-models"
        assert obj["metadata"]["labels"]["kubetune.io/created-by"] == "kubetune-api"

        assert http.get(f"{BASE}/frigo-monthly").json() == view
        listed = http.get(BASE).json()
        assert listed["total"] == 1 and listed["schedules"][0]["name"] == "frigo-monthly"
        assert http.post(BASE, json=MONTHLY).status_code == 409  # no key: the name is taken

        paused = http.patch(f"{BASE}/frigo-monthly", json={"suspend": True})
        assert paused.status_code == 200 and paused.json()["suspend"] is True
        assert stored(custom, namespace)[0]["spec"]["suspend"] is True
        resumed = http.patch(f"{BASE}/frigo-monthly", json={"suspend": False}).json()
        assert resumed["suspend"] is False
        assert http.patch(f"{BASE}/frigo-monthly", json={"suspend": "yes"}).status_code == 422

        for method, path in [
            ("GET", f"{BASE}/nope"),
            ("PATCH", f"{BASE}/nope"),
            ("DELETE", f"{BASE}/nope"),
            ("POST", f"{BASE}/nope/run"),
            ("GET", f"{BASE}/nope/jobs"),
        ]:
            body = {"suspend": True} if method == "PATCH" else None
            assert http.request(method, path, json=body).status_code == 404, path

        deleted = http.delete(f"{BASE}/frigo-monthly")
        assert deleted.status_code == 200 and deleted.json()["jobs_kept"] is False
        assert stored(custom, namespace) == []


def test_idempotency_key(api: ApiProcess, custom: client.CustomObjectsApi, namespace: str) -> None:
    with api.client() as http:
        key = {"Idempotency-Key": "sched-1"}
        first = http.post(BASE, json=MONTHLY, headers=key)
        again = http.post(BASE, json=MONTHLY, headers=key)
        assert first.status_code == again.status_code == 201
        assert again.json()["name"] == first.json()["name"]
        other = http.post(BASE, json={**MONTHLY, "epochs": 2}, headers=key)
        assert other.status_code == 422
        assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert http.post(BASE, json=MONTHLY, headers={"Idempotency-Key": "x y"}).status_code == 422
        assert len(stored(custom, namespace)) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"schedule": "* * * *"}, "schedule"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"dataset_url": "data/frigo_{{ .Yaer }}.csv"}, "dataset_url"),
        ({"dataset_url": "ftp://data/frigo_{{ .Year }}.csv"}, "dataset_url"),
        ({"dataset_url": "../etc/{{ .Year }}.csv"}, "dataset_url"),
        ({"model_name": "frigo-{{ .Foo }}"}, "model_name"),
        ({"model_name": "-{{ .Year }}"}, "model_name"),
        ({"epochs": 99}, "epochs"),
        ({"model": "gpt-9"}, "model"),
        ({"concurrency_policy": "Sometimes"}, "concurrency_policy"),
        ({"starting_deadline_seconds": -5}, "starting_deadline_seconds"),
        ({"name": "x" * 34}, "name"),
        ({"name": "Not_DNS"}, "name"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_schedules_are_422_naming_the_field_and_create_nothing(
    shared_api: ApiProcess,
    custom: client.CustomObjectsApi,
    shared_namespace: str,
    change: dict[str, Any],
    field: str,
) -> None:
    with shared_api.client() as http:
        answer = http.post(BASE, json={**MONTHLY, **change})
    assert answer.status_code == 422, answer.text
    locs = [e["loc"] for e in answer.json()["detail"]]
    assert any(loc[-1] == field for loc in locs), locs
    assert stored(custom, shared_namespace) == []
    assert list_jobs(custom, shared_namespace) == []


def test_run_now_renders_the_request_date_and_is_listed_under_the_schedule(
    api: ApiProcess, custom: client.CustomObjectsApi, namespace: str
) -> None:
    with api.client() as http:
        assert http.post(BASE, json=MONTHLY).status_code == 201
        before = datetime.now(timezone.utc).replace(microsecond=0)
        answer = http.post(f"{BASE}/frigo-monthly/run")
        after = datetime.now(timezone.utc)
        assert answer.status_code == 202, answer.text
        run = answer.json()
        when = datetime.fromisoformat(run["scheduled_time"].replace("Z", "+00:00"))
        assert before <= when <= after
        local = when.astimezone(ZoneInfo("Pacific/Kiritimati"))  # the schedule's time zone
        assert run["dataset_url"] == f"data/frigo_{local:%Y%m%d}.csv"
        assert run["model_name"] == f"frigo-{local:%Y}-{local:%m}"
        assert run["job_id"] == f"frigo-monthly-now-{when:%Y%m%d%H%M%S}"

        [job] = list_jobs(custom, namespace)
        assert job["metadata"]["name"] == run["job_id"]
        assert job["metadata"]["labels"]["kubetune.io/schedule"] == "frigo-monthly"
        owner = job["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("FineTuneSchedule", "frigo-monthly")
        assert job["spec"]["dataset"]["url"] == run["dataset_url"]
        assert job["spec"]["hyperparameters"]["epochs"] == 1

        runs = wait_for(lambda: http.get(f"{BASE}/frigo-monthly/jobs").json()["jobs"], 10)
        assert [r["job_id"] for r in runs] == [run["job_id"]]
        assert http.get(f"/api/finetune/status/{run['job_id']}").json()["status"] == "pending"

        # With an Idempotency-Key a retried run-now starts no second run. (Runs asked for
        # within one second are one run, keyed or not: the next second starts another.)
        time.sleep(max(0.0, 1.05 - (datetime.now(timezone.utc) - when).total_seconds()))
        key = {"Idempotency-Key": "run-1"}
        first = http.post(f"{BASE}/frigo-monthly/run", headers=key).json()
        second = http.post(f"{BASE}/frigo-monthly/run", headers=key).json()
        assert first["job_id"] == second["job_id"] != run["job_id"]
        assert len(list_jobs(custom, namespace)) == 2

        # Deleting the schedule takes its runs (the garbage collector); models are files.
        http.delete(f"{BASE}/frigo-monthly")
        wait_for(lambda: list_jobs(custom, namespace) == [], 60, "the runs to be collected")


def test_tenants_see_only_their_schedules(
    tenant_api: ApiProcess,
    namespace: str,
    other_namespace: str,
    custom: client.CustomObjectsApi,
) -> None:
    api = tenant_api
    with api.client() as anon, api.client("key-a") as a, api.client("key-b") as b:
        assert anon.get(BASE).status_code == 401
        assert anon.post(BASE, json=MONTHLY).status_code == 401
        assert a.post(BASE, json=MONTHLY).status_code == 201
        assert b.get(f"{BASE}/frigo-monthly").status_code == 404
        assert b.post(f"{BASE}/frigo-monthly/run").status_code == 404
        assert b.patch(f"{BASE}/frigo-monthly", json={"suspend": True}).status_code == 404
        assert b.delete(f"{BASE}/frigo-monthly").status_code == 404
        assert b.get(BASE).json()["total"] == 0
        assert b.post(BASE, json=MONTHLY).status_code == 201  # the same name in its namespace
    assert [o["metadata"]["name"] for o in stored(custom, namespace)] == ["frigo-monthly"]
    assert [o["metadata"]["name"] for o in stored(custom, other_namespace)] == ["frigo-monthly"]
    assert stored(custom, namespace)[0]["spec"]["suspend"] is False


def test_cli_schedule_commands(
    api: ApiProcess,
    custom: client.CustomObjectsApi,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def cli(*args: str) -> int:
        return main(["--api-url", api.url, *args])

    assert (
        cli(
            "schedule",
            "create",
            "nightly",
            "--schedule",
            "0 3 * * *",
            "--model",
            "tiny",
            "--dataset",
            "data/frigo_{{ .Year }}{{ .Month }}{{ .Day }}.csv",
            "--concurrency-policy",
            "Replace",
            "--epochs",
            "1",
        )
        == 0
    )
    [obj] = stored(custom, namespace)
    assert obj["spec"]["concurrencyPolicy"] == "Replace"
    assert cli("schedule", "list") == 0
    assert "nightly" in capsys.readouterr().out
    assert cli("schedule", "suspend", "nightly") == 0
    assert stored(custom, namespace)[0]["spec"]["suspend"] is True
    assert cli("schedule", "resume", "nightly") == 0
    assert cli("--json", "schedule", "get", "nightly") == 0
    assert '"suspend": false' in capsys.readouterr().out
    before = datetime.now(timezone.utc)
    assert cli("schedule", "run", "nightly") == 0
    days = {f"{when:%Y%m%d}" for when in (before, datetime.now(timezone.utc))}
    out = capsys.readouterr().out
    assert any(f"data/frigo_{day}.csv" in out for day in days), out
    assert cli("schedule", "jobs", "nightly") == 0
    assert "nightly-now-" in capsys.readouterr().out
    bad = (
        "schedule",
        "create",
        "x",
        "--schedule",
        "* * *",
        "--model",
        "tiny",
        "--dataset",
        "a.csv",
    )
    assert cli(*bad) == EXIT_REJECTED
    assert "schedule" in capsys.readouterr().err
    assert cli("schedule", "delete", "nightly", "--keep-jobs") == 0
    # the garbage collector orphans the runs, then the schedule goes
    wait_for(lambda: stored(custom, namespace) == [], 60, "the schedule to go")
    assert len(list_jobs(custom, namespace)) == 1  # the run was kept
