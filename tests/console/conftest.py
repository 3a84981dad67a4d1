"""Fixtures of the console tests: Debian's headless Chromium driven by Selenium, the API (and
the operator) on the local cluster, screenshots under `.local/test-output/console/`.

A missing browser, driver or selenium fails the tests with what to install: these tests
must not pass by skipping on a CI machine that lacks them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api.api_proc import ApiProcess
from kubernetes import client
from kubetune_local.cluster import LocalCluster
from kubetune_local.workspace import create_claims
from support.operator_proc import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("KUBETUNE_TEST_OUTPUT") or REPO / ".local" / "test-output") / "console"
INSTALL_HINT = (
    "the console tests need Debian's chromium and chromium-driver "
    "(`hack/install-tools.sh`, or `apt-get install -y chromium chromium-driver`) "
    "and selenium (`.venv/bin/pip install 'selenium>=4.20'`)"
)


# JS expressions the tests read the pages with
TRAIN_POINTS = "Number(document.querySelector('svg.loss-chart')?.dataset.trainPoints || 0)"
EVAL_DOTS = "document.querySelectorAll('svg.loss-chart .eval-dots circle').length"
BADGE = "document.querySelector('#job-status .badge')?.dataset.status"
POLYLINE_PAIRS = (
    "const l = document.querySelector('svg.loss-chart polyline.train-line');"
    "return l ? l.getAttribute('points').trim().split(/\\s+/) : []"
)


def _executable(env: str, *names: str) -> str | None:
    given = os.environ.get(env)
    if given:
        return given if os.access(given, os.X_OK) else None
    return next((p for p in map(shutil.which, names) if p), None)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium (WebDriver) for the session."""
    chromium = _executable("KUBETUNE_CHROMIUM", "chromium", "chromium-browser")
    driver_path = _executable("KUBETUNE_CHROMEDRIVER", "chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"{INSTALL_HINT}: {exc}", pytrace=False)
    if chromium is None or driver_path is None:
        missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver_path)) if not p]
        pytest.fail(f"{INSTALL_HINT}: not found: {', '.join(missing)}", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The browser, with a screenshot of where the test left it saved under SHOTS."""
    browser.get_log("browser")  # start with an empty console log
    yield browser
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{request.node.name}.png"))
    browser.get("about:blank")


def browser_errors(browser: Any) -> list[str]:
    """The console's errors since the last call (CSP violations, failed scripts)."""
    return [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


def wait_js(browser: Any, script: str, timeout: float = 30) -> Any:
    """Poll a JS expression (`return ...`) until it is truthy; its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(
        lambda d: d.execute_script(script), message=f"timed out waiting for: {script}"
    )


@pytest.fixture
def fake_operator(
    cluster: LocalCluster, crd: None, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator with the stand-in trainer (tests/support/fake_trainer.py)."""
    create_claims(cluster.kubeconfig, namespace)
    settings = {"NAMESPACES": [namespace], "TRAINER_DEFAULT_GPUS": "0"}
    with OperatorProcess(
        cluster.kubeconfig, settings=settings, log_path=tmp_path / "operator.log"
    ) as op:
        yield op


def _data_root(root: Path) -> str:
    """The original sample dataset under `root` (the API checks nothing else here)."""
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "frigo_training.csv").write_text('text\n"Frigo très froid"\n')
    return str(root)


@pytest.fixture
def data_api(start_api: Callable[..., ApiProcess], namespace: str, tmp_path: Path) -> ApiProcess:
    """Authentication off, the original sample dataset present."""
    return start_api(AUTH_DISABLED=True, NAMESPACE=namespace, DATA_ROOT=_data_root(tmp_path))


CONSOLE_KEY = "console-test-key-5f2a9c"
"""`keyed_api`'s one API key (its tenant: the test's namespace)."""


@pytest.fixture
def keyed_api(
    start_api: Callable[..., ApiProcess],
    namespace: str,
    k8s_api: client.ApiClient,
    tmp_path: Path,
) -> ApiProcess:
    """Authentication on: the keys Secret knows CONSOLE_KEY only (stored as its sha256)."""
    digest = hashlib.sha256(CONSOLE_KEY.encode()).hexdigest()
    client.CoreV1Api(k8s_api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="kubetune-api-keys"),
            data={digest: base64.b64encode(namespace.encode()).decode()},
        ),
    )
    return start_api(
        API_KEYS_NAMESPACE=namespace, NAMESPACE=namespace, DATA_ROOT=_data_root(tmp_path)
    )


@pytest.fixture
def custom(k8s_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_api)


def text_of(browser: Any, element_id: str) -> str:
    """An element's text as the page has it ("" when there is no such element)."""
    value = browser.execute_script(
        "return document.getElementById(arguments[0])?.textContent || ''", element_id
    )
    return str(value)
