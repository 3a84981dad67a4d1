"""End-to-end runs of `kubetune-trainer` (a subprocess, as in the Job) on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubetune_crd.metric_history import ProgressReport
from kubetune_crd.status import Progress
from kubetune_crd.trainer_contract import ExitCode, TrainerResult

from trainer.conftest import ProgressSink, TrainerRun

Config = Callable[..., dict[str, Any]]
Run = Callable[..., TrainerRun]


def test_full_fine_tune_stores_model_manifest_and_reports(
    make_config: Config, run_trainer: Run, progress_server: str, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("projected-token\n")
    url = f"{progress_server}/progress/default/job-a"
    config = make_config(
        hyperparameters={"maxSteps": 12, "loggingSteps": 3},
        progressUrl=url,
        progressTokenPath=str(token),
    )
    run = run_trainer(config)
    assert run.proc.returncode == ExitCode.SUCCESS, run.stderr()

    # One JSON line per logging step, with the fields the operator shows.
    progress = run.progress()
    assert [p["step"] for p in progress] == [3, 6, 9, 12]
    for p in progress:
        Progress.model_validate(p)
        assert p["totalSteps"] == 12 and p["tokensPerSecond"] > 0
        assert {"loss", "learningRate", "etaSeconds", "epoch"} <= set(p)
    # No library progress bars anywhere.
    assert "it/s" not in run.stderr() and "%|" not in run.stderr()
    assert all(line.startswith("{") for line in run.stdout_path.read_text().splitlines())

    # Operator POSTs: Progress JSON with the bearer token, at the job's path.
    assert ProgressSink.received, "no progress was posted"
    paths = {p for p, _, _ in ProgressSink.received}
    assert paths == {"/progress/default/job-a"}
    assert all(auth == "Bearer projected-token" for _, auth, _ in ProgressSink.received)
    assert any(body.get("stage") == "training" for _, _, body in ProgressSink.received)
    # Every logged point reaches the endpoint (the job's metric history), none twice.
    reports = [ProgressReport.model_validate(body) for _, _, body in ProgressSink.received]
    points = [p for r in reports for p in r.points or []]
    train = [(p.step, p.loss) for p in points if p.kind == "train"]
    assert train == [(p["step"], p["loss"]) for p in progress]

    # Termination message and manifest.
    result = TrainerResult.model_validate(run.result())
    assert result.outcome == "succeeded"
    assert result.model is not None and result.metrics is not None
    assert result.model.path == "models/tiny-ft"
    assert result.model.uri == "pvc://kubetune-models/models/tiny-ft"
    m = result.metrics
    assert m.eval_loss_after is not None and m.eval_loss_before is not None
    assert m.eval_loss_after < m.eval_loss_before
    evals = [(p.step, p.loss) for p in points if p.kind == "eval"]
    assert evals == [(0, m.eval_loss_before), (12, m.eval_loss_after)]
    assert m.perplexity_after == pytest.approx(2.718281828**m.eval_loss_after, rel=1e-6)
    model_dir = tmp_path / "models" / "tiny-ft"
    manifest = json.loads((model_dir / "kubetune-model.json").read_text())
    assert manifest["metrics"]["evalLossAfter"] == m.eval_loss_after
    assert manifest["dataset"]["sha256"] and manifest["dataset"]["uri"] == "data/frigo_training.csv"
    assert manifest["baseModel"] == config["baseModel"]
    assert manifest["hyperparameters"]["maxSteps"] == 12
    files = {f["path"] for f in manifest["files"]}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    import hashlib

    for entry in manifest["files"]:
        assert (
            hashlib.sha256((model_dir / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
        )
    # The result (hence the FineTunedModel record) carries the manifest's files and its sha256.
    assert [f.model_dump() for f in result.model.files or []] == manifest["files"]
    manifest_sha = hashlib.sha256((model_dir / "kubetune-model.json").read_bytes()).hexdigest()
    assert result.model.manifest_sha256 == manifest_sha
    # No temporaries left; checkpoints of a finished job are cleaned up.
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny-ft"]
    assert not Path(config["checkpointDir"]).exists()

    # A retry of the same job finds its model and succeeds without training again.
    again = run_trainer(config)
    assert again.proc.returncode == 0
    assert "already stored by this job" in again.result()["message"]
    assert again.result()["model"]["manifestSha256"] == manifest_sha
    assert not again.progress()


def test_validate_only_reports_rows_tokens_steps_eta(make_config: Config, run_trainer: Run) -> None:
    run = run_trainer(make_config(hyperparameters={"epochs": 2}), "--validate-only")
    assert run.proc.returncode == 0, run.stderr()
    report = next(line for line in run.lines() if line["event"] == "validation")
    assert report["rows"] == 240 and report["trainRows"] == 216 and report["evalRows"] == 24
    assert report["kind"] == "prompt_completion"
    assert report["totalSteps"] == 2 * report["stepsPerEpoch"]
    assert report["trainTokens"] > 10_000 and report["etaSeconds"] > 0
    assert report["parameters"] > 1_000_000
    assert not any(line["event"] == "progress" for line in run.lines())
    # The termination message carries the report the operator's pre-flight copies to status.
    validation = TrainerResult.model_validate(run.result()).validation
    assert validation is not None and validation.rows == 240 and validation.device == "cpu"
    assert validation.total_steps == report["totalSteps"] and validation.eta_seconds
    assert validation.estimated_gpu_memory_gib is None  # a CPU run: no GPU estimate


def test_validate_only_for_a_gpu_run_estimates_memory_and_refuses_what_cannot_fit(
    make_config: Config, run_trainer: Run
) -> None:
    """The operator's CPU pre-flight asks for the GPU run's figures (no GPU here)."""
    config = make_config(method={"type": "full"}, hyperparameters={"batchSize": 16})
    run = run_trainer(config, "--validate-only", "--target-device", "cuda")
    assert run.proc.returncode == 0, run.stderr()
    validation = TrainerResult.model_validate(run.result()).validation
    assert validation is not None and validation.device == "cuda"
    need = validation.estimated_gpu_memory_gib
    assert need is not None and need > 1.0  # the fixed 1 GiB overhead and the tiny model

    tight = run_trainer(
        config, "--validate-only", "--target-device", "cuda", "--gpu-memory-gib", f"{need / 2:g}"
    )
    assert tight.proc.returncode == ExitCode.BAD_INPUT, tight.stderr()
    result = tight.result()
    assert result["outcome"] == "bad_input"
    assert "GiB of GPU memory per process" in result["message"]
    roomy = run_trainer(
        config, "--validate-only", "--target-device", "cuda", "--gpu-memory-gib", f"{need * 2:g}"
    )
    assert roomy.proc.returncode == 0, roomy.stderr()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"question,reponse\n" + b"a,b\n" * 20, "columns found: 'question', 'reponse'"),
        (b'{"prompt": "a", "completion": "b"}\n{oops\n', "line 2 is not valid JSON"),
        (b"prompt,completion\nq,a\n", "has 1 rows; at least 10"),
    ],
)
def test_bad_data_exits_42_with_actionable_message(
    make_config: Config, run_trainer: Run, data_root: Path, content: bytes, expected: str
) -> None:
    suffix = "jsonl" if content.startswith(b"{") else "csv"
    (data_root / "data" / f"bad.{suffix}").write_bytes(content)
    run = run_trainer(make_config(dataset={"url": f"data/bad.{suffix}"}))
    assert run.proc.returncode == ExitCode.BAD_INPUT
    result = run.result()
    assert result["outcome"] == "bad_input"
    assert expected in result["message"]


def test_bad_config_and_missing_model(
    make_config: Config, run_trainer: Run, tmp_path: Path
) -> None:
    run = run_trainer(make_config(baseModel=str(tmp_path / "no-such-model")))
    assert run.proc.returncode == ExitCode.BAD_INPUT
    assert "does not exist" in run.result()["message"]
    config = make_config()
    config["spec"]["hyperparameters"]["batchSize"] = 0
    run = run_trainer(config)
    assert run.proc.returncode == ExitCode.BAD_INPUT
    assert "batchSize" in run.result()["message"]


def test_progress_endpoint_down_does_not_fail_training(
    make_config: Config, run_trainer: Run
) -> None:
    config = make_config(
        hyperparameters={"maxSteps": 2},
        progressUrl="http://127.0.0.1:9/progress/default/job-a",
        progressTokenPath="/nonexistent/token",
    )
    run = run_trainer(config)
    assert run.proc.returncode == 0, run.stderr()


def test_existing_model_of_another_job_is_never_overwritten(
    make_config: Config, run_trainer: Run, tmp_path: Path
) -> None:
    first = run_trainer(make_config(hyperparameters={"maxSteps": 1}, job="job-a"))
    assert first.proc.returncode == 0
    weights = tmp_path / "models" / "tiny-ft" / "model.safetensors"
    before = weights.read_bytes()
    second = run_trainer(make_config(hyperparameters={"maxSteps": 1}, job="job-b"))
    assert second.proc.returncode == ExitCode.BAD_INPUT
    assert "never overwritten" in second.result()["message"]
    assert weights.read_bytes() == before


def test_lora_chat_with_merge(make_config: Config, run_trainer: Run, tmp_path: Path) -> None:
    config = make_config(
        dataset={"url": "data/frigo_chat.jsonl"},
        method={"type": "lora", "lora": {"r": 8, "alpha": 16}, "mergeAdapter": True},
        hyperparameters={"maxSteps": 3, "learningRate": 5e-3},
    )
    run = run_trainer(config)
    assert run.proc.returncode == 0, run.stderr()
    model_dir = tmp_path / "models" / "tiny-ft"
    assert (model_dir / "adapter_model.safetensors").is_file()
    assert (model_dir / "adapter_config.json").is_file()
    assert (model_dir / "merged" / "model.safetensors").is_file()
    result = run.result()
    assert result["model"]["format"] == "peft-lora+merged"

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    adapter = AutoPeftModelForCausalLM.from_pretrained(model_dir)
    merged = AutoModelForCausalLM.from_pretrained(model_dir / "merged")
    import torch

    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a = adapter(input_ids=ids).logits
        b = merged(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_quiet_libraries_leaves_datasets_unimported_yet_quiet_once_imported() -> None:
    """The validate-only pre-flight never needs `datasets` (0.7 s to import); trl's DPO
    imports it later, and it is quiet then too."""
    code = (
        "import logging, sys\n"
        "from kubetune_trainer.runtime import quiet_libraries\n"
        "quiet_libraries()\n"
        "assert 'datasets' not in sys.modules\n"
        "import datasets\n"
        "print(datasets.utils.are_progress_bars_disabled(),\n"
        "      datasets.utils.logging.get_verbosity() == logging.ERROR)\n"
    )
    env = {k: v for k, v in os.environ.items() if "DATASETS" not in k}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split() == ["True", "True"], out.stderr
