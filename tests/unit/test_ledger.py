"""lab.net.Ledger: what `lab down` may signal (pure bookkeeping over /proc, nothing is killed here)."""
from __future__ import annotations

import os
import subprocess
import sys

from lab.net import Ledger, _start_time


def test_a_recorded_pid_that_now_belongs_to_another_process_is_not_ours(tmp_path):
    ledger = Ledger(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        ledger.add_process(child.pid)
        ledger.add("pids", [os.getpid(), (_start_time(os.getpid()) or 0) + 1])  # "reused": started at another time
        ledger.add("pids", [2 ** 22 + 7, 123])  # gone: a group of ours may outlive its leader
        assert Ledger(tmp_path)._ours() == [child.pid, 2 ** 22 + 7]  # read back from the file
    finally:
        child.kill()
        child.wait()
