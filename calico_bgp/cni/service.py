"""An opt-in warm process for calico-bgp-ipam: `"ipam_service": true` in the network config.

A plugin is exec'd per container operation, and most of an IPAM operation's cost is the
interpreter loading attrs, cattrs, the IPAM library and the resource model; the operation itself
is a few etcd round trips. With `ipam_service`, the executable (this module, stdlib only) hands
the invocation (its CNI_* environment and stdin) to a service process over a unix socket and
prints what the service answers; the service runs the same skeleton and handlers, one invocation
at a time, and exits after `ipam_service` seconds idle (true: 60). When no service answers, the
executable starts one in the background and does this operation itself; when the service goes
away mid-operation, it does it itself too (every operation is idempotent: a repeated ADD returns
the handle's addresses, DEL and GC release what is still there). One service per interpreter,
package version and network namespace; its socket is in a root-only directory.
"""
from __future__ import annotations

import io
import json
import os
import socket
import struct
import sys
import zlib

SERVICE_DIR = "/run/calico-bgp"
DEFAULT_IDLE_S = 60.0
# a new version of any of these (under calico_bgp/) gets a new service; the old one leaves when idle
_FILES = ("cni/ipam_plugin.py", "cni/skel.py", "datastore/blocking.py", "../ipam/allocator.py", "../ipam/release.py",
          "../ipam/block.py")


def ipam_main() -> None:
    """The calico-bgp-ipam executable: through the service when the config asks for one."""
    command = os.environ.get("CNI_COMMAND", "")
    if command in ("ADD", "DEL", "CHECK", "GC", "STATUS") and not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        idle = wanted(data)
        if idle:
            code = call(idle, dict(os.environ), data)
            if code is not None:
                sys.exit(code)
        from calico_bgp.cni import ipam_plugin, skel

        sys.exit(skel.run(ipam_plugin.PLUGIN, ipam_plugin.HANDLERS, stdin=io.BytesIO(data)))
    from calico_bgp.cni import ipam_plugin

    ipam_plugin.main()


def wanted(data: bytes) -> float:
    """The idle timeout the config asks for (`ipam_service`: true or seconds), 0 when it asks for none."""
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
    key = [sys.executable, root, str(os.stat("/proc/self/ns/net").st_ino), str(os.getuid())]
    for f in _FILES:
        try:
            key.append(str(os.stat(os.path.join(root, f)).st_mtime_ns))
        except OSError:
            key.append("-")
    raw = " ".join(key).encode()  # two CRCs, not hashlib: loading OpenSSL would cost more than the call
    return os.path.join(SERVICE_DIR, f"ipam-{zlib.crc32(raw):08x}{zlib.crc32(raw[::-1]):08x}.sock")


def call(idle: float, environ: dict[str, str], data: bytes) -> int | None:
    """The exit code after the service ran the invocation; None when this process must run it."""
    reply = ask(idle, environ, data)
    if reply is None:
        return None
    sys.stderr.write(reply.get("stderr", ""))
    sys.stdout.write(reply.get("stdout", ""))
    sys.stdout.flush()
    return int(reply.get("code", 1))


def ask(idle: float, environ: dict[str, str], data: bytes) -> dict | None:
    """The service's reply ({code, stdout, stderr}) to one invocation; None when the caller must run
    it (no service answered: one is started for the next invocations; or it went away)."""
    path = socket_path()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(120)
        sock.connect(path)
    except OSError:
        spawn(path, idle)
        return None
    try:
        with sock:
            _send(sock, {"environ": environ, "stdin": data.decode("utf-8", "surrogateescape")})
            return _recv(sock)
    except (OSError, ValueError):
        return None  # the service went away: this process does it (the operations are idempotent)


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
                    req = _recv(conn)
                    _send(conn, handle(ipam_plugin, req))
                except (OSError, ValueError):
                    continue
    finally:
        try:
            if os.stat(path).st_ino == bound:
                os.unlink(path)
        except OSError:
            pass
        server.close()


def handle(ipam_plugin: object, req: dict) -> dict:
    """One invocation, as the executable would have run it: exit code, stdout, stderr."""
    from calico_bgp.cni import skel

    import logging

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stderr
    sys.stderr = err
    logging.getLogger().handlers.clear()  # the last invocation's handler writes to its own stderr
    try:
        code = skel.run(ipam_plugin.PLUGIN, ipam_plugin.HANDLERS, environ=req["environ"],  # type: ignore[attr-defined]
                        stdin=io.BytesIO(req["stdin"].encode("utf-8", "surrogateescape")), stdout=out)
    finally:
        sys.stderr = saved
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def _send(sock: socket.socket, doc: dict) -> None:
    raw = json.dumps(doc).encode()
    sock.sendall(struct.pack("!I", len(raw)) + raw)


def _recv(sock: socket.socket) -> dict:
    head = _exactly(sock, 4)
    return json.loads(_exactly(sock, struct.unpack("!I", head)[0]))  # type: ignore[no-any-return]


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise ValueError("connection closed mid-message")
        buf += data
    return buf
