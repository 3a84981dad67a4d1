"""The issue's "Done when" on the real local cluster: node, Jobs, logs, scheduling, deletion."""

from __future__ import annotations

import os
import time

import pytest
from kubetune_local.cluster import LocalCluster
from kubetune_local.testing import wait_for
from local_cluster_helpers import (
    apply,
    get,
    job,
    job_condition,
    pod_phase,
    pods_of,
    python_pod,
)

pytestmark = pytest.mark.cluster


def test_node_is_ready_with_gpus(cluster: LocalCluster) -> None:
    node = get(cluster, "default", "node", cluster.node_name)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    out = cluster.kubectl("get", "nodes").stdout
    assert cluster.node_name in out and " Ready " in out


def test_job_completes_and_logs_show_output(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, job("hello", ["python3", "-c", "print('ok')"]))
    assert (
        wait_for(lambda: job_condition(cluster, namespace, "hello"), 60, "job hello") == "Complete"
    )
    assert cluster.kubectl("logs", "-n", namespace, "job/hello").stdout == "ok\n"
    stamped = cluster.kubectl("logs", "-n", namespace, "job/hello", "--timestamps").stdout
    assert stamped.endswith(" ok\n") and stamped[:4].isdigit()


def test_job_failure_keeps_exit_code(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, job("three", ["python3", "-c", "import sys; sys.exit(3)"]))
    assert wait_for(lambda: job_condition(cluster, namespace, "three"), 60, "job three") == "Failed"
    (pod,) = pods_of(cluster, namespace, "three")
    assert pod["status"]["phase"] == "Failed"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    assert term["startedAt"] and term["finishedAt"]


def test_too_many_gpus_stays_pending(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, job("greedy", ["python3", "-c", "print(1)"], gpus=3))

    def failed_scheduling() -> str | None:
        events = get(cluster, namespace, "events")["items"]
        msgs = [e["message"] for e in events if e["reason"] == "FailedScheduling"]
        return next((m for m in msgs if "nvidia.com/gpu" in m), None)

    message = wait_for(failed_scheduling, 60, "FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in message
    (pod,) = pods_of(cluster, namespace, "greedy")
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")


def test_deleting_a_running_pod_ends_its_process(cluster: LocalCluster, namespace: str) -> None:
    script = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"
    pod = python_pod("sleeper", script)
    apply(cluster, namespace, pod)
    logs = wait_for(
        lambda: cluster.kubectl("logs", "-n", namespace, "sleeper", check=False).stdout.strip(),
        60,
        "pid",
    )
    pid = int(logs)
    os.kill(pid, 0)  # the container's process runs on this machine
    assert pod_phase(cluster, namespace, "sleeper") == "Running"
    start = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", namespace, "sleeper", "--wait=false")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 5, f"process {pid} to end")
    assert time.monotonic() - start < 5
    wait_for(
        lambda: (
            cluster.kubectl("get", "pod", "-n", namespace, "sleeper", check=False).returncode != 0
        ),
        10,
        "pod removal",
    )


def test_logs_follow_ends_with_the_container(cluster: LocalCluster, namespace: str) -> None:
    script = "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.5)"
    apply(cluster, namespace, job("counter", ["python3", "-c", script]))
    wait_for(
        lambda: (
            pods_of(cluster, namespace, "counter")
            and pod_phase(
                cluster, namespace, pods_of(cluster, namespace, "counter")[0]["metadata"]["name"]
            )
            in ("Running", "Succeeded")
        ),
        60,
        "start",
    )
    out = cluster.kubectl("logs", "-f", "-n", namespace, "job/counter", timeout=30).stdout
    assert out == "0\n1\n2\n"
    tail = cluster.kubectl("logs", "-n", namespace, "job/counter", "--tail=1").stdout
    assert tail == "2\n"
