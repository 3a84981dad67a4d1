"""API benchmark: GET status req/s at 50 concurrent clients (cache vs direct apiserver read),
and POST start latency p50/p99.

    .venv/bin/python tests/bench/api_bench.py [--duration 10] [--clients 50] [--starts 200]
                                              [--rounds 4]

Uses the cluster of $KUBECONFIG when set, else starts a local one (and stops it). Runs two
API processes side by side on the same cluster, with the product's default logging (one JSON
access line per request, to a temporary file): `KUBETUNE_API_READ_MODE=cache` (the product)
and `direct` (one apiserver GET per request). The same keep-alive HTTP client loads them in
turn, `--rounds` times each (cache, direct, cache, ...: `--duration` seconds per mode in all),
so a background load on the machine hits both alike. Prints the ratio, the CPU each request
costs the server and the client, and a JSON line with every figure. Goals (issue 5):
>= 1000 req/s for status on 2 cores, >= 5x the direct read; start p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hack"))

from api.api_proc import ApiProcess  # noqa: E402

SEED = {"model": "tiny", "dataset_url": "data/frigo_training.csv"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (to compare servers on a busy machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(proc: ApiProcess, ids: list[str], clients: int, duration: float) -> dict[str, Any]:
    """One slice: load `proc` for `duration` s, with the CPU it cost the server and the client."""
    assert proc.proc is not None
    before = cpu_seconds(proc.proc.pid)
    client_before = time.process_time()
    run = asyncio.run(load_status(proc.url, ids, clients, duration))
    run["client_cpu_s"] = time.process_time() - client_before
    run["server_cpu_s"] = cpu_seconds(proc.proc.pid) - before
    return run


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure set from the alternating slices of one mode."""
    done = sum(r["requests"] for r in runs)
    elapsed = sum(r["seconds"] for r in runs)
    latencies = sorted(x for r in runs for x in r["latencies"])
    server = sum(r["server_cpu_s"] for r in runs)
    client = sum(r["client_cpu_s"] for r in runs)
    return {
        "requests": done,
        "errors": sum(r["errors"] for r in runs),
        "seconds": round(elapsed, 2),
        "rounds": len(runs),
        "req_per_s": round(done / elapsed, 1),
        "req_per_s_by_round": [round(r["requests"] / r["seconds"], 1) for r in runs],
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
        "server_cpu_s": round(server, 2),
        "server_cpu_us_per_req": round(server / max(done, 1) * 1e6, 1),
        "req_per_server_core_s": round(done / max(server, 1e-9), 1),
        "client_cpu_us_per_req": round(client / max(done, 1) * 1e6, 1),
    }


def kubectl(kubeconfig: str, *args: str) -> None:
    subprocess.run(
        ["kubectl", *args],
        env={**os.environ, "KUBECONFIG": kubeconfig},
        check=True,
        capture_output=True,
        text=True,
    )


async def load_status(url: str, ids: list[str], clients: int, duration: float) -> dict[str, Any]:
    """`clients` keep-alive connections GETting random job statuses for `duration` s."""
    done = 0
    errors = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(seed: int) -> None:
            nonlocal done, errors
            rng = random.Random(seed)
            while time.perf_counter() < stop_at:
                job_id = rng.choice(ids)
                t0 = time.perf_counter()
                async with session.get(f"{url}/api/finetune/status/{job_id}") as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
                    else:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        # warm-up
        async with session.get(f"{url}/api/finetune/status/{ids[0]}") as resp:
            await resp.read()
        t_start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - t_start
    return {"requests": done, "errors": errors, "seconds": elapsed, "latencies": latencies}


