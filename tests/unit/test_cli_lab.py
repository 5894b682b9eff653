"""`calico-bgp lab check|down|status|chaos` find the lab as containerlab does: `-t FILE` / `--topo FILE`
names it by the topology's `name:`, beside `--name` (which wins, as containerlab's --name) and `--run-dir`."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from calico_bgp.cli import main as cli
from calico_bgp.cli.lab import _run_dir
from lab.state import run_dir_for

ROOT = Path(__file__).resolve().parents[2]
NAME = f"cbt{os.getpid()}"  # a lab nobody runs


@pytest.fixture
def topo(tmp_path) -> Path:
    path = tmp_path / "t.clab.yml"
    path.write_text(f"name: {NAME}\ntopology:\n  nodes:\n    n1: {{kind: linux, image: alpine}}\n")
    return path


@pytest.mark.parametrize("flag", ["-t", "--topo"])
@pytest.mark.parametrize("command", [["status"], ["check", "--timeout", "0"], ["chaos", "agent-kill"]])
def test_a_command_given_the_topology_reads_the_lab_its_name_names(topo, flag, command):
    res = CliRunner().invoke(cli, ["lab", *command, flag, str(topo)])
    assert res.exit_code == 1, res.output
    assert f"no lab is up in {run_dir_for(NAME)}" in res.output


def test_down_given_the_topology_takes_down_the_lab_its_name_names(topo):
    res = CliRunner().invoke(cli, ["lab", "down", "-t", str(topo)])
    assert res.exit_code == 0, res.output
    assert f"nothing to take down: {run_dir_for(NAME)} does not exist" in res.output


def test_name_wins_over_the_topology_and_run_dir_over_both(topo, tmp_path):
    res = CliRunner().invoke(cli, ["lab", "status", "-t", str(topo), "--name", f"{NAME}x"])
    assert f"no lab is up in {run_dir_for(NAME + 'x')}" in res.output
    res = CliRunner().invoke(cli, ["lab", "status", "-t", str(topo), "--run-dir", str(tmp_path / "elsewhere")])
    assert f"no lab is up in {tmp_path / 'elsewhere'}" in res.output


def test_a_shipped_topology_names_its_lab():
    # resolved only: a command here could reach a rack lab someone else has up
    for name in ("rack", "rr", "mesh"):
        assert _run_dir(None, None, str(ROOT / "containerlab" / f"{name}.clab.yml")) == run_dir_for(name)


def test_a_topology_that_does_not_parse_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.clab.yml"
    bad.write_text("name: [\n")
    res = CliRunner().invoke(cli, ["lab", "status", "-t", str(bad)])
    assert res.exit_code == 2, res.output
    assert str(bad) in res.output or "bad.clab.yml" in res.output


def test_a_missing_topology_file_is_a_usage_error(tmp_path):
    res = CliRunner().invoke(cli, ["lab", "check", "-t", str(tmp_path / "none.clab.yml")])
    assert res.exit_code == 2
    assert "none.clab.yml" in res.output
