"""Pod security as the node agent enforces it: the kubelet's rules for the security context
(pure), fsGroup on volumes, and the launcher running a container as a non-root user with a
read-only root filesystem, no capabilities and no_new_privs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from kubetune_local.nodeagent.container import identity_mounts
from kubetune_local.nodeagent.envvars import ConfigError
from kubetune_local.nodeagent.ownership import apply_fs_group
from kubetune_local.nodeagent.process import keep_visible
from kubetune_local.nodeagent.security import effective_context, run_as

REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="needs root (chown, a private mount namespace, setuid)",
)


def _pod(pod_sc: dict[str, Any] | None = None, **container: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", **container}]}
    if pod_sc is not None:
        spec["securityContext"] = pod_sc
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}, "spec": spec}


def test_container_context_wins_over_the_pod_one() -> None:
    pod = _pod(
        {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True, "fsGroup": 2000},
        securityContext={"runAsUser": 1500, "readOnlyRootFilesystem": True},
    )
    container = pod["spec"]["containers"][0]
    assert effective_context(pod, container) == {
        "runAsUser": 1500,
        "runAsGroup": 1000,
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
    }
    user = run_as(pod, container, image_uid=0)
    assert (user.uid, user.gid, user.groups, user.read_only_root) == (1500, 1000, (2000,), True)
    assert not user.no_new_privs and user.drop == ()


def test_restricted_profile() -> None:
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    }
    pod = _pod({"runAsUser": 1000, "supplementalGroups": [5, 6]}, securityContext=restricted)
    user = run_as(pod, pod["spec"]["containers"][0], image_uid=0)
    assert user.no_new_privs and user.drop == ("ALL",) and user.add == ("NET_BIND_SERVICE",)
    assert (user.uid, user.gid, user.groups) == (1000, 0, (5, 6))
    privileged = _pod(securityContext={"privileged": True, "capabilities": {"drop": ["ALL"]}})
    assert run_as(privileged, privileged["spec"]["containers"][0], image_uid=0).drop == ()


@pytest.mark.parametrize(
    ("pod_sc", "container_sc", "message"),
    [
        (
            {"runAsNonRoot": True},
            None,
            'container has runAsNonRoot and image will run as root (pod: "p_ns(u-1)", '
            "container: main)",
        ),
        (
            {"runAsNonRoot": True, "runAsUser": 1000},
            {"runAsUser": 0},
            'container\'s runAsUser breaks non-root policy (pod: "p_ns(u-1)", container: main)',
        ),
    ],
)
def test_run_as_non_root_with_uid_0_is_refused_like_the_kubelet(
    pod_sc: dict[str, Any], container_sc: dict[str, Any] | None, message: str
) -> None:
    pod = _pod(pod_sc, securityContext=container_sc)
    with pytest.raises(ConfigError) as refused:
        run_as(pod, pod["spec"]["containers"][0], image_uid=0)
    assert str(refused.value) == message
    allowed = _pod({"runAsNonRoot": True})  # an image whose user is not root
    assert run_as(allowed, allowed["spec"]["containers"][0], image_uid=1000).uid == 1000


def test_an_unknown_user_gets_an_entry_as_its_image_would_give(tmp_path: Path) -> None:
    assert identity_mounts(0, 0, tmp_path) == []  # root is in every /etc/passwd
    mounts = identity_mounts(65532, 65533, tmp_path)
    assert [(m.target, m.read_only) for m in mounts] == [
        ("/etc/passwd", True),
        ("/etc/group", True),
    ]
    passwd = mounts[0].source.read_text()
    assert passwd.startswith(Path("/etc/passwd").read_text())  # the host's users stay
    assert passwd.splitlines()[-1].split(":")[2:4] == ["65532", "65533"]
    assert mounts[1].source.read_text().splitlines()[-1].split(":")[2] == "65533"


@needs_root
def test_fs_group_gives_the_volume_to_the_group(tmp_path: Path) -> None:
    root = tmp_path / "claim"
    (root / "models" / "m1").mkdir(parents=True)
    (root / "models" / "m1" / "weights.bin").write_bytes(b"x")
    (root / "models" / "m1" / "weights.bin").chmod(0o600)
    (root / "link").symlink_to("/etc/hostname")
    apply_fs_group(root, 2000)
    for path in (root, root / "models", root / "models" / "m1"):
        st = path.stat()
        assert st.st_gid == 2000 and st.st_mode & stat.S_ISGID and st.st_mode & 0o070 == 0o070
    weights = (root / "models" / "m1" / "weights.bin").stat()
    assert weights.st_gid == 2000 and stat.S_IMODE(weights.st_mode) == 0o660
    assert Path("/etc/hostname").stat().st_gid != 2000  # a link is not followed
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("t")
    (secret / "token").chmod(0o400)
    apply_fs_group(secret, 2000, read_only=True)
    assert stat.S_IMODE((secret / "token").stat().st_mode) == 0o440


@needs_root
def test_launcher_runs_a_restricted_non_root_container() -> None:
    state = Path(tempfile.mkdtemp(prefix="kubetune-launch-", dir="/tmp"))
    try:
        scratch, claim, work = state / "scratch", state / "claim", state / "work"
        for d in (scratch, claim, work):
            d.mkdir()
            d.chmod(0o777)
        script = (
            "import os, pathlib\n"
            "out = {'ids': [os.getuid(), os.getgid(), sorted(os.getgroups())], 'denied': []}\n"
            "for p in ('/kubetune-probe', '/usr/kubetune-probe', '/etc/kubetune-probe'):\n"
            "    try:\n"
            "        pathlib.Path(p).write_text('x')\n"
            "    except OSError as e:\n"
            "        out['denied'].append(e.errno)\n"
            "pathlib.Path('/scratch/a').write_text('a')\n"
            "pathlib.Path('/claim/b').write_text('b')\n"
            "out['status'] = [l.split()[1] for l in open('/proc/self/status')\n"
            "                 if l.startswith(('NoNewPrivs', 'CapEff', 'CapBnd'))]\n"
            "print(__import__('json').dumps(out))\n"
        )
        spec = {
            "argv": [sys.executable, "-c", script],
            "env": {"PATH": "/usr/bin:/bin", "HOME": "/"},
            "workdir": str(work),
            "host_workdir": True,
            "mounts": [
                {"source": str(scratch), "target": "/scratch", "read_only": False},
                {"source": str(claim), "target": "/claim", "read_only": False},
            ],
            "cgroup": None,
            "keep_visible": keep_visible(),
            "security": {
                "uid": 1000,
                "gid": 3000,
                "groups": [2000],
                "read_only_root": True,
                "no_new_privs": True,
                "drop": ["ALL"],
                "add": [],
            },
        }
        (state / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.run(
            [sys.executable, "-m", "kubetune_local.nodeagent.launch", str(state / "spec.json")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO / "hack")},
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = json.loads(proc.stdout)
        assert out["ids"] == [1000, 3000, [2000]]
        assert out["denied"] == [30, 30, 30]  # EROFS: the root is read-only
        assert out["status"] == ["0000000000000000", "0000000000000000", "1"]
        assert (claim / "b").stat().st_uid == 1000
        assert (scratch / "a").read_text() == "a"
        assert not Path("/kubetune-probe").exists()
    finally:
        shutil.rmtree(state, ignore_errors=True)
        for leftover in ("/scratch", "/claim"):
            if Path(leftover).is_dir() and not any(Path(leftover).iterdir()):
                os.rmdir(leftover)
