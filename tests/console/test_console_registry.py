"""The models page and the schedules page in headless Chromium against the API on the local
cluster: each model's figures before and after from its registry record (also once its job
is gone), the aliases naming it and each alias's last decision; the schedules with cron,
state, last and next run.

Registry records, alias statuses and schedule statuses are written here as the operator
writes them (no operator runs in these tests; the API reads them from the cluster).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from api.api_proc import ApiProcess
from kubernetes import client
from kubetune_crd.resource import GROUP, VERSION
from support.registry_records import finetuned_model_record

from console.conftest import browser_errors, text_of, wait_js

pytestmark = pytest.mark.cluster

NONE = "\u2013"  # the console's "not known" sign (an en dash)


def _cells(page: Any, selector: str) -> list[tuple[str, list[str]]]:
    """Each row's data key (its one data attribute) and cell texts, in the page's order."""
    rows = page.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(r =>"
        " [Object.values(r.dataset)[0], [...r.cells].map(c => c.textContent)])",
        selector,
    )
    return [(key, cells) for key, cells in rows]


def test_models_page_shows_figures_from_records_and_aliases(
    data_api: ApiProcess, custom: client.CustomObjectsApi, namespace: str, page: Any
) -> None:
    with data_api.client() as http:
        started = http.post(
            "/api/finetune/start", json={"model": "tiny", "dataset_url": "data/frigo_training.csv"}
        )
        live_job = started.json()["job_id"]
    gone_job = "ft-20261204-100000-abcdef"  # its FineTuneJob was deleted: only the record is left
    records = [
        finetuned_model_record(
            "frigo-a",
            job=gone_job,
            metrics={"evalLossBefore": 2.5, "evalLossAfter": 1.25, "bitsPerByteBefore": 1.5,
                     "bitsPerByteAfter": 0.75},
            created="2026-12-04T10:00:00Z",
        ),
        finetuned_model_record(
            "frigo-b",
            job=live_job.replace("_", "-"),
            metrics={"evalLossBefore": 2.5, "evalLossAfter": 2.0, "bitsPerByteAfter": 1.0},
            created="2026-12-05T10:00:00Z",
        ),
    ]  # fmt: skip
    for record in records:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "finetunedmodels", record)
    alias = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelAlias",
        "metadata": {"name": "frigo"},
        "spec": {},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelaliases", alias)
    status = {
        "current": {"model": "frigo-a", "path": "models/frigo-a", "version": 1},
        "history": [
            {"alias": "frigo", "policy": "always", "promoted": True, "model": "frigo-a",
             "version": 1},
            {"alias": "frigo", "policy": "if-better", "promoted": False, "model": "frigo-b",
             "reason": "not better"},
        ],
    }  # fmt: skip
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "modelaliases", "frigo", {"status": status}
    )

    page.get(data_api.url + "/ui/models")
    wait_js(page, "return document.querySelectorAll('#models-body tr').length === 2")
    in_order = _cells(page, "#models-body tr")
    assert [key for key, _ in in_order] == ["frigo-b", "frigo-a"]  # newest first
    models = dict(in_order)
    name, base, size, _age, eval_loss, bpb, aliases, job = models["frigo-a"]
    assert (name, base, size) == ("frigo-a", "tiny", "3 MB")  # frigo-b is the latest of tiny
    assert (eval_loss, bpb, aliases) == ("2.5 → 1.25", "1.5 → 0.75", "frigo")
    assert job == "ft_20261204_100000_abcdef (deleted)"
    b = models["frigo-b"]
    assert (b[0], b[4], b[5], b[6], b[7]) == (
        "frigo-blatest",
        "2.5 → 2",
        f"{NONE} → 1",
        NONE,
        live_job,
    )
    link = page.execute_script(
        "return document.querySelector('[data-model=frigo-b] td.job a').getAttribute('href')"
    )
    assert link == f"/ui/jobs/{live_job}"
    wait_js(page, "return document.querySelectorAll('#aliases-body tr').length === 1")
    [(alias_name, cells)] = _cells(page, "#aliases-body tr")
    assert alias_name == "frigo"
    assert cells == [
        "frigo",
        "frigo-a",
        "models/frigo-a",
        "1",
        "not promoted frigo-b (if-better): not better",
        NONE,
    ]
    assert text_of(page, "models-note") == "2 models"
    assert page.find_element("css selector", "nav a.active").text == "Models"
    assert browser_errors(page) == []


def test_schedules_page_lists_cron_state_last_and_next_run(
    data_api: ApiProcess, custom: client.CustomObjectsApi, namespace: str, page: Any
) -> None:
    base = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}
    with data_api.client() as http:
        for name, cron in (("nightly", "0 2 * * *"), ("weekly", "0 3 * * 1")):
            made = http.post(
                "/api/finetune/schedules", json={**base, "name": name, "schedule": cron}
            )
            assert made.status_code == 201, made.text
        assert http.patch("/api/finetune/schedules/weekly", json={"suspend": True}).is_success
    soon = datetime.now(timezone.utc) + timedelta(hours=3, minutes=5, seconds=40)
    status = {
        "lastRunName": "ft-20261206-020000-a1b2c3",
        "lastRunTime": "2026-12-06T02:00:00Z",
        "lastResult": "Succeeded",
        "nextScheduleTime": soon.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "finetuneschedules", "nightly", {"status": status}
    )

    page.get(data_api.url + "/ui/schedules")
    wait_js(page, "return document.getElementById('schedules-note')?.textContent === '2 schedules'")
    rows = dict(_cells(page, "#schedules-body tr"))
    assert rows["nightly"] == [
        "nightly",
        "0 2 * * * UTC",
        "active",
        "tiny",
        "ft_20261206_020000_a1b2c3 (Succeeded)",
        "in 3 h 5 min",
    ]
    assert rows["weekly"][:4] == ["weekly", "0 3 * * 1 UTC", "suspended", "tiny"]
    assert rows["weekly"][4:] == [NONE, NONE]
    link = page.execute_script(
        "return document.querySelector('[data-schedule=nightly] .last-run a').getAttribute('href')"
    )
    assert link == "/ui/jobs/ft_20261206_020000_a1b2c3"
    assert page.find_element("css selector", "nav a.active").text == "Schedules"
    assert browser_errors(page) == []
