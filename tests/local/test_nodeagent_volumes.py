"""Volume materialisation and mount plans of the node agent."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubetune_local.nodeagent.envvars import ConfigError
from kubetune_local.nodeagent.volumes import Mount, VolumeBuilder, mount_plan, project_keys

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}},
    "spec": {
        "containers": [{"name": "main", "resources": {"limits": {"cpu": "2"}}}],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "data"}},
            {
                "name": "sec",
                "secret": {
                    "secretName": "s",
                    "items": [{"key": "pw", "path": "nested/pw", "mode": 0o400}],
                },
            },
            {"name": "cm", "configMap": {"name": "c"}},
            {
                "name": "info",
                "downwardAPI": {
                    "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
                },
            },
            {
                "name": "proj",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "path": "token",
                                "audience": "aud",
                                "expirationSeconds": 600,
                            }
                        },
                        {"configMap": {"name": "c", "items": [{"key": "a", "path": "a.txt"}]}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "cpu",
                                        "resourceFieldRef": {
                                            "containerName": "main",
                                            "resource": "limits.cpu",
                                        },
                                    }
                                ]
                            }
                        },
                    ]
                },
            },
        ],
    },
}
DATA = {("Secret", "ns", "s"): {"pw": "hunter2"}, ("ConfigMap", "ns", "c"): {"a": "1", "b": "2"}}


def test_build_writes_every_volume(tmp_path: Path) -> None:
    tokens: list[tuple[str | None, int]] = []

    def token(aud: str | None, exp: int) -> tuple[str, float]:
        tokens.append((aud, exp))
        return "jwt", 1e12

    b = VolumeBuilder(
        POD, tmp_path / "pod", tmp_path / "pv", lambda k, n, m: DATA.get((k, n, m)), token
    )
    paths = b.build()
    assert paths["claim"] == tmp_path / "pv" / "ns" / "data" and paths["claim"].is_dir()
    assert paths["scratch"].is_dir()
    pw = paths["sec"] / "nested" / "pw"
    assert pw.read_text() == "hunter2" and pw.stat().st_mode & 0o777 == 0o400
    assert (paths["cm"] / "a").read_text() == "1" and (paths["cm"] / "b").read_text() == "2"
    assert (paths["info"] / "name").read_text() == "p"
    assert (paths["proj"] / "token").read_text() == "jwt" and tokens == [("aud", 600)]
    assert (paths["proj"] / "a.txt").read_text() == "1" and (
        paths["proj"] / "cpu"
    ).read_text() == "2"
    assert b.kinds["proj"] == "projected"


def test_missing_secret_is_a_config_error(tmp_path: Path) -> None:
    b = VolumeBuilder(POD, tmp_path, tmp_path, lambda k, n, m: None, lambda a, e: ("t", 0.0))
    with pytest.raises(ConfigError, match="secret 's' not found"):
        b.build()


def test_project_keys_optional_items() -> None:
    assert project_keys({"a": "1"}, [{"key": "zz", "path": "z"}], None, True, "x") == {}
    assert project_keys({"a": "1"}, None, 0o600, False, "x") == {"a": ("1", 0o600)}


def test_mount_plan(tmp_path: Path) -> None:
    paths = {"data": tmp_path / "data", "sec": tmp_path / "sec", "cfg": tmp_path / "cfg"}
    kinds = {"data": "persistentVolumeClaim", "sec": "secret", "cfg": "configMap"}
    (tmp_path / "cfg").mkdir()
    container = {
        "volumeMounts": [
            {"name": "data", "mountPath": "/data/run/out", "subPathExpr": "$(POD)"},
            {"name": "data", "mountPath": "/data", "readOnly": True},
            {"name": "sec", "mountPath": "/etc/sec"},
        ]
    }
    plan = mount_plan(container, paths, kinds, {"POD": "p1"})
    assert plan[0] == Mount(tmp_path / "data", "/data", True)
    assert Mount(tmp_path / "sec", "/etc/sec", True) in plan
    assert plan[-1] == Mount(tmp_path / "data" / "p1", "/data/run/out", False)
    assert (tmp_path / "data" / "p1").is_dir()
    with pytest.raises(ConfigError):
        mount_plan(
            {"volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../up"}]},
            paths,
            kinds,
            {},
        )
    with pytest.raises(ConfigError):
        mount_plan({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, paths, kinds, {})
