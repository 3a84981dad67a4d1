"""End-to-end fixtures: the real cluster, operator, API and trainer; and the scenario report.

`stack` (tests/conftest.py) gives each test its own namespace with seeded claims (the tiny
base model, built once per session, and the sample datasets) and an `E2EStack` that starts
the operator and the API on demand and stops them afterwards. When a test fails, the
FineTuneJob status and the operator, API and trainer log tails are attached to its report.

At the end of the session `e2e scenarios: N passed, M failed` counts every test marked
`e2e` that ran in the session, in any folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from e2e.stack import E2EStack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    st = getattr(item, "funcargs", {}).get("stack")
    already = "=== namespace" in str(report.longrepr)  # a wait() timeout carries them
    if report.failed and report.when == "call" and isinstance(st, E2EStack) and not already:
        try:
            report.sections.append(("e2e diagnostics", st.diagnostics()))
        except Exception as exc:
            report.sections.append(("e2e diagnostics", f"unavailable: {exc}"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """`e2e scenarios: N passed, M failed` over every e2e-marked test of the session."""
    outcomes: dict[str, str] = {}
    for key in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(key, []):
            if "e2e" not in getattr(report, "keywords", {}):
                continue
            nodeid = report.nodeid
            if report.failed:
                outcomes[nodeid] = "failed"  # a failure in any phase fails the scenario
            elif report.skipped:
                outcomes.setdefault(nodeid, "skipped")
            elif report.when == "call" and outcomes.get(nodeid) != "failed":
                outcomes[nodeid] = "passed"
    if not outcomes:
        return
    counts = {k: sum(1 for v in outcomes.values() if v == k) for k in ("passed", "failed")}
    skipped = sum(1 for v in outcomes.values() if v == "skipped")
    line = f"e2e scenarios: {counts['passed']} passed, {counts['failed']} failed"
    if skipped:
        line += f", {skipped} skipped"
    terminalreporter.write_sep("=", "end-to-end report")
    terminalreporter.write_line(line)
    for nodeid, result in sorted(outcomes.items()):
        terminalreporter.write_line(f"  {result:7} {nodeid}")
