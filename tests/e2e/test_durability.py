"""The embedded stack keeps what it made and heals itself (issue 13), end to end.

A whole-stack restart (cluster down/up on the same state, operator and API restarted) keeps
the job, its model listing and the model's files; each control-plane process SIGKILLed in
turn during a run costs neither the run nor a second Job or model; a 30 s apiserver outage
is answered with 503 + Retry-After while the job trains on and completes.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from kubetune_local.cluster import LocalCluster
from kubetune_local.testing import ComponentOutage, kill_component, restart_cluster, wait_writable

from e2e.stack import FINISHED, E2EStack, short_job, wait_training

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

CONTROL_PLANE = ("etcd", "apiserver", "controller-manager", "scheduler", "node-agent")


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.timeout(600)
def test_whole_stack_restart_keeps_jobs_models_and_files(
    stack: E2EStack, cluster: LocalCluster
) -> None:
    operator, api = stack.start_operator(), stack.start_api()
    job_id = stack.start_job(short_job(max_steps=6))
    done = stack.wait_api_status(job_id, FINISHED, 300)
    assert done["status"] == "completed", stack.diagnostics(job_id.replace("_", "-"))
    models_before = stack.models()
    (model_dir,) = [stack.models_dir / "models" / d for d in stack.model_dirs()]
    files_before = file_hashes(model_dir)
    api_url, server = api.url, cluster.server

    api.stop()
    operator.stop()
    restarted = restart_cluster(Path(cluster.state_dir))
    assert restarted.server == server, "the apiserver's address changed across the restart"
    operator.start()
    api.start(timeout=120)
    stack.reset_http()

    assert api.url == api_url
    status = stack.api_status(job_id)
    assert status["status"] == "completed" and status["model_path"] == done["model_path"], status
    assert stack.models() == models_before
    assert file_hashes(model_dir) == files_before, "the model's files changed or went"


@pytest.mark.timeout(900)
def test_each_control_plane_process_killed_during_a_run(
    stack: E2EStack, cluster: LocalCluster
) -> None:
    stack.start_operator()
    api = stack.start_api()
    api_url, server = api.url, cluster.server
    job_id = stack.start_job(short_job(max_steps=60, checkpoint={"every_steps": 5, "keep": 2}))
    name = job_id.replace("_", "-")
    wait_training(stack, job_id)
    recovered: dict[str, float] = {}
    for component in CONTROL_PLANE:
        kill_component(cluster, component)
        recovered[component] = wait_writable(cluster, timeout=60)
    print(f"writes accepted again after (s): {recovered}")

    done = stack.wait_api_status(job_id, FINISHED, 480, name=name)
    assert done["status"] == "completed", stack.diagnostics(name)
    assert len(stack.jobs(name)) == 1, "exactly one Job"
    assert len(stack.model_dirs()) == 1 and stack.models()["total"] == 1, "exactly one model"
    assert (api.url, cluster.server) == (api_url, server), "an address changed"


@pytest.mark.timeout(600)
def test_apiserver_outage_mid_run_answers_503_and_the_job_completes(
    stack: E2EStack, cluster: LocalCluster
) -> None:
    stack.start_operator()
    stack.start_api()
    job_id = stack.start_job(short_job(max_steps=60))
    name = job_id.replace("_", "-")
    wait_training(stack, job_id)

    outage = ComponentOutage(cluster, "apiserver")
    outage.stop()
    try:
        write = stack.http.post("/api/finetune/start", json=short_job())
        assert write.status_code == 503, write.text
        assert int(write.headers["Retry-After"]) > 0
        assert write.json()["reason"] == "ApiServerUnavailable", write.text
        not_ready = stack.wait(
            lambda: (r := stack.http.get("/readyz")).status_code == 503 and r,
            30,
            "/readyz to report not ready",
            name=name,
        )
        assert "reason" in not_ready.json(), not_ready.text
        time.sleep(max(0.0, 30 - outage.down_for()))
    finally:
        outage.start()
    stack.wait(lambda: stack.http.get("/readyz").status_code == 200, 90, "/readyz to recover")
    done = stack.wait_api_status(job_id, FINISHED, 300, name=name)
    assert done["status"] == "completed", stack.diagnostics(name)
    assert len(stack.jobs(name)) == 1 and stack.models()["total"] == 1
