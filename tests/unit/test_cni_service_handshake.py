"""The warm process's two-step reply and its limits (calico_bgp/cni/service.py): an invocation runs
there only once its executable answered `go` to `started`, and from then on the executable never runs
it itself (an ADD done twice, the second's attach deleting the first's veth, left the pod an address
its own release freed); a watchdog ends an invocation at its executable's deadline; a process that
waited in vain once does not wait again; the root filesystem is compared; the reply goes before
the log lines; an invocation leaves no directory or log file behind."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

from calico_bgp.cni import delegate, service, warm
from calico_bgp.cni.error import IO_FAILURE, TRY_AGAIN_LATER, CNIError
from tests.unit.test_import_rules import ROOT


@pytest.fixture(autouse=True)
def _fresh_flags(monkeypatch):
    monkeypatch.setattr(service, "SERVING", False)
    monkeypatch.setattr(service, "UNANSWERED", False)


def serving(path, monkeypatch, handle, idle=1.0):
    """serve_socket() in a thread on `path` with `handle` in place of the real one; joined and unbound by the caller's stop()."""
    monkeypatch.setattr(warm, "handle", handle)
    monkeypatch.setattr(service, "socket_path", lambda: path)
    server, lock = warm.bind(path)
    t = threading.Thread(target=warm.serve_socket, args=(server, idle), daemon=True)
    t.start()

    def stop():
        t.join(10)
        warm.unbind(path, server, lock)
    return stop


def test_an_invocation_slower_than_the_executables_wait_is_answered_not_run_twice(tmp_path, monkeypatch):
    """Started, it is the warm process's: the executable waits for its reply past CLIENT_TIMEOUT_S
    (it used to give up and run the same ADD itself while the warm process went on with it)."""
    runs = []

    def handle(_plugin, _env, data, *_where, begin=None, **_kw):
        if not begin():
            return None
        runs.append(data)
        time.sleep(0.6)
        return [b"0", data, b""]

    stop = serving(str(tmp_path / "s" / "ipam.sock"), monkeypatch, handle, idle=0.3)
    monkeypatch.setattr(service, "CLIENT_TIMEOUT_S", 0.3)
    monkeypatch.setattr(service, "START_MARGIN_S", 0.0)
    try:
        assert service.ask({"CNI_COMMAND": "ADD"}, b"A") == (0, b"A", b"")
        assert runs == [b"A"] and not service.UNANSWERED
    finally:
        stop()


def test_when_the_executable_falls_back_the_warm_process_never_ran_it(tmp_path, monkeypatch):
    """Queued behind a slow one past its executable's wait (the early checks turned off: only the
    handshake stands between them), the request is not run: its `started` finds no executable."""
    runs, first = [], threading.Event()

    def handle(_plugin, _env, data, *_where, begin=None, **_kw):
        if not begin():
            return None
        runs.append(data)
        if data == b"A":
            first.set()
            time.sleep(0.6)
        return [b"0", data, b""]

    monkeypatch.setattr(service, "START_MARGIN_S", -60.0)
    monkeypatch.setattr(warm, "_hung_up", lambda _conn: False)
    stop = serving(str(tmp_path / "s" / "ipam.sock"), monkeypatch, handle, idle=0.3)
    try:
        a = threading.Thread(target=service.ask, args=({"CNI_COMMAND": "ADD"}, b"A"))
        a.start()
        assert first.wait(5)
        monkeypatch.setattr(service, "CLIENT_TIMEOUT_S", 0.2)
        assert service.ask({"CNI_COMMAND": "ADD"}, b"B") is None  # it runs B itself
        assert service.UNANSWERED
        a.join(5)
        monkeypatch.setattr(service, "CLIENT_TIMEOUT_S", 5.0)
        assert service.ask({"CNI_COMMAND": "ADD"}, b"C") == (0, b"C", b"")  # B was dropped before C
        assert runs == [b"A", b"C"]
    finally:
        stop()


