"""Which interpreter ExaBGP runs under (calico_bgp.speaker.process.exabgp_runtime), and that under
PyPy it tells the agent exactly what it tells under CPython, warmed up or not (exabgp_run.warm_up)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from calico_bgp.speaker import exabgp_run
from calico_bgp.speaker.process import PYPY_VENV, RUNTIME_ENV, Runtime, exabgp_command, exabgp_runtime, pypy_ready
from tests.unit.exabgp_decode import PEER, PEER_AS, attribute, decode, next_hop, origin, sequence, update


def fake_venv(root: Path, stamp: bool = True) -> Path:
    venv = root / ".venv-exabgp-pypy"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\nexit 3\n")
    python.chmod(0o755)
    if stamp:
        (venv / ".stamp-0123456789ab").touch()
    return venv


def test_cpython_is_the_default_even_where_the_pypy_venv_is_ready(tmp_path):
    ready = fake_venv(tmp_path)
    for env in ({}, {RUNTIME_ENV: ""}):
        rt = exabgp_runtime(env, ready)
        assert (rt.name, rt.python, rt.forced) == ("cpython", sys.executable, False)


def test_auto_uses_pypy_when_its_venv_is_ready_and_cpython_otherwise(tmp_path):
    ready = fake_venv(tmp_path / "a")
    unstamped = fake_venv(tmp_path / "b", stamp=False)  # bootstrap stopped before its import check
    rt = exabgp_runtime({RUNTIME_ENV: "auto"}, ready)
    assert (rt.name, rt.python, rt.forced) == ("pypy", str(ready / "bin" / "python"), False)
    for venv in (unstamped, tmp_path / "missing"):
        rt = exabgp_runtime({RUNTIME_ENV: "auto"}, venv)
        assert (rt.name, rt.python) == ("cpython", sys.executable)
        assert str(venv) in rt.why


def test_the_environment_forces_one_and_a_forced_pypy_that_is_missing_is_an_error(tmp_path):
    ready = fake_venv(tmp_path)
    forced = exabgp_runtime({RUNTIME_ENV: "cpython"}, ready)
    assert (forced.name, forced.python, forced.forced) == ("cpython", sys.executable, True)
    assert exabgp_runtime({RUNTIME_ENV: " PyPy "}, ready) == Runtime(
        "pypy", str(ready / "bin" / "python"), f"{RUNTIME_ENV}=pypy", forced=True)
    with pytest.raises(FileNotFoundError, match="not ready"):
        exabgp_runtime({RUNTIME_ENV: "pypy"}, tmp_path / "missing")
    with pytest.raises(ValueError, match="one of auto, pypy, cpython"):
        exabgp_runtime({RUNTIME_ENV: "jython"}, ready)


def test_the_command_runs_our_entry_point_under_the_runtimes_python():
    rt = Runtime("pypy", "/opt/x/.venv-exabgp-pypy/bin/python", "test")
    assert exabgp_command(rt) == ["/opt/x/.venv-exabgp-pypy/bin/python", "-m", "calico_bgp.speaker.exabgp_run"]
    cmdline = b"\0".join(x.encode() for x in exabgp_command(rt)) + b"\0/run/exabgp.conf\0"
    assert exabgp_run.is_exabgp(cmdline)


def test_warm_up_is_on_by_request_only():
    assert exabgp_run.warm_up_updates({}) == 0
    assert exabgp_run.warm_up_updates({exabgp_run.WARM_UP_ENV: " 25 "}) == 25
    assert exabgp_run.warm_up_updates({exabgp_run.WARM_UP_ENV: "-3"}) == 0


def test_the_synthetic_updates_are_what_a_peer_sends():
    """Announced: ORIGIN, AS_PATH, NEXT_HOP, MED and /32s inside 198.18.0.0/15; withdrawn: the same /32s."""
    body = exabgp_run._synthetic_update(0x1FFFF, 2, withdraw=False)  # wraps inside the /15
    assert body == update([origin(), sequence(PEER_AS), next_hop(PEER), attribute(0x80, 4, b"\0\0\0\0")],
                          ("198.19.255.255/32", "198.18.0.0/32"))
    assert exabgp_run._synthetic_update(5, 1, withdraw=True) == update([], withdraw=("198.18.0.5/32",))


BODIES = [
    update([origin(), sequence(PEER_AS), next_hop(PEER)], tuple(f"198.19.{i // 256}.{i % 256}/32" for i in range(900))),
    update([origin(2), sequence(PEER_AS, 65010), next_hop(PEER), attribute(0xC0, 8, b"\xfd\xe9\x00\x07")],
           ("198.19.5.0/24",), ("198.19.6.0/24",)),
    update([origin(0), origin(2), sequence(PEER_AS), next_hop(PEER)], ("198.19.7.0/24",)),  # a duplicate ORIGIN
    update([origin(), next_hop(PEER)], ("198.19.8.0/24",)),  # no AS_PATH
    update([origin(), sequence(PEER_AS), next_hop(PEER), attribute(0x80, 4, b"\0\0\1")], ("198.19.9.0/24",)),
    update([], withdraw=tuple(f"198.19.{i // 256}.{i % 256}/32" for i in range(900))),
]


def _messages(lines: list[str]) -> list[dict]:
    out = []
    for line in lines:
        msg = json.loads(line)
        for key in ("time", "host", "pid", "ppid"):  # the process's own, not the message's
            msg.pop(key, None)
        out.append(msg)
    return out


@pytest.mark.skipif(not pypy_ready(), reason=f"ExaBGP's PyPy venv {PYPY_VENV} is not built (./bootstrap.sh setup)")
def test_exabgp_under_pypy_tells_the_agent_what_it_tells_under_cpython_warm_or_cold():
    pypy = str(PYPY_VENV / "bin" / "python")
    cpython = _messages(decode(*BODIES))
    assert cpython[0]["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"][PEER][-1] == {"nlri": "198.19.3.131/32"}
    assert "rfc7606" in cpython[2]["neighbor"]["message"]["update"]["attribute"]
    assert _messages(decode(*BODIES, python=pypy)) == cpython
    assert _messages(decode(*BODIES, python=pypy, warm_up=20)) == cpython
    assert _messages(decode(*BODIES, warm_up=4)) == cpython


def test_the_pypy_venv_is_the_one_bootstrap_builds_beside_the_package():
    root = Path(__file__).resolve().parents[2]
    assert PYPY_VENV == root / ".venv-exabgp-pypy"
    assert ".venv-exabgp-pypy" in (root / "bootstrap.sh").read_text()
    assert ".venv-exabgp-pypy" in (root / ".gitignore").read_text().split()  # a symlink to it is ignored too
    assert os.environ.get(RUNTIME_ENV, "cpython") in ("auto", "pypy", "cpython", "")
