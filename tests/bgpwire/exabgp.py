"""One ExaBGP process with one neighbour, alone in a namespace, for tests that talk to it with the
raw speaker: our entry point (calico_bgp.speaker.exabgp_run, patched) or ExaBGP's own (`patched=False`,
to show a defect is real). Its config is what the agent renders; the API process only drains.

    with lone_exabgp(ns, tmp, local="198.18.0.1", peer="198.18.0.2") as exa:
        RawSpeaker.connect("198.18.0.1", ns=ns, source="198.18.0.2") ...
        exa.cpu_seconds()
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from calico_bgp.speaker.config import render_config
from calico_bgp.speaker.neighbor import Neighbor
from calico_bgp.speaker.process import exabgp_command, exabgp_env
from lab.net import Process, sh, wait_for

LOCAL_AS, PEER_AS = 64512, 65099


class LoneExaBGP:
    def __init__(self, process: Process, log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_share(self, seconds: float) -> float:
        """Share of one core used over the next `seconds`."""
        c0, t0 = self.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        return (self.cpu_seconds() - c0) / (time.monotonic() - t0)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def lone_exabgp(ns: str, tmp: Path, local: str, peer: str, *, hold_time: int = 30,
                patched: bool = True) -> Iterator[LoneExaBGP]:
    """ExaBGP in `ns` (which must hold `local`), passive, listening on local:179 for `peer`."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    sink = tmp / "api_sink.py"
    sink.write_text("import sys\nfor line in sys.stdin:\n    sys.stdout.flush()\n")
    n = Neighbor(peer_address=peer, peer_as=PEER_AS, local_as=LOCAL_AS, local_address=local, router_id=local,
                 passive=True, hold_time=hold_time, listen_port=179)
    conf = tmp / "exabgp.conf"
    conf.write_text(render_config([n], [sys.executable, str(sink)]))
    cmd = exabgp_command() if patched else [sys.executable, "-c", "import sys; from exabgp.application.main "
                                            "import main; sys.argv[0] = 'exabgp'; sys.exit(main())"]
    log = tmp / "exabgp.log"
    log.unlink(missing_ok=True)  # output() is this run's alone
    process = Process(None, ns, [*cmd, str(conf)], log, env=exabgp_env(), cwd=tmp)
    try:
        wait_for(f"ExaBGP listening on {local}:179",
                 lambda: local in sh("ss", "-Hltn", "sport = :179", ns=ns).stdout, timeout=20, interval=0.1)
        yield LoneExaBGP(process, log)
    finally:
        process.stop(timeout=5)
