"""The warm IPAM: calico-bgp-ipam invocations answered by a process that already holds the IPAM code.

A plugin is exec'd per container operation, and most of an IPAM operation's cost is the
interpreter loading attrs, cattrs, the IPAM library and the resource model; the operation itself
is a few etcd round trips. The node agent owns a warm process (calico_bgp/agent/ipam_service.py:
it binds the socket, starts the process on the first connection, restarts it, logs its output,
stops it with itself). The calico-bgp-ipam executable (this module, stdlib only) hands each
invocation (its CNI_* environment and stdin) to it over the unix socket and prints what it answers
(length-prefixed byte fields on the raw `_socket`: the `json` and `socket` modules, with the `re`
and `enum` they load, were a third of the executable's CPU). The calico-bgp-cni executable hands
over its whole invocation the same way (the wiring runs there too, its IPAM in that process); when
it runs in its own process, its IPAM asks for the IPAM alone. The warm process (cni/warm.py) runs
the same skeleton and handlers, one invocation at a time. It answers `started` before it runs one
and runs it only once the executable answered `go`: from then on the executable never runs it
itself (it waits for the reply; an end without one, the process died or its watchdog ended the
invocation at the deadline, is an error the runtime retries). Before that, a queued invocation
whose executable hung up or is near its timeout is dropped unrun, and one that waited on the host
IPAM lock past it writes nothing (looked at again once the lock is held).

When nothing answers before `started` (no agent, an agent of other code, no answer within
CLIENT_TIMEOUT_S, the warm process gone), or it declines, the executable does the operation
itself: the agent stays optional (every operation is idempotent: a repeated ADD returns the
handle's addresses, DEL and GC release what is still there).
`"ipam_service": false` in the network config keeps every invocation in its own process (a warm
process declines one that reaches it). The socket is per interpreter version, package and module
versions, network namespace and user (a plugin of other code never reaches it), in a root-only
directory.
"""
import _socket
import io
import posix  # not os: under -S nothing has loaded os, and it is a tenth of the executable's start
import sys
import time
import zlib

SERVICE_DIR = "/run/calico-bgp"
# how long the executable waits for the service before running the operation itself: well under a
# runtime's own timeout (kubelet's runtime-request-timeout: 2 min), so the runtime never gives up first;
# the service drops a request it reaches after this, or whose executable hung up, unrun
CLIENT_TIMEOUT_S = 30.0  # from before the connect to the reply
# the service starts no invocation, and writes nothing, after its executable's deadline less this: the
# executable's budget stays clearly longer than the service's last start, so a started operation ends
# before its executable gives up on it
START_MARGIN_S = 10.0
# an executable that saw its invocation start waits this long past its deadline for the reply: the
# warm process's watchdog ends an invocation at the deadline, so its end (EOF) comes first
COMMITTED_WAIT_S = 5.0
READ_TIMEOUT_S = 5.0  # the whole request, from the accept: a stalled or trickling client holds the worker no longer
REQUEST_CAP = 1 << 20  # bytes of a request (environment, config, cwd): one over it is refused, the executable runs it
# a new version of any module an invocation loads (under calico_bgp/) gets a new socket; the old
# agent's process no longer answers the new executables: every module of these packages, and these files of others
_DIRS = ("cni", "datastore", "../ipam", "../dataplane/workload")
_FILES = ("__init__.py", "resources/__init__.py", "resources/codec.py", "resources/selector.py",
          "../dataplane/__init__.py", "../dataplane/logfmt.py", "../dataplane/netlink.py",
          "../dataplane/rtnl_codec.py", "../dataplane/routes/__init__.py", "../dataplane/routes/kernel.py")
# the plugins the warm process answers for, by the name the executable sends (none: calico-bgp-ipam's)
PLUGINS = {b"calico-bgp-ipam": "calico_bgp.cni.ipam_plugin", b"calico-bgp-cni": "calico_bgp.cni.plugin"}
SERVING = False  # True in the warm process: calico-bgp-cni's IPAM runs there, not through its own socket
_COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS")
# True once this process's ask() got no answer in time or lost the connection before its invocation
# started: calico-bgp-cni, then running in its own process, does not ask again for its IPAM (a second
# wait of CLIENT_TIMEOUT_S on a process that does not answer); a decline does not set it
UNANSWERED = False
Environ = "dict[str, str] | dict[bytes, bytes]"  # os.environ's, or posix.environ's bytes


