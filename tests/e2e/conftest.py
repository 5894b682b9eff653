"""e2e hooks: a test that fails reports the logs of the cluster or lab it used beside its traceback.

The clusters are module-scoped fixtures, so a failing test does not fail the fixture that would print them."""
from __future__ import annotations

import pytest


def _log_sources(value: object) -> list:
    if isinstance(value, tuple):
        return [v for item in value for v in _log_sources(item)]
    if callable(getattr(value, "logs", None)):
        return [value]
    inner = getattr(value, "c", None)  # a fixture object wrapping a cluster (test_stability's Tor)
    return [inner] if callable(getattr(inner, "logs", None)) else []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        for name, value in getattr(item, "funcargs", {}).items():
            for source in _log_sources(value):
                report.sections.append((f"logs of {name}", source.logs()))
