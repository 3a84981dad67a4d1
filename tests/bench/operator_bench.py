"""Benchmark: 500 FineTuneJobs created at once; how fast does the operator create their Jobs?

On the local cluster (its own, in `.local/bench-cluster`, or `--kubeconfig` for a running
one): installs the CRD, starts `kubetune-operator` for one fresh namespace, watches Jobs
there, then creates N FineTuneJobs from a thread pool as fast as the API server takes them.
The trainer pods are kept off the node (a nodeSelector nothing matches), so the node agent does
not start 500 processes; the scheduler, Job controller and the operator's status derivation
(Unschedulable) still run for every one of them.

Reported: latency from each FineTuneJob's create call returning to its Job's ADDED watch event
(p50/p99), the time from the first create to the last Job, the time until every FineTuneJob
shows the Unschedulable pending reason, and the operator's peak RSS (VmHWM).
Goal: p50 <= 100 ms, all Jobs in <= 60 s, RSS <= 200 MB.

Where the latency goes (`stages`): `ftj_watch_ms`, the bench's own FineTuneJob watch (create
returned -> ADDED event: the API server's watch delivery under the burst, which the operator's
watch shares); the operator's own split from its liveness probe (`jobCreateMs`: its handler ->
a worker picks the key up (`queue`), parse + build (`build`), the Job create call (`post`));
and `job_watch_ms`, the Job create call returning -> the bench sees the Job's ADDED event.
The 1-minute load average before the run is printed too: compare runs only at similar load.

    .venv/bin/python tests/bench/operator_bench.py [--count 500] [--workers 16] [--kubeconfig K]
        [--save result.json] [--baseline earlier-result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hack"))

from kubernetes import client, config, watch  # noqa: E402
from kubetune_local.workspace import create_claims, install_crd  # noqa: E402
from support.operator_proc import OperatorProcess  # noqa: E402

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "finetunejobs"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ftj(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "model": "tiny",
            "dataset": {"url": "data/fake_steps-1.csv"},
            "resources": {"gpus": 1},
            "scheduling": {"nodeSelector": {"kubetune.io/bench": "no-such-node"}},
        },
    }


def run(kubeconfig: str, args: argparse.Namespace) -> dict[str, Any]:
    install_crd(kubeconfig)
    api = config.new_client_from_config(kubeconfig)
    api.configuration.connection_pool_maxsize = args.workers + 4
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    create_claims(kubeconfig, ns)
    names = [f"bench-{i:04d}" for i in range(args.count)]
    created_at: dict[str, float] = {}
    job_seen: dict[str, float] = {}
    ftj_seen: dict[str, float] = {}
    all_jobs = threading.Event()
    watching = threading.Event()
    watching_ftjs = threading.Event()

    def watch_ftjs() -> None:
        custom_w = client.CustomObjectsApi(config.new_client_from_config(kubeconfig))
        w = watch.Watch()
        watching_ftjs.set()
        for event in w.stream(
            custom_w.list_namespaced_custom_object,
            GROUP,
            VERSION,
            ns,
            PLURAL,
            timeout_seconds=600,
        ):
            if event["type"] == "ADDED":
                ftj_seen.setdefault(event["object"]["metadata"]["name"], time.monotonic())
                if len(ftj_seen) >= args.count:
                    w.stop()

    def watch_jobs() -> None:
        batch = client.BatchV1Api(config.new_client_from_config(kubeconfig))
        w = watch.Watch()
        watching.set()
        for event in w.stream(batch.list_namespaced_job, ns, timeout_seconds=600):
            if event["type"] == "ADDED":
                job_seen.setdefault(event["object"].metadata.name, time.monotonic())
                if len(job_seen) >= args.count:
                    all_jobs.set()
                    w.stop()

    log = Path(tempfile.mkdtemp(prefix="kubetune-bench-")) / "operator.log"
    op = OperatorProcess(
        kubeconfig,
        settings={
            "NAMESPACES": [ns],
            "LOG_LEVEL": "WARNING",
            "WORKERS": str(args.operator_workers),
            "RESYNC_SECONDS": "60",
        },
        log_path=log,
    )
    with op:
        threading.Thread(target=watch_jobs, daemon=True).start()
        threading.Thread(target=watch_ftjs, daemon=True).start()
        watching.wait(10)
        watching_ftjs.wait(10)
        time.sleep(1.0)
        load_before = os.getloadavg()[0]
        rss_before = peak_rss_mb(op.pid)
        cpu_before = cpu_seconds(op.pid)

        def create(name: str) -> None:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, ftj(name))
            created_at[name] = time.monotonic()

        start = time.monotonic()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(create, names))
        creates_done = time.monotonic()
        if not all_jobs.wait(args.timeout):
            print(f"only {len(job_seen)}/{args.count} Jobs after {args.timeout}s", file=sys.stderr)
        last_job = max(job_seen.values()) if job_seen else float("nan")
        cpu_jobs = cpu_seconds(op.pid) - cpu_before

        def unschedulable() -> int:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            return sum(
                1
                for o in items
                if ((o.get("status") or {}).get("pending") or {}).get("reason") == "Unschedulable"
            )

        derived_at = float("nan")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if unschedulable() >= args.count:
                derived_at = time.monotonic()
                break
            time.sleep(1.0)
        rss = peak_rss_mb(op.pid)
        cpu_all = cpu_seconds(op.pid) - cpu_before
        health = op.health()
    core.delete_namespace(ns)
    latencies = [
        (job_seen[n] - created_at[n]) * 1000 for n in names if n in job_seen and n in created_at
    ]
    ftj_watch = [
        (ftj_seen[n] - created_at[n]) * 1000 for n in names if n in ftj_seen and n in created_at
    ]
    timings = ((health or {}).get("controller") or {}).get("jobCreateMs") or {}
    return {
        "count": args.count,
        "jobs": len(job_seen),
        "create_phase_s": round(creates_done - start, 2),
        "latency_p50_ms": round(percentile(latencies, 0.5), 1),
        "latency_p99_ms": round(percentile(latencies, 0.99), 1),
        "latency_max_ms": round(max(latencies), 1),
        "all_jobs_s": round(last_job - start, 2),
        "all_status_unschedulable_s": round(derived_at - start, 2),
        "operator_peak_rss_mb": round(rss, 1),
        "operator_rss_idle_mb": round(rss_before, 1),
        "operator_cpu_s_until_all_jobs": round(cpu_jobs, 1),
        "operator_cpu_s_total": round(cpu_all, 1),
        "load_average_1m_before": round(load_before, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "stages": {
            "ftj_watch_ms": _summary(ftj_watch),
            "operator_queue_ms": timings.get("queue"),
            "operator_build_ms": timings.get("build"),
            "operator_job_create_call_ms": timings.get("post"),
            "operator_event_to_job_ms": timings.get("total"),
        },
        "operator_health": health,
    }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 0.5), 1),
        "p99": round(percentile(values, 0.99), 1),
        "max": round(max(values), 1),
    }


COMPARED = (
    "latency_p50_ms",
    "latency_p99_ms",
    "all_jobs_s",
    "all_status_unschedulable_s",
    "operator_peak_rss_mb",
    "operator_cpu_s_until_all_jobs",
    "load_average_1m_before",
)


def compare(result: dict[str, Any], baseline: dict[str, Any]) -> str:
    """A small table: baseline, this run and the ratio for the headline figures."""
    lines = [f"{'':32} {'baseline':>10} {'now':>10} {'now/base':>9}"]
    for key in COMPARED:
        old, new = baseline.get(key), result.get(key)
        if not isinstance(old, int | float) or not isinstance(new, int | float):
            continue
        ratio = f"{new / old:.2f}" if old else "-"
        lines.append(f"{key:32} {old:>10} {new:>10} {ratio:>9}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--workers", type=int, default=16, help="client threads creating")
    parser.add_argument("--operator-workers", type=int, default=16, help="KUBETUNE_WORKERS")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--kubeconfig", help="use this running cluster instead of starting one")
    parser.add_argument("--cluster-dir", default=str(REPO / ".local" / "bench-cluster"))
    parser.add_argument("--save", help="write the result JSON here")
    parser.add_argument("--baseline", help="an earlier --save file to compare with")
    args = parser.parse_args()
    if args.kubeconfig:
        result = run(args.kubeconfig, args)
    else:
        from kubetune_local.testing import start_cluster, stop_cluster

        state = Path(args.cluster_dir)
        cluster, _ = start_cluster(state)
        try:
            result = run(str(cluster.kubeconfig), args)
        finally:
            stop_cluster(state)
    print(json.dumps(result, indent=2))
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=2) + "\n")
    if args.baseline:
        print(compare(result, json.loads(Path(args.baseline).read_text())))
    goals = (
        result["latency_p50_ms"] <= 100
        and result["all_jobs_s"] <= 60
        and result["operator_peak_rss_mb"] <= 200
    )
    print(
        f"p50 {result['latency_p50_ms']} ms, p99 {result['latency_p99_ms']} ms, "
        f"all {result['jobs']} Jobs in {result['all_jobs_s']} s, "
        f"peak RSS {result['operator_peak_rss_mb']} MB: goals {'met' if goals else 'NOT met'}"
    )
    return 0 if goals else 1


if __name__ == "__main__":
    sys.exit(main())