def ipam_main() -> None:
    """The calico-bgp-ipam executable: through the warm process unless the config says `ipam_service: false`."""
    if posix.environ.get(b"CNI_COMMAND", b"").decode() in _COMMANDS and not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        if wanted(data):
            code = call(posix.environ, data)
            if code is not None:
                sys.exit(code)
        from calico_bgp.cni import ipam_plugin, skel

        sys.exit(skel.run(ipam_plugin.PLUGIN, ipam_plugin.HANDLERS, stdin=io.BytesIO(data)))
    from calico_bgp.cni import ipam_plugin

    ipam_plugin.main()


def cni_main() -> None:
    """The calico-bgp-cni executable: the whole invocation (the veth, its routes and sysctls, the IPAM)
    through the warm process, which has the netlink and IPAM code loaded (the imports were most of an
    exec'd ADD's CPU), unless the config says `ipam_service: false`. The warm process declines a
    container namespace it does not see as this process does (another mount namespace): this
    process then wires it itself, as it does when nothing answers."""
    if posix.environ.get(b"CNI_COMMAND", b"").decode() in _COMMANDS and not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        if wanted(data):
            netns = posix.environ.get(b"CNI_NETNS", b"")
            code = call(posix.environ, data, b"calico-bgp-cni", netns_id(netns))
            if code is not None:
                sys.exit(code)
        from calico_bgp.cni import plugin, skel

        sys.exit(skel.run(plugin.PLUGIN, plugin.HANDLERS, stdin=io.BytesIO(data)))
    from calico_bgp.cni import plugin

    plugin.main()


def netns_id(path: "bytes | str") -> bytes:
    """The network namespace file `path` as this process sees it (device:inode, b"-" when it cannot be
    seen): the same in the warm process means the same namespace."""
    try:
        st = posix.stat(path) if path else None
    except OSError:
        st = None
    return b"-" if st is None else f"{st.st_dev}:{st.st_ino}".encode()


def wanted(data: bytes) -> bool:
    """Whether the config lets the warm process answer: all but `"ipam_service": false` (or 0). A key
    met once and followed by `true` or `false` is read without JSON (json, re and enum are half the
    executable's start); otherwise the config is parsed (the skeleton reports one that does not parse,
    or a bad value). A misread could only pick the other of two paths that give the same answer."""
    at = data.find(b'"ipam_service"')
    if at < 0:
        return True
    if data.find(b'"ipam_service"', at + 1) < 0:
        rest = data[at + 14:].lstrip()
        if rest[:1] == b":":
            value = rest[1:].lstrip()
            if value[:4] == b"true":
                return True
            if value[:5] == b"false":
                return False
    import json

    try:
        value = json.loads(data).get("ipam_service")
    except (ValueError, AttributeError):
        return True
    return not (value is False or (type(value) in (int, float) and value == 0))


def socket_path() -> str:
    """The socket for this code, interpreter version, network namespace and user. The package's
    directory is keyed by its inode, not its name: the agent and a launcher may spell it differently."""
    root = __file__.rsplit("/", 2)[0]
    top = posix.stat(root)
    key = [sys.implementation.cache_tag or "", str(sys.hexversion), f"{top.st_dev}:{top.st_ino}",
           str(posix.stat("/proc/self/ns/net").st_ino), str(posix.getuid()), *code_stamps(root)]
    raw = " ".join(key).encode()  # two CRCs, not hashlib: loading OpenSSL would cost more than the call
    return f"{SERVICE_DIR}/ipam-{zlib.crc32(raw):08x}{zlib.crc32(raw[::-1]):08x}.sock"


