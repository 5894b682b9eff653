"""The warm IPAM service's queue (calico_bgp/cni/warm.py serve_socket): one invocation at a time, and a
queued one whose executable is gone (hung up, or past its timeout, when it ran the operation
itself) is dropped unrun, so an ADD the runtime gave up on does not allocate after its DEL."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from calico_bgp.cni import service, warm


@pytest.fixture(autouse=True)
def _fresh_flags(monkeypatch):
    """service.SERVING and service.UNANSWERED as an executable starts (serve_socket and ask set them)."""
    monkeypatch.setattr(service, "SERVING", False)
    monkeypatch.setattr(service, "UNANSWERED", False)


@pytest.fixture
def running(tmp_path, monkeypatch):
    """serve_socket() in a thread on a socket bound under tmp_path, `handle` stubbed: it records each invocation's
    stdin and takes 0.5 s for b"A"."""
    path = str(tmp_path / "svc" / "ipam.sock")
    seen, first_started = [], threading.Event()

    def handle(_plugin, _env, data, *_where, begin=None, **_kw):
        if begin is not None and not begin():
            return None  # its executable gave up before `go`: not run
        seen.append(data)
        if data == b"A":
            first_started.set()
            time.sleep(0.5)  # the work a queued request waits behind
        return [b"0", data, b""]

    monkeypatch.setattr(warm, "handle", handle)
    monkeypatch.setattr(service, "socket_path", lambda: path)
    server, lock = warm.bind(path)

    def serve():
        try:
            warm.serve_socket(server, 0.3)
        finally:
            warm.unbind(path, server, lock)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not os.path.exists(path):  # the service listens
        assert time.monotonic() < deadline, "the service never listened"
    yield path, seen, first_started
    t.join(5)


def as_sent(environ, data, path):
    """The bytes the executable sends for an invocation (captured from service.ask on a scratch socket)."""
    scratch = path + ".scratch"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(scratch)
    server.listen(1)
    got = {}

    def take():
        conn, _ = server.accept()
        with conn:
            got["fields"] = service._recv(conn)

    t = threading.Thread(target=take)
    t.start()
    real = service.socket_path
    service.socket_path = lambda: scratch
    try:
        service.ask(environ, data)  # no reply comes: it gives up at once, as from a dead service
    finally:
        service.socket_path = real
        t.join(5)
        server.close()
    fields = got["fields"]
    return b"".join([len(fields).to_bytes(4, "big"), *(len(f).to_bytes(4, "big") + f for f in fields)])


def test_a_queued_request_whose_executable_hung_up_is_not_run(running):
    path, seen, first_started = running
    waiting = {}
    a = threading.Thread(target=lambda: waiting.update(a=service.ask({"CNI_COMMAND": "ADD"}, b"A")))
    a.start()
    assert first_started.wait(5)
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.connect(path)
    gone.sendall(as_sent({"CNI_COMMAND": "ADD"}, b"B", str(path)))
    gone.close()  # the runtime killed it, or it timed out and ran the ADD itself
    assert service.ask({"CNI_COMMAND": "ADD"}, b"C") == (0, b"C", b"")
    a.join(5)
    assert waiting["a"] == (0, b"A", b"") and seen == [b"A", b"C"]


def test_a_queued_request_past_its_executables_timeout_is_not_run(running):
    path, seen, _ = running
    late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with late:
        late.connect(path)
        service._send(late, [b"CNI_COMMAND=ADD", b"L", str(time.monotonic_ns() - 1).encode()])
        assert service.ask({"CNI_COMMAND": "ADD"}, b"C") == (0, b"C", b"")
    assert seen == [b"C"]


def test_the_executable_gives_up_before_a_runtime_would():
    assert service.CLIENT_TIMEOUT_S <= 60  # kubelet's runtime-request-timeout is 2 min


def test_a_trickling_client_holds_the_worker_no_longer_than_the_read_timeout(running, monkeypatch):
    """One overall deadline per request, not one per read: a client sending a byte every 0.1 s is dropped."""
    path, seen, _ = running
    monkeypatch.setattr(service, "READ_TIMEOUT_S", 0.5)
    stop = threading.Event()
    trickler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    trickler.connect(path)

    def trickle():
        with trickler:
            for _ in range(60):  # 6 s of it
                if stop.wait(0.1):
                    return
                try:
                    trickler.sendall(b"\0")
                except OSError:
                    return

    t = threading.Thread(target=trickle)
    t.start()
    try:
        time.sleep(0.2)  # the service is reading the trickle
        start = time.monotonic()
        assert service.ask({"CNI_COMMAND": "ADD"}, b"C") == (0, b"C", b"")
        assert time.monotonic() - start < 2.0 and seen == [b"C"]
    finally:
        stop.set()
        t.join(5)


def test_a_request_over_the_cap_is_refused_unread_and_the_executable_runs_it(running, capfd):
    path, seen, _ = running
    big = b"x" * (service.REQUEST_CAP + 1)
    assert service.ask({"CNI_COMMAND": "ADD"}, big) is None  # declined: the caller runs it in its own process
    assert seen == [] and f"over {service.REQUEST_CAP} bytes" in capfd.readouterr().err
    assert service.ask({"CNI_COMMAND": "ADD"}, b"C") == (0, b"C", b"")


def test_an_invocation_does_not_leave_its_directory_to_the_next(running, tmp_path, monkeypatch):
    """handle() enters the executable's directory; the service goes back to its own after each invocation."""
    path, seen, _ = running
    home = os.getcwd()
    dirs = []

    def handle(plugin, env, data, *_where, begin=None, **_kw):
        assert begin()
        dirs.append(os.getcwd())
        if data == b"away":
            os.chdir(tmp_path)
        return [b"0", data, b""]

    monkeypatch.setattr(warm, "handle", handle)
    assert service.ask({"CNI_COMMAND": "ADD"}, b"away") == (0, b"away", b"")
    assert service.ask({"CNI_COMMAND": "ADD"}, b"C") == (0, b"C", b"")
    assert dirs == [home, home]


def test_a_directory_the_service_cannot_enter_declines_the_invocation(tmp_path):
    """Run elsewhere, a relative log_file_path or nodename_file would mean another file: the executable runs it."""
    assert warm.handle(None, b"", b"{}", str(tmp_path / "gone").encode()) == [b"declined", b"", b""]


def test_bind_makes_the_socket_root_only_without_touching_the_process_umask(tmp_path, monkeypatch):
    """The umask is the whole agent's (its threads create files meanwhile): bind chmods its socket instead."""
    import stat

    def no_umask(_mask):
        raise AssertionError("umask changed")

    monkeypatch.setattr(os, "umask", no_umask)
    path = str(tmp_path / "svc" / "ipam.sock")
    server, lock = warm.bind(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        warm.unbind(path, server, lock)


def test_a_full_backlog_does_not_hold_the_executable(tmp_path, monkeypatch):
    """With a timeout set, a unix connect() to a full backlog fails at once (EAGAIN) instead of
    waiting: the executable runs the operation itself, so its wait stays within CLIENT_TIMEOUT_S."""
    path = str(tmp_path / "full.sock")
    monkeypatch.setattr(service, "socket_path", lambda: path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    filler.connect(path)  # the backlog is full
    try:
        start = time.monotonic()
        assert service.ask({"CNI_COMMAND": "ADD"}, b"{}") is None
        assert time.monotonic() - start < 1.0
    finally:
        filler.close()
        server.close()
