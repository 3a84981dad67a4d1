"""Env resolution and $(VAR) expansion of the node agent, as the kubelet does them."""

from __future__ import annotations

import pytest
from kubetune_local.nodeagent.envvars import (
    ConfigError,
    expand,
    expand_command,
    parse_quantity,
    resolve_env,
)

POD = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"a": "1", "b": "x y"},
        "annotations": {"k": "v"},
    },
    "spec": {"nodeName": "kubetune-local-0", "serviceAccountName": "sa"},
}
STORE = {
    ("Secret", "ns", "s"): {"pw": "hunter2"},
    ("ConfigMap", "ns", "c"): {"mode": "fast", "level": "3"},
}


def lookup(kind: str, ns: str, name: str) -> dict[str, str] | None:
    return STORE.get((kind, ns, name))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-2"),
        ("$$(A)", "$(A)"),
        ("$(MISSING)", "$(MISSING)"),
        ("$A $(A", "$A $(A"),
        ("a$$b", "a$b"),
        ("end$", "end$"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "2"}) == expected


def test_resolve_env_order_and_sources() -> None:
    container = {
        "envFrom": [
            {"configMapRef": {"name": "c"}, "prefix": "C_"},
            {"secretRef": {"name": "gone", "optional": True}},
        ],
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['b']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {
                "name": "OPT",
                "valueFrom": {"configMapKeyRef": {"name": "c", "key": "nope", "optional": True}},
            },
            {"name": "MSG", "value": "$(NAME)@$(C_mode) $(LATER)"},
            {"name": "LATER", "value": "x"},
            {
                "name": "CPU",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
        "resources": {"limits": {"memory": "1536Ki"}},
    }
    env = resolve_env(POD, container, {"BASE": "b"}, lookup)
    assert env["BASE"] == "b" and env["C_mode"] == "fast" and env["C_level"] == "3"
    assert (
        env["NAME"] == "p"
        and env["LABEL"] == "x y"
        and env["IP"] == "127.0.0.1"
        and env["SA"] == "sa"
    )
    assert env["PW"] == "hunter2" and "OPT" not in env
    assert env["MSG"] == "p@fast $(LATER)"
    assert env["CPU"] == "2"  # 1.5 MiB rounded up


def test_missing_required_refs_raise() -> None:
    with pytest.raises(ConfigError, match="secret 'nope' not found"):
        resolve_env(
            POD,
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]},
            {},
            lookup,
        )
    with pytest.raises(ConfigError, match="has no key"):
        resolve_env(
            POD,
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
            {},
            lookup,
        )
    with pytest.raises(ConfigError):
        resolve_env(POD, {"envFrom": [{"configMapRef": {"name": "nope"}}]}, {}, lookup)


def test_command_expansion() -> None:
    command, args = expand_command(
        {"command": ["echo", "$(X)"], "args": ["--y=$(Y)", "$$(X)"]}, {"X": "1", "Y": "2"}
    )
    assert command == ["echo", "1"] and args == ["--y=2", "$(X)"]


def test_parse_quantity() -> None:
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("2Gi") == 2 * 2**30
    assert parse_quantity("1G") == 1e9
    assert parse_quantity("3") == 3.0


def test_host_env_passes_host_quirks_and_makes_openmp_sleep_by_default() -> None:
    from kubetune_local.nodeagent.container import host_env

    env = host_env({"LANG": "C.UTF-8", "SECRET_TOKEN": "x", "OPENBLAS_CORETYPE": "haswell"})
    assert env == {"LANG": "C.UTF-8", "OPENBLAS_CORETYPE": "haswell", "OMP_WAIT_POLICY": "PASSIVE"}
    assert host_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {"OMP_WAIT_POLICY": "ACTIVE"}
