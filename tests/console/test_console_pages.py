"""The console in headless Chromium against the API on the local cluster: the job list, the
security headers (and that the pages work under them), the not-found state of a bad job id,
and a running job's loss curve gaining points while the test watches (stand-in trainer).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api.api_proc import ApiProcess
from kubetune_api.console.routes import CONTENT_SECURITY_POLICY
from support.operator_proc import OperatorProcess

from console.conftest import BADGE, POLYLINE_PAIRS, TRAIN_POINTS, browser_errors, wait_js

pytestmark = pytest.mark.cluster

ORIGINAL = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}


def test_pages_carry_a_strict_csp_and_work_under_it(data_api: ApiProcess, page: Any) -> None:
    with data_api.client() as http:
        for path in (
            "/ui",
            "/ui/models",
            "/ui/start",
            "/ui/schedules",
            "/ui/jobs/ft_20240101_000000_abcdef",
        ):
            resp = http.get(path)
            assert resp.status_code == 200, (path, resp.status_code)
            assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert "text/html" in resp.headers["content-type"]
        asset = http.get("/ui/static/chart.js")
        assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert asset.headers["content-type"].startswith("text/javascript")
    for directive in ("default-src 'self'", "script-src 'self'", "connect-src 'self'"):
        assert directive in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    # the scripts run under that policy: the page renders, and the browser reports nothing
    page.get(data_api.url + "/ui")
    wait_js(page, "return document.getElementById('jobs-note')?.textContent.includes('No jobs')")
    assert browser_errors(page) == []
    # and the browser enforces it: inline code does not run
    ran = page.execute_script(
        "window.__inline = false; const s = document.createElement('script');"
        "s.textContent = 'window.__inline = true'; document.head.append(s); return window.__inline"
    )
    assert ran is False
    assert any("Content Security Policy" in e for e in browser_errors(page))


def test_job_list_shows_the_tenants_jobs_and_filters_by_status(
    data_api: ApiProcess, page: Any
) -> None:
    with data_api.client() as http:
        jobs = [http.post("/api/finetune/start", json=ORIGINAL).json()["job_id"] for _ in range(2)]
    page.get(data_api.url + "/ui")
    rows = wait_js(
        page,
        "const r = [...document.querySelectorAll('#jobs-body tr')].map(t => t.dataset.jobId);"
        "return r.length === 2 ? r : null",
    )
    assert sorted(rows) == sorted(jobs)
    link = page.execute_script(
        "return document.querySelector('#jobs-body tr a').getAttribute('href')"
    )
    assert link == f"/ui/jobs/{rows[0]}"
    badges = page.execute_script(
        "return [...document.querySelectorAll('#jobs-body .badge')].map(b => b.dataset.status)"
    )
    assert badges == ["pending", "pending"]  # no operator here: nothing runs them
    assert "2 jobs" in page.find_element("id", "jobs-note").text

    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "status-filter")).select_by_value("running")
    wait_js(
        page, "return document.getElementById('jobs-note').textContent.includes('No jobs running')"
    )
    assert page.execute_script("return document.querySelectorAll('#jobs-body tr').length") == 0
    assert page.current_url.endswith("/ui?status=running")
    assert browser_errors(page) == []


@pytest.mark.parametrize(
    "job_id, code",
    [("ft_20240101_000000_abcdef", 200), ("NOT_A_JOB", 404), ("ft-20240101-000000-abcdef", 404)],
    ids=["unknown", "malformed", "name-form"],
)
def test_a_bad_job_id_shows_not_found(
    data_api: ApiProcess, page: Any, job_id: str, code: int
) -> None:
    """The page (404 when the id can name no job) says the job is not found, in words."""
    assert httpx.get(f"{data_api.url}/ui/jobs/{job_id}").status_code == code
    page.get(f"{data_api.url}/ui/jobs/{job_id}")
    text = wait_js(page, "return document.getElementById('not-found')?.textContent")
    assert text == f"Job {job_id} not found."
    assert page.execute_script("return document.querySelector('svg.loss-chart')") is None


def test_a_running_jobs_curve_gains_points(
    data_api: ApiProcess, fake_operator: OperatorProcess, page: Any
) -> None:
    steps = 30
    body = {"model": "tiny", "dataset_url": f"data/fake_steps-{steps}_interval-0.5.csv"}
    with data_api.client() as http:
        job = http.post("/api/finetune/start", json=body).json()["job_id"]
    page.get(f"{data_api.url}/ui/jobs/{job}")
    assert wait_js(page, "return document.getElementById('job-id')?.textContent") == job
    # part of the curve while the job runs ...
    first = wait_js(page, f"const n = {TRAIN_POINTS}; return n > 0 && n < {steps - 5} ? n : 0", 120)
    wait_js(page, f"return {BADGE} === 'running'")
    # the trainer's own log, followed as it is written (the stand-in prints JSON lines)
    log = wait_js(
        page,
        "const t = document.getElementById('log').textContent; "
        "return t.includes('\"event\": \"progress\"') ? t : ''",
    )
    assert log.splitlines()[0].startswith('{"event": "start"'), log[:300]
    # ... then more points, drawn by the same page without a reload, up to the whole run
    wait_js(page, f"return {TRAIN_POINTS} > {first}", timeout=60)
    wait_js(page, f"return {TRAIN_POINTS} === {steps}", timeout=120)
    assert len(wait_js(page, POLYLINE_PAIRS)) == steps
    wait_js(page, f"return {BADGE} === 'completed'", timeout=60)
    # the status's eval losses before and after (2.0 and 1.0 from the stand-in) as the eval line
    wait_js(page, "return document.querySelector('svg.loss-chart').dataset.evalPoints === '2'")
    note = page.find_element("id", "chart-note").text
    assert note == f"{steps} train points, 2 eval points of {steps} steps"
    assert page.find_element("id", "chart-empty").is_displayed() is False
    assert browser_errors(page) == [], fake_operator.log()[-2000:]


def test_cancel_from_the_job_page(
    data_api: ApiProcess, fake_operator: OperatorProcess, page: Any
) -> None:
    steps = 400  # 200 s: it runs until cancelled
    body = {"model": "tiny", "dataset_url": f"data/fake_steps-{steps}_interval-0.5.csv"}
    with data_api.client() as http:
        job = http.post("/api/finetune/start", json=body).json()["job_id"]
    page.get(f"{data_api.url}/ui/jobs/{job}")
    wait_js(page, f"return {BADGE} === 'running'", 120)
    wait_js(page, f"return {TRAIN_POINTS} > 0", 60)
    cancel = page.find_element("id", "cancel")
    assert cancel.is_displayed()
    cancel.click()
    # a second step asks before stopping the job; "No" leaves it running
    assert page.find_element("id", "cancel-confirm").is_displayed()
    page.find_element("id", "cancel-no").click()
    assert (
        cancel.is_displayed() and page.find_element("id", "cancel-confirm").is_displayed() is False
    )
    cancel.click()
    page.find_element("id", "cancel-yes").click()
    with data_api.client() as http:
        wait_js(page, "return document.getElementById('cancel-note').textContent.length > 0", 30)
        wait_js(page, f"return {BADGE} === 'cancelled'", 120)
        status = http.get(f"/api/finetune/status/{job}").json()
    assert status["status"] == "cancelled" and status["failure_reason"] == "Cancelled", status
    reason = page.find_element("id", "reason")
    assert reason.is_displayed() and reason.text.startswith("The job was cancelled."), reason.text
    assert cancel.is_displayed() is False  # an ended job offers no cancel
    drawn = page.execute_script(f"return {TRAIN_POINTS}")
    assert 0 < drawn < steps  # stopped part way
    assert browser_errors(page) == [], fake_operator.log()[-2000:]
