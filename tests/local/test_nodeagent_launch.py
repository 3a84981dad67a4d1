"""The container launcher: volume sources and the agent's working directory stay reachable
when a mountPath (an emptyDir at /tmp) shadows the directories they live in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from kubetune_local.nodeagent.process import keep_visible

REPO = Path(__file__).resolve().parents[2]

# Root is needed for a private mount namespace; under CI (root) these must run, never skip.
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="the launcher needs root (a private mount namespace)",
)


def run_launcher(spec: dict[str, object], state: Path) -> subprocess.CompletedProcess[str]:
    """`python -m kubetune_local.nodeagent.launch SPEC.json`, as the node agent runs it."""
    spec_path = state / "spec.json"
    spec_path.write_text(json.dumps(spec))
    return subprocess.run(
        [sys.executable, "-m", "kubetune_local.nodeagent.launch", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "hack")},
        check=False,
    )


def test_sources_under_a_shadowed_tmp() -> None:
    # The agent's state dir under /tmp, like KUBETUNE_CLUSTER_DIR=/tmp/x.
    state = Path(tempfile.mkdtemp(prefix="kubetune-launch-", dir="/tmp"))
    try:
        empty, data, work = state / "vol-tmp", state / "vol-data", state / "work"
        for d in (empty, data, work):
            d.mkdir()
        (data / "in.txt").write_text("hello")
        tlog = state / "termination-log"
        tlog.write_text("")
        script = (
            "import os, pathlib\n"
            "print(sorted(os.listdir('/tmp')))\n"
            "pathlib.Path('cwd.txt').write_text('in the host workdir')\n"
            "pathlib.Path('/tmp/x').write_text('in the emptyDir')\n"
            "msg = pathlib.Path('/opt/kubetune-launch-test/in.txt').read_text()\n"
            "pathlib.Path('/dev/termination-log').write_text(msg)\n"
        )
        spec = {
            "argv": [sys.executable, "-c", script],
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            "workdir": str(work),
            "host_workdir": True,
            "mounts": [
                {"source": str(empty), "target": "/tmp", "read_only": False},
                {"source": str(data), "target": "/opt/kubetune-launch-test", "read_only": True},
                {"source": str(tlog), "target": "/dev/termination-log", "read_only": False},
            ],
            "cgroup": None,
            "keep_visible": keep_visible(),  # this interpreter, also from a checkout under /tmp
        }
        proc = run_launcher(spec, state)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # The emptyDir starts empty (nothing leaked into it) but for the way back to a
        # checkout under /tmp.
        way_back = sorted({Path(k).parts[2] for k in keep_visible() if k.startswith("/tmp/")})
        assert proc.stdout.strip() == repr(way_back)
        assert tlog.read_text() == "hello"
        assert (work / "cwd.txt").read_text() == "in the host workdir"
        assert (empty / "x").read_text() == "in the emptyDir"
        assert not (Path("/opt/kubetune-launch-test") / "in.txt").exists()  # nothing leaks out
    finally:
        shutil.rmtree(state, ignore_errors=True)
        if Path("/opt/kubetune-launch-test").is_dir():
            os.rmdir("/opt/kubetune-launch-test")


def test_the_python_environment_stays_visible_under_an_empty_dir_at_tmp() -> None:
    # A checkout under /tmp (a CI clone) whose tools an emptyDir at /tmp would otherwise hide.
    state = Path(tempfile.mkdtemp(prefix="kubetune-launch-", dir="/tmp"))
    try:
        checkout, empty = state / "checkout", state / "vol-tmp"
        (checkout / "bin").mkdir(parents=True)
        empty.mkdir()
        tool = checkout / "bin" / "tool"
        tool.write_text("#!/bin/sh\necho tool ran; ls /tmp\n")
        tool.chmod(0o755)
        spec = {
            "argv": [str(tool)],
            "env": {"PATH": "/usr/bin:/bin"},
            "workdir": "/",
            "mounts": [{"source": str(empty), "target": "/tmp", "read_only": False}],
            "keep_visible": [str(checkout)],
            "cgroup": None,
        }
        proc = run_launcher(spec, state)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.split()
        assert lines[:2] == ["tool", "ran"]
        assert lines[2:] == [state.name]  # /tmp is the emptyDir, holding only the way back
    finally:
        shutil.rmtree(state, ignore_errors=True)
