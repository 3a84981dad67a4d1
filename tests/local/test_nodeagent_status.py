"""Pod phase, container states and termination messages of the node agent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from kubetune_local.nodeagent.container import default_argv
from kubetune_local.nodeagent.logserver import select_lines
from kubetune_local.nodeagent.status import (
    ContainerRecord,
    Terminated,
    desired_conditions,
    exit_code_of,
    pod_phase,
    pod_status,
    terminated_reason,
    termination_message,
    update_conditions,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def rec(name: str, code: int | None = None, running: bool = False) -> ContainerRecord:
    r = ContainerRecord(name, "img")
    if running or code is not None:
        r.start(100, T0)
    if code is not None:
        r.finish(Terminated(code, terminated_reason(code), T0, T0 + timedelta(seconds=1)))
    return r


def test_phase_rules() -> None:
    assert pod_phase("Never", [], [rec("a")]) == "Pending"
    assert pod_phase("Never", [rec("i", running=True)], [rec("a")]) == "Pending"
    assert pod_phase("Never", [rec("i", 1)], [rec("a")]) == "Failed"
    assert pod_phase("OnFailure", [rec("i", 1)], [rec("a")]) == "Pending"
    assert pod_phase("Never", [rec("i", 0)], [rec("a", running=True)]) == "Running"
    assert pod_phase("Never", [], [rec("a", 0), rec("b", running=True)]) == "Running"
    assert pod_phase("Never", [], [rec("a", 0), rec("b", 0)]) == "Succeeded"
    assert pod_phase("Never", [], [rec("a", 0), rec("b", 3)]) == "Failed"
    assert pod_phase("OnFailure", [], [rec("a", 3)]) == "Running"
    assert pod_phase("Always", [], [rec("a", 0)]) == "Running"


def test_restart_keeps_last_state() -> None:
    r = rec("a", 1)
    r.start(200, T0 + timedelta(seconds=5))
    api = r.to_api()
    assert api["restartCount"] == 1 and "running" in api["state"]
    assert api["lastState"]["terminated"]["exitCode"] == 1 and api["ready"] is True


def test_terminated_state_and_reasons() -> None:
    assert terminated_reason(0) == "Completed" and terminated_reason(2) == "Error"
    assert terminated_reason(137, oom_killed=True) == "OOMKilled"
    assert exit_code_of(-9) == (137, 9) and exit_code_of(3) == (3, None)
    r = rec("a", 3)
    state = r.to_api()["state"]["terminated"]
    assert state["exitCode"] == 3 and state["reason"] == "Error"
    assert (
        state["startedAt"] == "2026-01-01T00:00:00Z"
        and state["finishedAt"] == "2026-01-01T00:00:01Z"
    )


def test_pod_status_document() -> None:
    mains = [rec("a", 0)]
    conds = update_conditions({}, desired_conditions("Succeeded", [], mains), T0)
    status = pod_status("Succeeded", [], mains, conds, T0)
    assert status["podIP"] == "127.0.0.1" and status["hostIP"] == "127.0.0.1"
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "False",
        "Ready": "False",
    }
    later = update_conditions(
        conds, {"Ready": "False", "Initialized": "True"}, T0 + timedelta(hours=1)
    )
    assert later["Ready"][1] == T0


def test_termination_message(tmp_path: Path) -> None:
    f = tmp_path / "msg"
    f.write_text("x" * 5000)
    assert len(termination_message(f, "File", False, "")) == 4096
    f.write_text("")
    assert termination_message(f, "FallbackToLogsOnError", True, "last words\n") == "last words\n"
    assert termination_message(f, "FallbackToLogsOnError", False, "last words\n") == ""
    assert termination_message(f, "File", True, "last words\n") == ""


def test_log_line_selection() -> None:
    data = (
        b"2026-01-01T00:00:00.000000000Z a\n"
        b"2026-01-01T00:00:05.000000000Z b\n"
        b"2026-01-01T00:00:09.000000000Z c\n"
    )
    assert select_lines(data, False, None, None) == [b"a\n", b"b\n", b"c\n"]
    assert select_lines(data, False, 1, None) == [b"c\n"]
    assert select_lines(data, True, 1, None) == [b"2026-01-01T00:00:09.000000000Z c\n"]
    assert select_lines(data, False, None, T0 + timedelta(seconds=4)) == [b"b\n", b"c\n"]
    assert select_lines(data, False, 0, None) == []


def test_default_argv() -> None:
    assert default_argv("python:3.11", ["python3", "-c", "1"], "/usr/bin:/bin") == [
        "python3",
        "-c",
        "1",
    ]
    assert default_argv("ghcr.io/x/python3:3.11", ["-c", "1"], "/usr/bin:/bin") == [
        "python3",
        "-c",
        "1",
    ]
    assert default_argv("ghcr.io/x/python3@sha256:abc", [], "/usr/bin:/bin") == ["python3"]
    assert default_argv("registry/nonexistent-tool:1", ["--x"], "/usr/bin") == []
