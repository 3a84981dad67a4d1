"""Fixtures of the API tests: an API on the test's namespace, status patching (the CRD and
`start_api` come from tests/conftest.py)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubetune_crd.resource import GROUP, PLURAL, VERSION
from kubetune_local.testing import temporary_namespace

from api.api_proc import ApiProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local data root holding the original API's sample at its path."""
    root = tmp_path_factory.mktemp("data-root")
    (root / "data").mkdir()
    (root / "data" / "frigo_training.csv").write_text(
        'text\n"Frigo très froid, compresseur fait bruit"\n"Fuite d\'eau sous le frigo"\n'
    )
    (root / "data" / "frigo_training.jsonl").write_text('{"text": "Fuite d\'eau"}\n')
    return root


@pytest.fixture
def api(start_api: Callable[..., ApiProcess], namespace: str, data_root: Path) -> ApiProcess:
    """An API with authentication off, acting on the test's namespace."""
    return start_api(
        AUTH_DISABLED=True,
        NAMESPACE=namespace,
        DATA_ROOT=str(data_root),
        CHECK_DATASET_EXISTS=True,
    )


@pytest.fixture
def other_namespace(cluster: Any) -> Iterator[str]:
    with temporary_namespace(cluster) as name:
        yield name


@pytest.fixture
def custom(k8s_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_api)


def list_jobs(custom: client.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["items"]
    return items


def patch_status(
    custom: client.CustomObjectsApi, namespace: str, name: str, status: dict[str, Any]
) -> None:
    """Write a status as the operator would (status subresource)."""
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}
    )


def succeeded_status(model_name: str, alias: str, size_bytes: int, created: str) -> dict[str, Any]:
    return {
        "phase": "Succeeded",
        "completionTime": created,
        "progress": {"fraction": 1.0, "step": 30, "totalSteps": 30, "loss": 1.25},
        "model": {
            "name": model_name,
            "path": f"models/{model_name}",
            "uri": f"pvc://kubetune-models/models/{model_name}",
            "sizeBytes": size_bytes,
            "baseModel": "/var/lib/kubetune/models/base/kubetune-tiny",
            "baseModelAlias": alias,
            "created": created,
        },
        "metrics": {"trainLoss": 1.25, "evalLossBefore": 2.0, "evalLossAfter": 1.5},
    }


def key_entry(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


TENANT_KEYS = ("key-a", "key-b")
"""`tenant_api`'s keys: key-a acts on `namespace`, key-b on `other_namespace`."""


@pytest.fixture
def tenant_api(
    start_api: Callable[..., ApiProcess],
    namespace: str,
    other_namespace: str,
    data_root: Path,
    k8s_api: client.ApiClient,
) -> ApiProcess:
    """An API with authentication on and two tenants (TENANT_KEYS) in the keys Secret."""
    keys = dict(zip(TENANT_KEYS, (namespace, other_namespace), strict=True))
    client.CoreV1Api(k8s_api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="kubetune-api-keys"),
            data={key_entry(k): base64.b64encode(ns.encode()).decode() for k, ns in keys.items()},
        ),
    )
    return start_api(API_KEYS_NAMESPACE=namespace, NAMESPACE=namespace, DATA_ROOT=str(data_root))


@pytest.fixture(scope="module")
def shared_namespace(cluster: Any) -> Iterator[str]:
    """A namespace for a module's read-only and bad-input tests (nothing may be created)."""
    with temporary_namespace(cluster) as name:
        yield name


@pytest.fixture(scope="module")
def shared_api(
    cluster: Any, crd: None, shared_namespace: str, data_root: Path
) -> Iterator[ApiProcess]:
    proc = ApiProcess(
        cluster.kubeconfig,
        {
            "AUTH_DISABLED": True,
            "NAMESPACE": shared_namespace,
            "DATA_ROOT": str(data_root),
            "CHECK_DATASET_EXISTS": True,
        },
    ).start()
    try:
        yield proc
    finally:
        proc.stop()