def test_a_warm_process_that_ends_after_started_is_an_error_to_retry_not_a_rerun(tmp_path, monkeypatch):
    path = str(tmp_path / "dies.sock")
    monkeypatch.setattr(service, "socket_path", lambda: path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def die_midway():
        conn, _ = server.accept()
        with conn:
            service._recv(conn)
            service._send(conn, [b"started"])
            assert service._recv(conn) == [b"go"]  # then it dies: the connection ends without a reply

    t = threading.Thread(target=die_midway)
    t.start()
    try:
        code, out, err = service.ask({"CNI_COMMAND": "ADD"}, b'{"cniVersion": "1.1.0"}')
    finally:
        t.join(5)
        server.close()
    error = json.loads(out)
    assert code == 1 and error["code"] == TRY_AGAIN_LATER and error["cniVersion"] == "1.1.0"
    assert "not run again" in error["msg"] and b"warm process" in err and not service.UNANSWERED


HUNG = """
import sys, time
sys.path[:0] = [{root!r}]
from calico_bgp.cni import service, warm
def handle(_plugin, _env, data, *_where, begin=None, **_kw):
    if begin():
        time.sleep(60)  # a hung invocation: a delegate, a netlink call, a lock
warm.handle = handle
service.START_MARGIN_S = 0.0  # a 1 s wait: started at once
server, lock = warm.bind({path!r})
print("ready", flush=True)
warm.serve_socket(server, 30.0, watchdog=True)
"""


def test_the_watchdog_ends_an_invocation_at_its_executables_deadline(tmp_path, monkeypatch):
    path = str(tmp_path / "w" / "ipam.sock")
    proc = subprocess.Popen([sys.executable, "-c", HUNG.format(root=str(ROOT), path=path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        monkeypatch.setattr(service, "socket_path", lambda: path)
        monkeypatch.setattr(service, "CLIENT_TIMEOUT_S", 1.0)
        start = time.monotonic()
        code, out, _err = service.ask({"CNI_COMMAND": "ADD"}, b"{}")
        took = time.monotonic() - start
        assert code == 1 and json.loads(out)["code"] == TRY_AGAIN_LATER
        assert took < 1.0 + service.COMMITTED_WAIT_S - 1  # its end came first, not the executable's last wait
        assert proc.wait(5) == -signal.SIGALRM  # the agent restarts it with back-off
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_an_execd_delegate_gets_only_what_is_left_of_the_deadline(tmp_path, monkeypatch):
    slow = tmp_path / "slow-ipam"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setattr(delegate, "DEADLINE_NS", time.monotonic_ns() + 300_000_000)
    start = time.monotonic()
    with pytest.raises(CNIError) as err:
        delegate.delegate("DEL", "slow-ipam", b"{}", {"CNI_PATH": str(tmp_path)})
    assert err.value.code == IO_FAILURE and "no answer within" in str(err.value)
    assert time.monotonic() - start < 5


STUCK = """
import io, os, socket, sys, threading, time
sys.path[:0] = [{root!r}]
from calico_bgp.cni import service
path = {path!r}
service.socket_path = lambda: path
service.CLIENT_TIMEOUT_S = 1.0
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(8)
conns = []
def take():
    while True:
        conns.append(srv.accept()[0])  # a stuck warm process: reads nothing, answers nothing
threading.Thread(target=take, daemon=True).start()
os.environ.update(CNI_COMMAND="DEL", CNI_CONTAINERID="c1", CNI_IFNAME="eth0", CNI_NETNS="", CNI_PATH={bin!r})
sys.stdin = io.TextIOWrapper(io.BytesIO({conf!r}))
waited = []
real_ask = service.ask
def ask(*a, **kw):
    start = time.monotonic()
    try:
        return real_ask(*a, **kw)
    finally:
        waited.append(time.monotonic() - start)
service.ask = ask
try:
    service.cni_main()
except SystemExit as e:
    print(e.code, sum(waited), len(conns), file=sys.__stderr__, flush=True)
"""


def test_a_del_waits_once_on_a_warm_process_that_never_answers(tmp_path):
    """calico-bgp-cni runs the DEL itself after one wait, and its IPAM's DEL does not wait again (the
    time in service.ask counted: the DEL's own work in process is the machine's)."""
    (tmp_path / "bin").mkdir()
    ipam = tmp_path / "bin" / "calico-bgp-ipam"
    ipam.write_text("#!/bin/sh\nexit 0\n")
    ipam.chmod(0o755)
    conf = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "calico-bgp-cni",
                       "etcd_endpoints": "http://127.0.0.1:1", "ipam": {"type": "calico-bgp-ipam"}}).encode()
    code = STUCK.format(root=str(ROOT), path=str(tmp_path / "stuck.sock"), bin=str(tmp_path / "bin"), conf=conf)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    _exit, waited, connections = done.stderr.strip().splitlines()[-1].split()
    assert int(connections) == 1, done.stderr
    assert float(waited) < 1.2 * 1.0, done.stderr  # one wait of CLIENT_TIMEOUT_S; it was two (2 s and more)


def test_another_root_filesystem_is_declined():
    """Its files (log file, nodename file, etcd certificates, CNI_PATH, MTU file) would be others here.
    The root directory, not the mount namespace, is compared: `ip netns exec` runs each executable in
    a mount namespace of its own with the same files, and a strict comparison declined every one."""
    assert warm.handle(None, b"", b"{}", None, None, b"0:0") == [b"declined", b"", b""]


def test_the_executable_sends_its_root_directory(tmp_path):
    from tests.unit.test_cni_service import as_sent

    sent = as_sent({"CNI_COMMAND": "ADD"}, b"{}", str(tmp_path / "x.sock"))
    assert sent.endswith(service.netns_id(b"/"))


def fake_plugin(handlers):
    return types.SimpleNamespace(PLUGIN="calico-bgp-test", HANDLERS=handlers)


def env_of(**kw):
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "", "CNI_PATH": "/x"}
    env.update(kw)
    return b"\0".join(f"{k}={v}".encode() for k, v in env.items())


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_an_invocation_leaves_no_log_file_open_and_no_directory_behind(tmp_path, root_logging):
    conf = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "calico-bgp-test",
                       "log_file_path": "plugin.log"}).encode()
    home = os.getcwd()

    def delete(_req):
        logging.getLogger("cni.test").warning("deleting")

    code, _out, _err = warm.handle(fake_plugin({"DEL": delete}), env_of(), conf, str(tmp_path).encode())
    log_file = tmp_path / "plugin.log"
    assert code == b"0" and "deleting" in log_file.read_text()  # relative to the executable's directory
    assert os.getcwd() == home
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")]
    assert str(log_file) not in fds


