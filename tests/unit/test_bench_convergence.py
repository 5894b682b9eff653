"""bench/convergence.py's source: one routing table per receiver slot, so announcing to one receiver
never reaches (or hides routes from) another running beside it."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.convergence import node_ip, src_conf, src_ip, static_name


def test_each_slot_has_its_own_table_statics_and_session():
    conf = src_conf([2, 3], slots=2)
    for slot in range(2):
        assert f"ipv4 table t{slot};" in conf
        for n in (2, 3):
            head = f"protocol static {static_name(slot, n)} {{\n  disabled;\n  ipv4 {{ table t{slot}; }};\n"
            assert head in conf
        assert f"  local {src_ip(slot)} as 65001;\n  neighbor {node_ip(slot)} as 64512;" in conf
        assert f"ipv4 {{ table t{slot}; import none; export where source = RTS_STATIC; next hop self; }};" in conf
    assert conf.count("route 198.18.64.0/32 blackhole;") == 4  # each slot holds every size
    assert len({src_ip(s) for s in range(3)} | {node_ip(s) for s in range(3)}) == 6


@pytest.mark.skipif(shutil.which("bird") is None, reason="needs BIRD 2 to parse the configuration")
def test_bird_accepts_the_source_configuration(tmp_path: Path):
    path = tmp_path / "src.conf"
    path.write_text(src_conf([2, 3], slots=3))
    res = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
