"""An opt-in warm process for calico-bgp-ipam: `"ipam_service": true` in the network config.

A plugin is exec'd per container operation, and most of an IPAM operation's cost is the
interpreter loading attrs, cattrs, the IPAM library and the resource model; the operation itself
is a few etcd round trips. With `ipam_service`, the executable (this module, stdlib only) hands
the invocation (its CNI_* environment and stdin) to a service process over a unix socket and
prints what the service answers (length-prefixed byte fields on the raw `_socket`: the `json` and
`socket` modules, with the `re` and `enum` they load, were a third of the executable's CPU); the service runs the same skeleton and handlers, one invocation
at a time, and exits after `ipam_service` seconds idle (true: 60); a queued invocation whose
executable hung up or waited past its timeout (it then runs the operation itself) is dropped unrun,
so an ADD the runtime gave up on does not allocate after its DEL. When no service answers, the
executable starts one in the background and does this operation itself; when the service goes
away mid-operation, it does it itself too (every operation is idempotent: a repeated ADD returns
the handle's addresses, DEL and GC release what is still there). One service per interpreter,
package version and network namespace; its socket is in a root-only directory. A service that
answers an invocation whose config does not ask for it (`"ipam_service": false` next to a running
one) declines, and the executable runs it itself.
"""
from __future__ import annotations

import _socket
import io
import os
import sys
import time
import zlib

SERVICE_DIR = "/run/calico-bgp"
DEFAULT_IDLE_S = 60.0
# how long the executable waits for the service before running the operation itself: well under a
# runtime's own timeout (kubelet's runtime-request-timeout: 2 min), so the runtime never gives up first;
# the service drops a request it reaches after this, or whose executable hung up, unrun
CLIENT_TIMEOUT_S = 30.0
# a new version of any module an invocation loads (under calico_bgp/) gets a new service; the old one
# leaves when idle: every module of these packages, and these files of others
_DIRS = ("cni", "datastore", "../ipam")
_FILES = ("__init__.py", "resources/__init__.py", "resources/codec.py", "resources/selector.py",
          "../dataplane/__init__.py", "../dataplane/logfmt.py")

def ipam_main() -> None:
    """The calico-bgp-ipam executable: through the service when the config asks for one."""
    command = os.environ.get("CNI_COMMAND", "")
    if command in ("ADD", "DEL", "CHECK", "GC", "STATUS") and not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        if b'"ipam_service"' in data:  # JSON is parsed only when no service answers (the service checks)
            answered, code = call(dict(os.environ), data)
            if code is not None:
                sys.exit(code)
            idle = wanted(data)
            if idle and not answered:
                spawn(socket_path(), idle)
        from calico_bgp.cni import ipam_plugin, skel

        sys.exit(skel.run(ipam_plugin.PLUGIN, ipam_plugin.HANDLERS, stdin=io.BytesIO(data)))
    from calico_bgp.cni import ipam_plugin

    ipam_plugin.main()


def wanted(data: bytes) -> float:
    """The idle timeout the config asks for (`ipam_service`: true or seconds), 0 when it asks for none."""
    import json

    try:
        value = json.loads(data).get("ipam_service")
    except (ValueError, AttributeError):
        return 0.0  # the skeleton reports the bad config
    if value is True:
        return DEFAULT_IDLE_S
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return 0.0


def socket_path() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    key = [sys.executable, root, str(os.stat("/proc/self/ns/net").st_ino), str(os.getuid()), *code_stamps(root)]
    raw = " ".join(key).encode()  # two CRCs, not hashlib: loading OpenSSL would cost more than the call
    return os.path.join(SERVICE_DIR, f"ipam-{zlib.crc32(raw):08x}{zlib.crc32(raw[::-1]):08x}.sock")