async def time_starts(url: str, count: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    ids: list[str] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            nonlocal errors
            async with sem:
                t0 = time.perf_counter()
                async with session.post(
                    f"{url}/api/finetune/start", json={**SEED, "seed": i}
                ) as resp:
                    body = await resp.json()
                latencies.append(time.perf_counter() - t0)
                if resp.status == 202:
                    ids.append(body["job_id"])
                else:
                    errors += 1

        await asyncio.gather(*(one(i) for i in range(count)))
    latencies.sort()
    return {
        "requests": count,
        "concurrency": concurrency,
        "errors": errors,
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        "ids": ids,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=100, help="jobs in the namespace")
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternations of cache and direct load"
    )
    args = parser.parse_args(argv)

    own_cluster: Path | None = None
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        from kubetune_local.testing import start_cluster

        own_cluster = Path(tempfile.mkdtemp(prefix="kubetune-bench-cluster-"))
        cluster, _ = start_cluster(own_cluster)
        kubeconfig = str(cluster.kubeconfig)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    data_root = Path(tempfile.mkdtemp(prefix="kubetune-bench-data-"))
    (data_root / "data").mkdir()
    (data_root / "data" / "frigo_training.csv").write_text("text\nx\n")
    procs: list[ApiProcess] = []
    try:
        kubectl(kubeconfig, "apply", "-f", str(REPO / "manifests" / "crds"))
        kubectl(kubeconfig, "create", "namespace", namespace)
        # The product's logging defaults (INFO, access log on): what a deployment pays.
        common = {"AUTH_DISABLED": True, "NAMESPACE": namespace, "DATA_ROOT": str(data_root)}
        cached = ApiProcess(kubeconfig, {**common, "READ_MODE": "cache"}).start()
        procs.append(cached)

        starts_seq = asyncio.run(time_starts(cached.url, args.starts, 1))
        starts_par = asyncio.run(time_starts(cached.url, max(args.starts // 2, 1), 10))
        ids = (starts_seq["ids"] + starts_par["ids"])[: args.jobs]

        direct = ApiProcess(kubeconfig, {**common, "READ_MODE": "direct"}).start()
        procs.append(direct)
        rounds = max(args.rounds, 1)
        slice_s = args.duration / rounds
        cache_runs, direct_runs = [], []
        for _ in range(rounds):
            cache_runs.append(measure(cached, ids, args.clients, slice_s))
            direct_runs.append(measure(direct, ids, args.clients, slice_s))
        cache_run, direct_run = combine(cache_runs), combine(direct_runs)

        ratio = cache_run["req_per_s"] / max(direct_run["req_per_s"], 1e-9)
        print(
            f"cores: {os.cpu_count()}  clients: {args.clients}  duration: {args.duration}s "
            f"per mode, in {rounds} alternating rounds"
        )
        print(
            f"GET status, cache : {cache_run['req_per_s']:8.1f} req/s  "
            f"p50 {cache_run['p50_ms']} ms  p99 {cache_run['p99_ms']} ms  "
            f"errors {cache_run['errors']}"
        )
        print(
            f"GET status, direct: {direct_run['req_per_s']:8.1f} req/s  "
            f"p50 {direct_run['p50_ms']} ms  p99 {direct_run['p99_ms']} ms  "
            f"errors {direct_run['errors']}"
        )
        print(f"ratio cache/direct: {ratio:.1f}x")
        print(
            f"server CPU per status request: cache {cache_run['server_cpu_us_per_req']} us "
            f"({cache_run['req_per_server_core_s']} req/s per core), direct "
            f"{direct_run['server_cpu_us_per_req']} us ({direct_run['req_per_server_core_s']} "
            f"req/s per core; the apiserver's CPU not counted)"
        )
        print(
            f"client CPU per status request: cache {cache_run['client_cpu_us_per_req']} us, "
            f"direct {direct_run['client_cpu_us_per_req']} us; req/s by round: cache "
            f"{cache_run['req_per_s_by_round']}, direct {direct_run['req_per_s_by_round']}"
        )
        print(f"load average: {os.getloadavg()}")
        for label, run in (("sequential", starts_seq), ("10 concurrent", starts_par)):
            print(
                f"POST start ({label}, {run['requests']} requests): p50 {run['p50_ms']} ms  "
                f"p99 {run['p99_ms']} ms  max {run['max_ms']} ms  errors {run['errors']}"
            )
        summary = {
            "status_cache": cache_run,
            "status_direct": direct_run,
            "ratio": round(ratio, 2),
            "start_sequential": {k: v for k, v in starts_seq.items() if k != "ids"},
            "start_concurrent": {k: v for k, v in starts_par.items() if k != "ids"},
        }
        print(json.dumps(summary))
    finally:
        for proc in procs:
            proc.stop()
            proc.log_path.unlink(missing_ok=True)
        subprocess.run(
            ["kubectl", "delete", "namespace", namespace, "--wait=false"],
            env={**os.environ, "KUBECONFIG": kubeconfig},
            capture_output=True,
            check=False,
        )
        if own_cluster is not None:
            from kubetune_local.testing import stop_cluster

            stop_cluster(own_cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
