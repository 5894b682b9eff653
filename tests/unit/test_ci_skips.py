"""Under CI=true a test skipped for something missing (root, a binary, a built object) fails the run;
a case marked not applicable stays a skip; outside CI both are skips."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.marks import NOT_APPLICABLE, skip_fails_in_ci

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = '''
import shutil
import pytest
from tests.marks import not_applicable

@pytest.mark.skipif(shutil.which("no-such-binary-here") is None, reason="needs no-such-binary-here")
def test_needs_a_binary():
    pass

def test_needs_an_object():
    pytest.skip("filter.o is missing: build it")

@pytest.mark.parametrize("mode", ["xdp", "nft"])
def test_xdp_only(mode):
    if mode != "xdp":
        not_applicable("XDP only")

def test_plain():
    pass
'''


def run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(ROOT)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_under_ci_a_missing_thing_fails_and_not_applicable_stays_a_skip(tmp_path):
    res = run(tmp_path, "true")
    assert res.returncode == 1, res.stdout
    # a skipif mark is decided at set-up, so that one is an error; a skip in the body a failure
    assert "1 failed, 2 passed, 1 skipped, 1 error" in res.stdout, res.stdout
    assert "test_needs_a_binary - skipped under CI=true" in res.stdout and "needs no-such-binary-here" in res.stdout
    assert "test_needs_an_object - skipped under CI=true" in res.stdout
    assert "SKIPPED [1]" in res.stdout and "not applicable: XDP only" in res.stdout


@pytest.mark.parametrize("ci", [None, "false", "1"])
def test_outside_ci_every_skip_is_a_skip(tmp_path, ci):
    res = run(tmp_path, ci)
    assert res.returncode == 0, res.stdout
    assert "2 passed, 3 skipped" in res.stdout, res.stdout


def test_which_reasons_fail():
    assert skip_fails_in_ci("needs root to create network namespaces")
    assert skip_fails_in_ci("nft is not installed")
    assert not skip_fails_in_ci(NOT_APPLICABLE + "XDP ownership only")
