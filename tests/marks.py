"""What a test needs of the machine, as skip marks, and the one kind of skip CI accepts.

Under CI=true (`.ci/run`, `./bootstrap.sh test`) a skip for something missing (root, a binary, a
built object) fails the run: CI installs everything, so such a skip hides a broken set-up
(tests/conftest.py turns it into a failure). A test that does not apply to one of its parameters
(an XDP-only case run for the nftables mode) says so with `not_applicable(...)`, which stays a skip.
"""
from __future__ import annotations

import os
from typing import NoReturn

import pytest

NOT_APPLICABLE = "not applicable: "

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")


def not_applicable(why: str) -> NoReturn:
    """Skip a case that has nothing to test for this parameter; CI counts it as a skip, not a failure."""
    __tracebackhide__ = True  # the skip is reported at the caller's line
    pytest.skip(NOT_APPLICABLE + why)


def skip_fails_in_ci(reason: str) -> bool:
    """Whether a skip with this reason fails a CI run: every skip but a not-applicable one."""
    return not reason.startswith(NOT_APPLICABLE)
