"""`node run` re-executes itself on the C library's malloc, and does so before the CLI's imports:
only for this program's own command line, whichever way the interpreter was started."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calico_bgp.cli.system_malloc import command_args, is_node_run

ROOT = Path(__file__).resolve().parents[2]
PY = "/usr/bin/python3"


@pytest.mark.parametrize("argv", [
    [PY, "-m", "calico_bgp", "node", "run", "--name", "n1"],
    [PY, "-m", "calico_bgp", "--etcd-endpoints", "unix:///x", "node", "run"],
    [PY, "-X", "importtime", "-m", "calico_bgp", "node", "run"],
    [PY, "-u", "-W", "ignore", "/usr/local/bin/calico-bgp", "--prefix", "/p", "node", "run", "--name", "n1"],
])
def test_this_programs_node_run_is_recognised(argv):
    assert is_node_run(argv)


@pytest.mark.parametrize("argv", [
    [PY, "-m", "calico_bgp", "status", "--node", "run"],          # an option named node, a node named run
    [PY, "-m", "calico_bgp", "ipam", "show"],
    [PY, "-m", "pytest", "tests", "node", "run"],                  # another program's arguments
    [PY, "-c", "import calico_bgp.cli", "node", "run"],
    [PY, "/usr/bin/other-tool", "node", "run"],
    [PY, "-X", "calico-bgp", "-m", "other", "node", "run"],       # an option's value is not the program
    [PY],
])
def test_other_command_lines_are_not(argv):
    assert not is_node_run(argv)


def test_command_args_are_what_follows_the_program():
    assert command_args([PY, "-X", "dev", "-m", "calico_bgp", "get", "ippools"]) == ["get", "ippools"]
    assert command_args([PY, "/opt/venv/bin/calico-bgp", "status"]) == ["status"]
    assert command_args([PY, "-m", "calico_bgpx", "status"]) is None


def test_node_run_reexecutes_before_importing_the_cli():
    """With import times on, each interpreter lists what it imported: the first one re-executes
    before click (the CLI's first heavy import), so click is imported once, by the second."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "calico_bgp", "node", "run", "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=_env_without_malloc())
    assert res.returncode == 0, res.stderr
    assert "--name" in res.stdout
    imported = [line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")]
    assert imported.count("calico_bgp.cli.system_malloc") == 2  # both interpreters: the re-exec happened
    assert imported.count("click") == 1


def test_other_commands_do_not_reexecute():
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "calico_bgp", "ipam", "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=_env_without_malloc())
    assert res.returncode == 0, res.stderr
    imported = [line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")]
    assert imported.count("calico_bgp.cli.system_malloc") == 1


def _env_without_malloc() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "CALICO_BGP_SYSTEM_MALLOC")}
    env["PYTHONPATH"] = str(ROOT)
    return env
