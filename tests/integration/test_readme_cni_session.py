"""The README's by-hand CNI session runs as written: its ```sh block, under `set -euo pipefail`, against
an etcd of its own, with the plugins in a CNI_PATH of the test's. It runs in a private mount
namespace whose /run/netns is a fresh tmpfs, so its `node1` and `pod1` are its own (no clash with
anything on the machine) and go away with it even if the session fails half way."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.etcd import EtcdServer
from lab.workload import install_plugins
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.root,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (./bootstrap.sh setup)"),
              pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")]
ROOT = Path(__file__).resolve().parents[2]
MARK = "# by hand: a workload through calico-bgp-cni"


def session() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"^```sh\n" + re.escape(MARK) + r"\n(.*?)^```", text, re.M | re.S)
    assert found, f"README.md has no ```sh block starting with {MARK!r}"
    return found.group(1)


def test_the_readme_cni_session_runs_as_written(tmp_path):
    os.makedirs("/run/netns", exist_ok=True)
    script = tmp_path / "session.sh"
    script.write_text("set -euo pipefail\nmount -t tmpfs cb-readme-netns /run/netns\n" + session())
    with EtcdServer() as etcd:
        env = {**os.environ, "ETCD": etcd.unix_url, "CNI_PATH": str(install_plugins(tmp_path / "bin")),
               "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "PYTHONPATH": str(ROOT)}
        res = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", str(script)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = res.stdout
    assert res.returncode == 0, f"exit {res.returncode}\n--- stdout\n{out}\n--- stderr\n{res.stderr}"
    assert '"name": "calipod1"' in out and '"198.19.200.' in out          # ADD's result
    assert "default via 169.254.1.1 dev eth0" in out                      # the workload's routes
    assert re.search(r"198\.19\.200\.\d+ dev calipod1 scope link", out)    # the node's host route
    assert "1 received" in out                                             # the ping, routed by node1
    assert re.search(r"^0$", out, re.M)                                    # no veth left after DEL
    assert not (tmp_path / "cbnet.conf").exists()
