"""hf:// models and datasets through the trainer's real loading code, against a local
Hub-compatible server (tests/support/hub_server.py) on 127.0.0.1: gated repos and the token,
revisions pinned in the manifest, the shared model cache (hit, miss, a killed or damaged
download redone, concurrent jobs downloading once), and the endpoint's SSRF guard."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubetune_crd import names
from kubetune_crd.alias_pointer import read_pointer
from kubetune_crd.hub import parse_hub_ref
from kubetune_crd.trainer_contract import ExitCode
from kubetune_trainer.errors import BadInputError, RetryableError
from kubetune_trainer.hub import check_endpoint, hub_client
from kubetune_trainer.model_cache import fetch_model, repo_dir
from support.hub_server import HubServer

from trainer.conftest import TrainerRun

SAMPLES = Path(__file__).resolve().parents[2] / "trainer-image" / "kubetune_trainer" / "samples"
MODEL = "kubetune/tiny"
GATED = "kubetune/tiny-gated"
DATASET = "kubetune/frigo"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    from kubetune_trainer.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("hub")
    model = Path(build_tiny_model(root / "tiny"))
    dataset = root / "frigo"
    (dataset / "data").mkdir(parents=True)
    shutil.copy(SAMPLES / "frigo_training.jsonl", dataset / "data" / "train.jsonl")
    (dataset / "README.md").write_text("# frigo\n", encoding="utf-8")
    server = HubServer().start()
    server.add_repo("model", MODEL, model)
    server.add_repo("model", GATED, model, gated=True)
    server.add_repo("dataset", DATASET, dataset)
    yield server
    server.stop()


@pytest.fixture
def hub_env(hub: HubServer) -> dict[str, str]:
    """What the operator gives a trainer pod for a local mirror (the token comes separately)."""
    hub.state.bytes_per_second = None
    return {
        names.ENV_HF_ENDPOINT: hub.url,
        names.ENV_HUB_ALLOW_INTERNAL: "true",
        "HF_HUB_OFFLINE": "0",
    }


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub in this process may talk to the local server (conftest sets offline)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _hub_config(
    make_config: Callable[..., dict[str, Any]], cache: Path, model: str, job: str
) -> dict[str, Any]:
    config = make_config(
        dataset={"url": f"hf://datasets/{DATASET}"},
        method={"type": "lora", "lora": {"r": 4, "alpha": 8}},
        hyperparameters={"maxSteps": 2},
        name=f"hub-{job}",
        job=job,
    )
    config["spec"]["model"] = model
    config["baseModel"] = model
    config["baseModelAlias"] = None
    config["modelCacheDir"] = str(cache)
    return config


def _outputs(run: TrainerRun) -> str:
    return "\n".join([run.stdout_path.read_text(), run.stderr(), run.termination.read_text()])


def test_trainer_loads_gated_model_and_dataset_from_the_hub_and_pins_them(
    hub: HubServer,
    hub_env: dict[str, str],
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    tmp_path: Path,
) -> None:
    cache = tmp_path / "model-cache"
    env = {**hub_env, names.ENV_HF_TOKEN: hub.state.token}
    gated = hub.state.repos[("model", GATED)]
    data = hub.state.repos[("dataset", DATASET)]

    first = run_trainer(_hub_config(make_config, cache, f"hf://{GATED}", "hub-a"), env=env)
    assert first.proc.returncode == ExitCode.SUCCESS, first.stderr()
    model = first.result()["model"]
    assert model["baseModel"] == f"hf://{GATED}"
    assert model["baseModelRevision"] == gated.commit
    assert model["baseModelCache"] == "miss"
    assert model["datasetRevision"] == data.commit
    manifest = json.loads((tmp_path / "models" / "hub-hub-a" / names.MODEL_MANIFEST).read_text())
    assert manifest["baseModel"] == f"hf://{GATED}"
    assert manifest["baseModelRevision"] == gated.commit
    assert manifest["dataset"]["revision"] == data.commit
    assert manifest["dataset"]["uri"] == f"hf://datasets/{DATASET}@{data.commit}/data/train.jsonl"
    assert hub.state.token not in _outputs(first)
    model_files = len(hub.state.downloads(f"/{GATED}/resolve/"))
    assert model_files == len(gated.files)

    # The second job promotes to an alias whose current model is the first one: the champion's
    # hf:// base model loads from the cache too, and the pointer names the model as asked.
    config = _hub_config(make_config, cache, f"hf://{GATED}", "hub-b")
    config["spec"]["promotion"] = {"alias": "frigo", "policy": "always"}
    config["pointerRoot"] = str(tmp_path)
    config["champion"] = {
        "alias": "frigo",
        "name": "hub-hub-a",
        "path": str(tmp_path / "models" / "hub-hub-a"),
        "format": "peft-lora",
        "baseModel": f"hf://{GATED}",
    }
    second = run_trainer(config, env=env)
    assert second.proc.returncode == ExitCode.SUCCESS, second.stderr()
    result = second.result()
    assert result["model"]["baseModelCache"] == "hit"
    assert result["model"]["baseModelRevision"] == gated.commit
    assert result["metrics"]["championBitsPerByte"] > 0, result["message"]
    assert len(hub.state.downloads(f"/{GATED}/resolve/")) == model_files  # nothing downloaded
    pointer = read_pointer(tmp_path / "aliases" / "frigo.json")
    assert pointer is not None and pointer.base_model == f"hf://{GATED}"
    assert hub.state.token not in _outputs(second)


def test_validate_only_fetches_the_model_into_the_cache_and_training_then_hits(
    hub: HubServer,
    hub_env: dict[str, str],
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    tmp_path: Path,
) -> None:
    """The CPU pre-flight (`--validate-only`) is where an hf:// model is downloaded: its report
    pins the commit and says miss; the training run on the same cache downloads nothing."""
    cache = tmp_path / "model-cache"
    env = {**hub_env, names.ENV_HF_TOKEN: hub.state.token}
    gated = hub.state.repos[("model", GATED)]
    before = len(hub.state.downloads(f"/{GATED}/resolve/"))
    config = _hub_config(make_config, cache, f"hf://{GATED}", "hub-pre")

    pre = run_trainer(config, "--validate-only", "--target-device", "cuda", env=env)
    assert pre.proc.returncode == ExitCode.SUCCESS, pre.stderr()
    report = pre.result()["validation"]
    assert report["baseModelRevision"] == gated.commit
    assert report["baseModelCache"] == "miss"
    assert "model cache miss" in pre.result()["message"]
    downloaded = len(hub.state.downloads(f"/{GATED}/resolve/")) - before
    assert downloaded == len(gated.files)
    assert (repo_dir(cache, GATED) / gated.commit / names.MODEL_CACHE_MARKER).is_file()
    assert hub.state.token not in _outputs(pre)

    train = run_trainer(config, env=env)
    assert train.proc.returncode == ExitCode.SUCCESS, train.stderr()
    model = train.result()["model"]
    assert (model["baseModelCache"], model["baseModelRevision"]) == ("hit", gated.commit)
    assert len(hub.state.downloads(f"/{GATED}/resolve/")) - before == downloaded


def test_gated_model_without_token_is_bad_input_naming_the_token(
    hub_env: dict[str, str],
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    tmp_path: Path,
) -> None:
    run = run_trainer(
        _hub_config(make_config, tmp_path / "c", f"hf://{GATED}", "no-token"), env=hub_env
    )
    assert run.proc.returncode == ExitCode.BAD_INPUT
    message = run.result()["message"]
    assert "401" in message and "no token was given" in message
    assert "tokenSecretRef" in message
    assert "Traceback" not in run.stderr()


def test_refused_token_is_bad_input_and_never_printed(
    hub_env: dict[str, str],
    make_config: Callable[..., dict[str, Any]],
    run_trainer: Callable[..., TrainerRun],
    tmp_path: Path,
) -> None:
    wrong = "hf_wrong_secret_value_987654321"
    config = _hub_config(make_config, tmp_path / "c", f"hf://{GATED}", "bad-token")
    run = run_trainer(config, env={**hub_env, names.ENV_HF_TOKEN: wrong})
    assert run.proc.returncode == ExitCode.BAD_INPUT
    assert "token from spec.hub.tokenSecretRef was refused" in run.result()["message"]
    assert wrong not in _outputs(run)


def test_missing_revision_and_missing_dataset_file_are_bad_input(
    hub: HubServer, hub_env: dict[str, str], tmp_path: Path, online: None
) -> None:
    client = hub_client(hub_env)
    with pytest.raises(BadInputError, match="revision not found"):
        fetch_model(parse_hub_ref(f"hf://{MODEL}@v9"), tmp_path, client)
    from kubetune_trainer.hub import fetch_hub_dataset

    with pytest.raises(BadInputError, match=r"no file 'nope\.csv'"):
        fetch_hub_dataset(parse_hub_ref(f"hf://datasets/{DATASET}/nope.csv"), tmp_path, client)


# ---------------------------------------------------------------- the shared model cache


def _snapshot(root: Path, hub: HubServer) -> Path:
    return repo_dir(root, MODEL) / hub.state.repos[("model", MODEL)].commit


def test_cache_by_commit_needs_no_request_and_loads(
    hub: HubServer, hub_env: dict[str, str], tmp_path: Path, online: None
) -> None:
    client = hub_client(hub_env)
    first = fetch_model(parse_hub_ref(f"hf://{MODEL}"), tmp_path, client)
    assert first.cache == "miss"
    assert (first.path / names.MODEL_CACHE_MARKER).is_file()
    before = len(hub.state.requests)
    again = fetch_model(parse_hub_ref(f"hf://{MODEL}@{first.commit}"), tmp_path, client)
    assert (again.cache, again.path) == ("hit", first.path)
    assert len(hub.state.requests) == before  # an immutable commit: the cache answers alone
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(again.path).is_fast


def test_damaged_files_without_marker_are_redownloaded_not_used(
    hub: HubServer, hub_env: dict[str, str], tmp_path: Path, online: None
) -> None:
    client = hub_client(hub_env)
    ref = parse_hub_ref(f"hf://{MODEL}")
    done = fetch_model(ref, tmp_path, client)
    # A snapshot whose file was truncated after its marker was written is not complete.
    weights = done.path / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as f:
        f.truncate(size // 2)
    # ... nor a partial download (no marker) with a truncated file and a corrupted one.
    partial = done.path.parent / f".partial-{done.commit}"
    done.path.rename(partial)
    (partial / names.MODEL_CACHE_MARKER).unlink()
    config = partial / "config.json"
    config.write_bytes(config.read_bytes().replace(b"{", b"[", 1))
    served = len(hub.state.downloads(f"/{MODEL}/resolve/"))

    redone = fetch_model(ref, tmp_path, client)
    assert redone.cache == "miss"
    assert redone.path.stat() and (redone.path / "model.safetensors").stat().st_size == size
    json.loads((redone.path / "config.json").read_text())  # the real file again
    fetched = hub.state.downloads(f"/{MODEL}/resolve/")[served:]
    # Only the two damaged files came again; the intact ones were kept.
    assert sorted(p.rsplit("/", 1)[-1] for p in fetched) == ["config.json", "model.safetensors"]


_FETCH = """
import sys
from pathlib import Path
from kubetune_crd.hub import parse_hub_ref
from kubetune_trainer.model_cache import fetch_model
got = fetch_model(parse_hub_ref(sys.argv[1]), Path(sys.argv[2]))
print(got.cache, got.commit, flush=True)
"""


def _fetch_process(ref: str, root: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _FETCH, ref, str(root)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_download_killed_halfway_is_redone(
    hub: HubServer, hub_env: dict[str, str], tmp_path: Path, online: None
) -> None:
    hub.state.bytes_per_second = 4 * 1024 * 1024  # the 22 MB weights take ~5 s
    proc = _fetch_process(f"hf://{MODEL}", tmp_path, hub_env)
    partial = repo_dir(tmp_path, MODEL) / f".partial-{hub.state.repos[('model', MODEL)].commit}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        incomplete = list(partial.rglob("*.incomplete")) if partial.exists() else []
        if any(p.stat().st_size > 1024 * 1024 for p in incomplete):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    else:
        raise AssertionError("the download never got going")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert not _snapshot(tmp_path, hub).exists()  # nothing usable was left

    hub.state.bytes_per_second = None
    redone = fetch_model(parse_hub_ref(f"hf://{MODEL}"), tmp_path, hub_client(hub_env))
    assert redone.cache == "miss"
    assert (redone.path / names.MODEL_CACHE_MARKER).is_file()
    marker = json.loads((redone.path / names.MODEL_CACHE_MARKER).read_text())
    for entry in marker["files"]:
        assert (redone.path / entry["path"]).stat().st_size == entry["size"]


def test_concurrent_jobs_download_the_model_once(
    hub: HubServer, hub_env: dict[str, str], tmp_path: Path
) -> None:
    hub.state.bytes_per_second = 8 * 1024 * 1024
    served = len(hub.state.downloads(f"/{MODEL}/resolve/"))
    procs = [_fetch_process(f"hf://{MODEL}", tmp_path, hub_env) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sorted(out.split()[0] for out, _ in outputs) == ["hit", "miss"]
    fetched = hub.state.downloads(f"/{MODEL}/resolve/")[served:]
    assert len(fetched) == len(hub.state.repos[("model", MODEL)].files)  # each file once


# ---------------------------------------------------------------- the endpoint guard


def _resolver(address: str) -> Callable[[str, int], list[Any]]:
    return lambda host, port: [ipaddress.ip_address(address)]


@pytest.mark.parametrize(
    ("url", "allow_internal", "address", "why"),
    [
        ("http://hub.example.com", False, "93.184.216.34", "https"),
        ("https://hub.example.com", False, "10.0.0.5", "refused address"),
        ("https://hub.example.com", False, "127.0.0.1", "refused address"),
        ("https://hub.example.com", True, "169.254.169.254", "refused address"),
        ("http://169.254.169.254", True, "169.254.169.254", "refused address"),
        ("https://[::ffff:169.254.169.254]", True, "::ffff:169.254.169.254", "refused address"),
        ("https://user:pw@hub.example.com", False, "93.184.216.34", "no credentials"),
        ("file:///etc/passwd", True, "127.0.0.1", "https"),
    ],
)
def test_endpoint_guard_refuses(url: str, allow_internal: bool, address: str, why: str) -> None:
    with pytest.raises(BadInputError, match=why):
        check_endpoint(url, allow_internal, _resolver(address))


def test_endpoint_guard_allows_public_and_allowed_internal_mirrors() -> None:
    assert check_endpoint("https://hub.example.com/", False, _resolver("93.184.216.34")) == (
        "https://hub.example.com"
    )
    assert check_endpoint("http://10.1.2.3:8080", True, _resolver("10.1.2.3")).endswith(":8080")
    with pytest.raises(RetryableError):
        check_endpoint("https://nowhere.example", False, lambda host, port: [])