def code_stamps(root: str) -> list[str]:
    """The mtime and size of every module a service loads (stat only, no reads): each .py of
    _DIRS (a module added or removed changes the list) and _FILES, relative to calico_bgp/."""
    out = []
    for d in _DIRS:
        try:
            with os.scandir(os.path.join(root, d)) as entries:
                found = sorted((e.name, e.stat()) for e in entries if e.name.endswith(".py"))
        except OSError:
            found = []
        out += [f"{d}/{name}:{st.st_mtime_ns}:{st.st_size}" for name, st in found] or [f"{d}:-"]
    for f in _FILES:
        try:
            st = os.stat(os.path.join(root, f))
            out.append(f"{f}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            out.append(f"{f}:-")
    return out

def call(environ: dict[str, str], data: bytes) -> tuple[bool, int | None]:
    """Whether a service answered, and the exit code after it ran the invocation (its output
    printed); None when this process must run it (no service answers, it went away mid-operation,
    or it declined: the config does not ask for it)."""
    answered, reply = ask(environ, data)
    if reply is None:
        return answered, None
    rc, out, err = reply
    sys.stderr.buffer.write(err)
    sys.stderr.flush()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return True, rc


def ask(environ: dict[str, str], data: bytes) -> tuple[bool, tuple[int, bytes, bytes] | None]:
    """Whether a service answered, and its reply (exit code, stdout, stderr) to the invocation; None
    when the caller must run it. calico-bgp-cni, which runs this IPAM in its own process, asks this
    way: its stdout is its own result."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(CLIENT_TIMEOUT_S)
        try:
            sock.connect(socket_path())
        except OSError:
            return False, None
        env = b"\0".join(f"{k}={v}".encode("utf-8", "surrogateescape") for k, v in environ.items())
        deadline = time.monotonic_ns() + int(CLIENT_TIMEOUT_S * 1e9)  # CLOCK_MONOTONIC: one clock host-wide
        _send(sock, [env, data, str(deadline).encode()])
        code, out, err = _recv(sock)
        if code == b"declined":
            return True, None
        return True, (int(code), out, err)
    except (OSError, ValueError):
        return True, None  # the service went away: this process does it (the operations are idempotent)
    finally:
        sock.close()


def spawn(path: str, idle: float) -> None:
    """A service in the background, in its own session, for the next invocations."""
    import subprocess

    code = f"import sys; sys.path[:0] = {sys.path!r}; from calico_bgp.cni.service import serve; serve({path!r}, {idle!r})"
    try:
        subprocess.Popen([sys.executable, "-S", "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    except OSError:
        pass  # no service: every invocation runs in its own process, as without one


def serve(path: str, idle: float) -> None:
    """Answer invocations on `path` one at a time until `idle` seconds pass without one."""
    import fcntl
    import select
    import socket

    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(os.path.dirname(path), ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return  # another service answers there already
        except OSError:
            pass
        finally:
            probe.close()
        if os.path.exists(path):
            os.unlink(path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            server.bind(path)
        finally:
            os.umask(old)
        server.listen(64)
        bound = os.stat(path).st_ino  # the file this service made: removed on the way out, not a successor's
    finally:
        os.close(lock)
    from calico_bgp.cni import ipam_plugin  # the imports every invocation would otherwise pay

    try:
        while select.select([server], [], [], idle)[0]:
            conn, _ = server.accept()
            with conn:
                try:
                    conn.settimeout(30)
                    env, data, deadline = _recv(conn)
                    if time.monotonic_ns() > int(deadline) or _hung_up(conn):
                        continue  # its executable gave up and ran it itself (or was killed): not run twice
                    _send(conn, handle(ipam_plugin, env, data))
                except (OSError, ValueError):
                    continue
    finally:
        try:
            if os.stat(path).st_ino == bound:
                os.unlink(path)
        except OSError:
            pass
        server.close()


def _hung_up(conn: object) -> bool:
    """Whether the executable closed its end while its request waited in the queue: it sends
    nothing after the request, so its end readable (EOF) or hung up means it is gone."""
    import select

    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLRDHUP)
    return any(ev & (select.POLLIN | select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0))


def handle(ipam_plugin: object, env: bytes, data: bytes) -> list[bytes]:
    """One invocation, as the executable would have run it: [exit code, stdout, stderr]; [b"declined"]
    when its config does not ask for the service."""
    from calico_bgp.cni import skel

    import logging

    if not wanted(data):
        return [b"declined", b"", b""]
    environ = dict(kv.decode("utf-8", "surrogateescape").partition("=")[::2] for kv in env.split(b"\0") if kv)
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stderr
    sys.stderr = err
    logging.getLogger().handlers.clear()  # the last invocation's handler writes to its own stderr
    try:
        code = skel.run(ipam_plugin.PLUGIN, ipam_plugin.HANDLERS, environ=environ,  # type: ignore[attr-defined]
                        stdin=io.BytesIO(data), stdout=out)
    finally:
        sys.stderr = saved
    return [str(code).encode(), out.getvalue().encode("utf-8", "surrogateescape"),
            err.getvalue().encode("utf-8", "surrogateescape")]


def _send(sock: "_socket.socket", fields: list[bytes]) -> None:
    """Length-prefixed fields (4 bytes big-endian each), after their count."""
    sock.sendall(b"".join([len(fields).to_bytes(4, "big"), *(len(f).to_bytes(4, "big") + f for f in fields)]))


def _recv(sock: "_socket.socket") -> list[bytes]:
    count = int.from_bytes(_exactly(sock, 4), "big")
    if count > 8:
        raise ValueError(f"{count} fields: not this protocol")
    return [_exactly(sock, int.from_bytes(_exactly(sock, 4), "big")) for _ in range(count)]


def _exactly(sock: "_socket.socket", n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = sock.recv(min(n - len(buf), 1 << 20))
        if not data:
            raise ValueError("connection closed mid-message")
        buf += data
    return buf
