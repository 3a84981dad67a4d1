"""Schemathesis over the served OpenAPI spec: no input makes the API answer 5xx.

Bounded (`max_examples` per operation) to stay around a minute; real HTTP, real cluster.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from api.api_proc import ApiProcess

pytestmark = pytest.mark.cluster

MAX_EXAMPLES = 60


def test_no_server_errors(shared_api: ApiProcess) -> None:
    """Every operation of the spec, MAX_EXAMPLES generated requests each, none answered 5xx.

    (Driven through hypothesis directly: schemathesis' pytest plugin does not run under the
    pytest version here.)
    """
    schema = schemathesis.openapi.from_url(shared_api.url + "/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            case.call_and_validate(base_url=shared_api.url, checks=[not_a_server_error], timeout=30)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 13
    assert not failures, "\n".join(failures)
    sent = sum(
        float(line.rsplit(" ", 1)[1])
        for line in httpx.get(shared_api.url + "/metrics").text.splitlines()
        if line.startswith("kubetune_api_requests_total{")
    )
    assert sent >= operations * 10, sent
