"""The console's forms in headless Chromium against the API on the local cluster: the start
form (the original API's parameters, the API's 422 errors shown next to their fields, a
valid request opening the new job's page) and the API key (a wrong key is refused and shows
no data; the key never appears in a URL, the page's storage after a refusal, or a log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from api.api_proc import ApiProcess

from console.conftest import CONSOLE_KEY, SHOTS, browser_errors, text_of, wait_js

pytestmark = pytest.mark.cluster

FIELDS = ["model", "dataset_url", "epochs", "batch_size", "learning_rate", "model_name"]


def _shot(name: str) -> Path:
    """Where a screenshot of a step inside a test goes (next to the fixture's final ones)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / f"{name}.png"


def _fill(page: Any, **values: str) -> None:
    for name, value in values.items():
        field = page.find_element("id", f"field-{name}")
        field.clear()
        field.send_keys(value)


def test_start_form_renders_the_original_parameters(data_api: ApiProcess, page: Any) -> None:
    page.get(data_api.url + "/ui/start")
    wait_js(page, "return document.getElementById('start-submit')")
    fields = page.execute_script(
        "return [...document.querySelectorAll('#start-form .field[data-field]')]"
        ".map(f => f.dataset.field)"
    )
    assert fields == FIELDS
    labels = page.execute_script(
        "return [...document.querySelectorAll('#start-form label')].map(l => l.textContent)"
    )
    assert labels == [
        "Model",
        "Dataset URL or path",
        "Epochs",
        "Batch size",
        "Learning rate",
        "Output model name",
    ]
    with data_api.client() as http:
        info = http.get("/api/finetune/info").json()
    options = page.execute_script(
        "return [...document.querySelectorAll('#field-model option')].map(o => o.value)"
    )
    assert options == info["supported_models"] and "tiny" in options
    # each number's range and default, read from the API's parameters
    epochs = info["parameters"]["epochs"]
    hint = page.execute_script(
        "return document.querySelector('[data-field=epochs] small').textContent"
    )
    assert f"max {epochs['maximum']:g}" in hint and f"default {epochs['default']}" in hint
    assert page.find_element("css selector", "nav a.active").text == "Start a job"
    assert browser_errors(page) == []


def test_start_form_shows_the_apis_422_next_to_the_field(data_api: ApiProcess, page: Any) -> None:
    page.get(data_api.url + "/ui/start")
    wait_js(page, "return document.getElementById('start-submit')")
    _fill(page, dataset_url="data/frigo_training.csv", epochs="99", batch_size="0")
    page.find_element("id", "start-submit").click()
    epochs_error = wait_js(page, "return document.getElementById('error-epochs').textContent")
    batch_error = text_of(page, "error-batch_size")
    with data_api.client() as http:
        answer = http.post(
            "/api/finetune/start",
            json={"model": "tiny", "dataset_url": "data/frigo_training.csv", "epochs": 99},
        )
        assert answer.status_code == 422
        [api_error] = answer.json()["detail"]
        assert http.get("/api/finetune/jobs").json()["total"] == 0  # nothing was created
    assert epochs_error == api_error["msg"]  # the API's own words, next to its field
    assert "20" in epochs_error, epochs_error
    assert "1" in batch_error and batch_error != epochs_error, batch_error
    invalid = page.execute_script(
        "return [...document.querySelectorAll('[aria-invalid=true]')].map(e => e.name)"
    )
    assert sorted(invalid) == ["batch_size", "epochs"]
    for name in ("model", "dataset_url", "learning_rate", "model_name"):
        assert text_of(page, f"error-{name}") == "", name
    assert page.find_element("id", "form-error").is_displayed() is False
    assert page.find_element("id", "error-epochs").is_displayed()
    assert page.current_url == data_api.url + "/ui/start"
    page.save_screenshot(str(_shot("start-form-422")))

    # corrected, the same form starts the job and opens its page
    _fill(page, epochs="1", batch_size="2")
    page.find_element("id", "start-submit").click()
    job_id = wait_js(
        page,
        "return location.pathname.startsWith('/ui/jobs/') && "
        "document.getElementById('job-id')?.textContent",
    )
    with data_api.client() as http:
        status = http.get(f"/api/finetune/status/{job_id}")
        assert status.status_code == 200, status.text
        jobs = http.get("/api/finetune/jobs").json()
    assert [j["job_id"] for j in jobs["jobs"]] == [job_id]
    # the only errors the browser reports are the 422 answers themselves
    assert all(" 422 " in e for e in browser_errors(page)), browser_errors(page)


def test_a_wrong_api_key_is_refused_and_shows_no_data(keyed_api: ApiProcess, page: Any) -> None:
    with keyed_api.client(CONSOLE_KEY) as http:
        started = http.post(
            "/api/finetune/start", json={"model": "tiny", "dataset_url": "data/frigo_training.csv"}
        )
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
    wrong = "wrong-key-7d41e0"

    page.get(keyed_api.url + "/ui")
    wait_js(page, "return document.getElementById('refused')?.textContent === 'API key needed'")
    assert page.find_element("id", "key-panel").is_displayed()
    assert text_of(page, "key-message") == "This API needs an API key."

    page.find_element("id", "key-input").send_keys(wrong)
    page.find_element("css selector", "#key-form button[type=submit]").click()
    wait_js(page, "return document.getElementById('refused')?.textContent === 'refused'")
    assert "did not accept this API key" in text_of(page, "key-message")
    assert page.find_element("id", "key-panel").is_displayed()
    # no data: no table, no job id anywhere on the page
    assert page.execute_script("return document.getElementById('jobs-table')") is None
    assert job_id not in page.page_source
    # the refused key is not kept, and never was in a URL
    assert page.execute_script("return sessionStorage.length") == 0
    assert text_of(page, "key-label") == ""
    assert wrong not in page.current_url
    page.save_screenshot(str(_shot("wrong-api-key-refused")))

    # the right key shows the tenant's job
    page.find_element("id", "key-input").send_keys(CONSOLE_KEY)
    page.find_element("css selector", "#key-form button[type=submit]").click()
    rows = wait_js(
        page,
        "const r = [...document.querySelectorAll('#jobs-body tr')].map(t => t.dataset.jobId);"
        "return r.length ? r : null",
    )
    assert rows == [job_id]
    assert text_of(page, "key-label") == "API key set for this tab"
    assert page.find_element("id", "key-panel").is_displayed() is False
    assert CONSOLE_KEY not in page.current_url
    # neither key in the API's log or the browser's console
    console_log = " ".join(e["message"] for e in page.get_log("browser"))
    for key in (wrong, CONSOLE_KEY):
        assert key not in keyed_api.log() and key not in console_log
