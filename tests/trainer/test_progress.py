"""Progress lines: stage changes keep the last step and loss (the status takes reports whole)."""

from __future__ import annotations

import io
import json

from kubetune_crd.status import Progress
from kubetune_trainer.progress import ProgressReporter


def test_stage_after_training_steps_keeps_step_loss_and_fraction() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(stream=out)
    reporter.stage("training")
    reporter.report(Progress(fraction=0.5, step=9, total_steps=18, loss=2.5, stage="training"))
    reporter.stage("saving")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["stage", "progress", "stage"]
    assert lines[0]["step"] == 0 and lines[0]["stage"] == "training"
    last = lines[-1]
    assert last["stage"] == "saving"
    assert (last["step"], last["totalSteps"], last["loss"], last["fraction"]) == (9, 18, 2.5, 0.5)