def test_a_relative_netns_is_seen_from_the_executables_directory(tmp_path):
    (tmp_path / "ns").write_text("")
    seen = service.netns_id(str(tmp_path / "ns"))
    ran = []

    def begin():
        ran.append(True)
        return False  # the executable gave up: nothing more is run
    assert warm.handle(None, env_of(CNI_NETNS="ns"), b"{}", str(tmp_path).encode(), seen, begin=begin) is None
    assert ran == [True]


def test_the_reply_goes_even_when_the_log_lines_cannot(tmp_path, monkeypatch, root_logging):
    """A broken stderr (the agent's pipe) loses the copied log lines, not the reply for work done."""
    class Broken:
        def write(self, _text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    def delete(_req):
        print("note", file=sys.stderr)

    module = types.ModuleType("calico_bgp_test_plugin")
    module.PLUGIN, module.HANDLERS, module.abandoned = "calico-bgp-test", {"DEL": delete}, lambda: False
    monkeypatch.setitem(sys.modules, "calico_bgp_test_plugin", module)
    monkeypatch.setattr(service, "PLUGINS", {b"calico-bgp-ipam": "calico_bgp_test_plugin"})
    path = str(tmp_path / "s" / "ipam.sock")
    monkeypatch.setattr(service, "socket_path", lambda: path)
    server, lock = warm.bind(path)
    t = threading.Thread(target=warm.serve_socket, args=(server, 0.2), daemon=True)
    monkeypatch.setattr(sys, "stderr", Broken())
    t.start()
    try:
        env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "", "CNI_PATH": "/x"}
        code, _out, err = service.ask(env, b'{"cniVersion": "1.1.0", "name": "n", "type": "calico-bgp-test"}')
        assert code == 0 and b"note" in err
    finally:
        t.join(10)
        warm.unbind(path, server, lock)


def test_serve_socket_leaves_serving_off_when_it_returns(tmp_path):
    """In-process callers after it (tests, a process that stopped serving) ask the warm process again."""
    server, lock = warm.bind(str(tmp_path / "s" / "ipam.sock"))
    try:
        warm.serve_socket(server, 0.01)
        assert service.SERVING is False
    finally:
        warm.unbind(str(tmp_path / "s" / "ipam.sock"), server, lock)
