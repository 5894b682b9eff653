"""calico_bgp.speaker.exabgp_run: ExaBGP's entry point without its discarded debug logging. Each
probe runs in a child under both interpreters ExaBGP may run under: the agent's CPython and the
PyPy of bootstrap.sh's `.venv-exabgp-pypy` (Python 3.9: our entry point must import there)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from calico_bgp.speaker import bridge, exabgp_run
from calico_bgp.speaker.exabgp_run import is_exabgp
from calico_bgp.speaker.process import PYPY_VENV, exabgp_command, pypy_ready


def _python(name: str) -> str:
    if name == "cpython":
        return sys.executable
    if not pypy_ready():
        pytest.skip(f"ExaBGP's PyPy venv {PYPY_VENV} is not built (./bootstrap.sh setup)")
    return str(PYPY_VENV / "bin" / "python")


@pytest.fixture(params=["cpython", "pypy"])
def python(request) -> str:
    """The interpreter of a probe: each test runs under both."""
    return _python(request.param)


def test_our_exabgp_and_the_plain_one_are_recognised_and_the_agent_is_not():
    ours = b"\0".join(x.encode() for x in exabgp_command()) + b"\0/run/calico-bgp/n1/exabgp.conf\0"
    assert is_exabgp(ours)
    assert is_exabgp(b"/usr/bin/python3\0/venv/bin/exabgp\0exabgp.conf\0")
    assert not is_exabgp(b"python\0-m\0calico_bgp\0node\0run\0--name\0n1\0")
    assert not is_exabgp(b"python\0-m\0calico_bgp.speaker.bridge\0--socket\0/run/x.sock\0")
    assert not is_exabgp(b"\0".join(x.encode() for x in bridge.command("/run/x.sock")) + b"\0")


def test_exabgp_starts_without_openssl_and_says_so_when_it_was_loaded_already(python):
    """ExaBGP speaks plain TCP: with ssl blocked before its imports, ExaBGP, its reactor and asyncio
    all load (asyncio's TLS support is optional), and ssl stays out of the process."""
    code = ("import sys\n"
            "from calico_bgp.speaker import exabgp_run\n"
            "blocked = exabgp_run.without_tls(sys.modules)\n"
            "exabgp_run._quiet_debug(); exabgp_run.patch()\n"
            "import asyncio, exabgp.application.main, exabgp.application.server, exabgp.reactor.loop\n"
            "try:\n    import ssl\n    print('ssl imported')\nexcept ImportError:\n    pass\n"
            "print(blocked, '_ssl' in sys.modules, exabgp_run.without_tls(sys.modules))\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True False False"
    loaded = "import ssl, sys\nfrom calico_bgp.speaker import exabgp_run\nprint(exabgp_run.without_tls(sys.modules), sys.modules['ssl'] is ssl)\n"
    out = subprocess.run([python, "-c", loaded], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False True"  # never taken away from a process that has it


def test_the_entry_point_runs_exabgp_without_openssl(python, tmp_path):
    """What the speaker runs: a configuration error is ExaBGP's own message, no import failure."""
    out = subprocess.run([python, "-m", "calico_bgp.speaker.exabgp_run", str(tmp_path / "none.conf")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "is not an exabgp config file" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def _probe(python: str, level: str) -> str:
    code = ("import os; os.environ['exabgp_log_level'] = %r\n"
            "from calico_bgp.speaker import exabgp_run\n"
            "if os.environ['exabgp_log_level'] != 'DEBUG': exabgp_run._quiet_debug()\n"
            "from exabgp.logger import log\n"
            "from exabgp.bgp.message.update.nlri import nlri\n"
            "called = []\n"
            "quiet = log.debug.__qualname__.endswith('discard')\n"
            "print(quiet and log.debug(lambda: called.append(1) or 'x', 'parser'), called, nlri.lazynlri(1, 2, False, b'') is None)\n"
            % level)
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_debug_calls_return_at_once_unless_debug_is_asked_for(python):
    assert _probe(python, "INFO") == "None [] True"  # returned None without building the message
    assert _probe(python, "DEBUG") == "False [] False"  # ExaBGP's own debug logging is left in place


def test_the_reconnect_back_off_starts_short_and_is_bounded(python):
    """The wait before each retry after consecutive failed attempts: at once, then 0.25 s doubling to
    RETRY_MAX; a reset (a session that came up, a stop) starts again at once."""
    code = ("import time\n"
            "clock = [1000.0]\n"
            "time.monotonic = lambda: clock[0]  # the reactor's clock, moved by hand\n"
            "from calico_bgp.speaker import exabgp_run\n"
            "from exabgp.reactor.delay import Delay\n"
            "exabgp_run._bounded_retry()\n"
            "d = Delay()\n"
            "waits = []\n"
            "for _ in range(30):\n"
            "    d.increase(); waits.append(abs(round(d._time - time.time(), 1)))\n"
            "d.reset(); d.increase()\n"
            "print(max(waits), waits[:8], abs(round(d._time - time.time(), 1)))\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"{exabgp_run.RETRY_MAX:.1f} [0.0, 0.2, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0] 0.0"


def test_the_two_defect_patches_are_applied_by_our_entry_point(python):
    """What tests/integration/test_exabgp_defects.py shows against a real ExaBGP, checked here
    without root: the OpenConfirm read waits (ACTION.LATER on an empty read) and the header-error
    report accepts the call read_message makes (it raised TypeError with 9 arguments)."""
    code = ("from calico_bgp.speaker import exabgp_run\n"
            "from exabgp.reactor.peer import ACTION, Peer\n"
            "from exabgp.reactor.api.processes import Processes\n"
            "from exabgp.bgp.message import _NOP\n"
            "exabgp_run.patch()\n"
            "class Proto:\n"
            "    def read_keepalive(self):\n"
            "        yield _NOP\n"
            "class Timer:\n"
            "    def check_ka_timer(self, message): return True\n"
            "peer = Peer.__new__(Peer); peer.proto = Proto(); peer.recv_timer = Timer()\n"
            "print(list(peer._read_ka()) == [ACTION.LATER],\n"
            "      Processes.notification(object(), 'n', 'receive', 1, 1, 'x', None, b'', b'') is None)\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True True"


def test_the_speakers_exabgp_shows_malformed_attributes_to_the_agent(python):
    """main() (what the speaker runs) applies the RFC 7606 patch before ExaBGP starts."""
    code = ("import sys\n"
            "import exabgp.application.main as m\n"
            "m.main = lambda: 0\n"
            "from calico_bgp.speaker import exabgp_run\n"
            "sys.argv = ['x', '/nonexistent.conf']\n"
            "exabgp_run.main()\n"
            "from exabgp.bgp.message.update.attribute.attributes import Attributes\n"
            "from exabgp.bgp.message.update.attribute.origin import Origin\n"
            "print(Attributes.parse.__name__, Origin.unpack.__func__.__name__, exabgp_run.MALFORMED_KEY in\n"
            "      [r[2] for r in Attributes.representation.values()])\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "parse_and_report origin_of_one_octet True"