def code_stamps(root: str) -> list[str]:
    """The mtime and size of every module a service loads (stat only, no reads): each .py of
    _DIRS (a module added or removed changes the list) and _FILES, relative to calico_bgp/."""
    out = []
    for d in _DIRS:
        try:
            with posix.scandir(f"{root}/{d}") as entries:
                found = sorted((e.name, e.stat()) for e in entries if e.name.endswith(".py"))
        except OSError:
            found = []
        out += [f"{d}/{name}:{st.st_mtime_ns}:{st.st_size}" for name, st in found] or [f"{d}:-"]
    for f in _FILES:
        try:
            st = posix.stat(f"{root}/{f}")
            out.append(f"{f}:{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            out.append(f"{f}:-")
    return out

def call(environ: "Environ", data: bytes, plugin: bytes = b"calico-bgp-ipam", netns: bytes = b"") -> "int | None":
    """The exit code after the warm process ran the invocation of `plugin` (its output printed); None
    when this process must run it (nothing answers, it went away mid-operation, or it declined)."""
    reply = ask(environ, data, plugin, netns)
    if reply is None:
        return None
    rc, out, err = reply
    sys.stderr.buffer.write(err)
    sys.stderr.flush()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return rc


def ask(environ: "Environ", data: bytes, plugin: bytes = b"calico-bgp-ipam",
        netns: bytes = b"") -> "tuple[int, bytes, bytes] | None":
    """The warm process's reply (exit code, stdout, stderr) to the invocation of `plugin` (with
    calico-bgp-cni, `netns` is netns_id() of its CNI_NETNS); None when the caller must run it.
    calico-bgp-cni, when it runs in its own process, asks for its IPAM this way: its stdout is its own result.

    Two steps: the warm process answers `started` before it runs anything, and runs only once this
    process answered `go`; from that send on this process never runs the invocation itself (the warm
    one may be running it): it waits for the reply, and reports an end without one (the process
    died, or its watchdog ended the invocation at the deadline) as an error the runtime retries.
    Before that, no answer within CLIENT_TIMEOUT_S, or the connection lost, gives None (and sets
    UNANSWERED): nothing was run there."""
    global UNANSWERED
    deadline = time.monotonic_ns() + int(CLIENT_TIMEOUT_S * 1e9)  # CLOCK_MONOTONIC: one clock host-wide
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(CLIENT_TIMEOUT_S)
        try:
            sock.connect(socket_path())
        except OSError:
            return None
        env = b"\0".join(k + b"=" + v if type(k) is bytes else f"{k}={v}".encode("utf-8", "surrogateescape")
                         for k, v in environ.items())
        # the cwd (relative paths in the config are ours) and the root directory (the filesystem we see: not
        # the mount namespace's identity, `ip netns exec` makes a copy of it per exec with the same files)
        try:
            _send(sock, [env, data, str(deadline).encode(), posix.getcwdb(), plugin, netns,
                         netns_id(b"/")])
            first = _recv(sock, deadline)
            if first[:1] == [b"declined"]:
                return None
            if first != [b"started"]:
                raise ValueError("not this protocol")
            _send(sock, [b"go"])  # from here on it is the warm process's: never run here
        except (OSError, ValueError):
            UNANSWERED = True
            return None  # nothing ran there (or it was never started): this one does it
        try:
            code, out, err = _recv(sock, deadline + int(COMMITTED_WAIT_S * 1e9))
            return int(code), out, err
        except (OSError, ValueError) as exc:
            return _lost(data, plugin, exc)
    finally:
        sock.close()


def _lost(data: bytes, plugin: bytes, exc: BaseException) -> tuple[int, bytes, bytes]:
    """The spec's error (11, try again later) for an invocation the warm process started and ended
    without a reply: it may have done part of it, so it is not run again here; the runtime retries
    (ADD and DEL are idempotent)."""
    import json

    try:
        version = json.loads(data).get("cniVersion") or "1.0.0"
    except (ValueError, AttributeError):
        version = "1.0.0"
    msg = (f"{plugin.decode(errors='replace')}: the node agent's warm process started this invocation and "
           f"ended without a reply ({type(exc).__name__}: {exc}); not run again while it may still be running")
    out = json.dumps({"cniVersion": version, "code": 11, "msg": msg}).encode()
    return 1, out, (msg + "\n").encode()


class TooLarge(ValueError):
    """A request over REQUEST_CAP bytes."""


def _send(sock: "_socket.socket", fields: list[bytes]) -> None:
    """Length-prefixed fields (4 bytes big-endian each), after their count."""
    sock.sendall(b"".join([len(fields).to_bytes(4, "big"), *(len(f).to_bytes(4, "big") + f for f in fields)]))


def _recv(sock: "_socket.socket", deadline: "int | None" = None, cap: int = 1 << 62) -> list[bytes]:
    """The fields of one message, all read by `deadline` (monotonic ns: TimeoutError after; None: the
    socket's own timeout per read), their lengths summing to at most `cap` bytes (TooLarge, raised
    before they are read)."""
    count = int.from_bytes(_exactly(sock, 4, deadline), "big")
    if count > 8:
        raise ValueError(f"{count} fields: not this protocol")
    out, total = [], 0
    for _ in range(count):
        n = int.from_bytes(_exactly(sock, 4, deadline), "big")
        total += n
        if total > cap:
            raise TooLarge(f"over {cap} bytes: not run here")
        out.append(_exactly(sock, n, deadline))
    return out


def _exactly(sock: "_socket.socket", n: int, deadline: "int | None") -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        if deadline is not None:
            left = (deadline - time.monotonic_ns()) / 1e9
            if left <= 0:
                raise TimeoutError("no whole message in time")
            sock.settimeout(left)
        k = sock.recv_into(view[got:], min(n - got, 1 << 20))
        if not k:
            raise ValueError("connection closed mid-message")
        got += k
    return bytes(buf)
