"""The warm process's side of cni/service.py: the agent's listening socket (bind, root-only), the
loop that answers the executables' invocations one at a time, and one invocation run as its
executable would have run it.

A request is read whole within service.READ_TIMEOUT_S and at most service.REQUEST_CAP bytes (one
over it is declined: its executable runs it). A queued request whose executable hung up or is
within START_MARGIN_S of its deadline is dropped unrun. One that is declined (`ipam_service:
false`, another root filesystem or network namespace, a directory that cannot be entered) is run by its
executable. Otherwise the reply has two steps: `started`, and the invocation runs only once the
executable answered `go` (from then on the executable never runs it itself: an ADD run twice had
the second's attach delete the first's veth and its release free the address the pod kept). In
the agent's process a watchdog (SIGALRM at the executable's deadline, its default action) ends an
invocation that runs on past it; the agent restarts the process with back-off. Each invocation runs
in its executable's directory and leaves neither that directory nor its log file behind; its
stderr is copied into this process's stderr (the agent's log) after the reply is sent.
"""
import io
import sys
import time

from calico_bgp.cni import service


def bind(path: str) -> tuple["object", int] | None:
    """The listening socket at `path` (root-only: its directory 0700, the socket 0600) and the lock
    that makes it this process's; None when another process holds it (another owner serves there)."""
    import fcntl
    import os
    import socket

    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    while True:
        lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            return None
        try:
            if os.stat(path + ".lock").st_ino == os.fstat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(lock)  # locked a file its owner removed on the way out: lock the one there now
    try:
        if os.path.exists(path):
            os.unlink(path)  # a dead owner's: whoever holds the lock owns the name
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        os.chmod(path, 0o600)  # before listen: no connection before it is root-only (the directory is already)
        server.listen(64)
    except BaseException:
        os.close(lock)
        raise
    return server, lock


def unbind(path: str, server: "object", lock: int) -> None:
    """Close what bind() opened and remove the socket and its lock file (a later owner makes its own;
    one that opened this lock file meanwhile sees it is gone and locks the new one)."""
    import os

    for name in (path, path + ".lock"):
        try:
            os.unlink(name)
        except OSError:
            pass
    server.close()  # type: ignore[attr-defined]
    os.close(lock)


def child(fd: int, idle: float) -> None:
    """The agent's warm process: answer on the listening socket `fd` (the agent's) until `idle`
    seconds pass without an invocation or the agent goes (its end of our stdin closes)."""
    import socket

    serve_socket(socket.socket(fileno=fd), idle, watch=0, watchdog=True)


def serve_socket(server: "object", idle: float | None, watch: int | None = None, watchdog: bool = False) -> None:
    """Answer invocations on the listening `server` one at a time; return after `idle` seconds without
    one, or when `watch` (a descriptor) becomes readable: its writer is gone. With `watchdog` (the
    main thread of a process of its own), an invocation still running at its executable's deadline
    ends the process (SIGALRM's default action, which no blocked call can hold off): its executable
    sees the end and reports an error, and the agent's restart with back-off takes over."""
    import importlib
    import os
    import select
    import signal

    service.SERVING = True
    try:
        # the imports every invocation would otherwise pay (calico-bgp-cni's netlink half with them)
        plugins = {name: importlib.import_module(module) for name, module in service.PLUGINS.items()}
        from dataplane.workload import plan, wiring  # noqa: F401

        if watchdog:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        ipam_plugin = plugins[b"calico-bgp-ipam"]
        home, in_process = os.getcwd(), ipam_plugin.abandoned
        fds = [server] + ([watch] if watch is not None else [])
        while True:
            ready = select.select(fds, [], [], idle)[0]
            if not ready or (watch is not None and watch in ready):
                return
            try:
                conn, _ = server.accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                continue  # the agent's socket is non-blocking: taken before us
            with conn:
                try:
                    _serve_one(conn, plugins, ipam_plugin, watchdog)
                except (OSError, ValueError):
                    continue
                finally:
                    if watchdog:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                    ipam_plugin.abandoned = in_process
                    os.chdir(home)  # the next invocation does not inherit this one's directory
    finally:
        service.SERVING = False


def _serve_one(conn: "object", plugins: dict, ipam_plugin: object, watchdog: bool) -> None:
    """One request on `conn`: read, dropped unrun when its executable gave up, declined, or started
    (`started`, then run only once the executable answered `go`), then the reply, then its log lines
    into this process's stderr (after the reply: a slow or broken stderr never holds it back)."""
    import signal

    try:
        env, data, deadline, *rest = service._recv(conn, time.monotonic_ns() + int(service.READ_TIMEOUT_S * 1e9), service.REQUEST_CAP)
    except service.TooLarge as exc:
        _log(f"calico-bgp-ipam service: request refused: {exc}\n")
        service._send(conn, [b"declined", b"", f"calico-bgp-ipam service: {exc}\n".encode()])  # type: ignore[arg-type]
        return
    end = int(deadline)
    last_start = end - int(service.START_MARGIN_S * 1e9)

    def abandoned() -> bool:
        return time.monotonic_ns() > last_start or _hung_up(conn)

    if abandoned():
        return  # its executable gave up and ran it itself (or was killed): not run twice
    cwd, name, netns, mnt = (rest + [b"", b"calico-bgp-ipam", b"", b""][len(rest):])[:4]
    plugin = plugins.get(name)
    if plugin is None:
        service._send(conn, [b"declined", b"", b""])  # type: ignore[arg-type]
        return
    conn.settimeout(service.READ_TIMEOUT_S)  # type: ignore[attr-defined]  # the handshake's and the reply's sends

    def begin() -> bool:
        """`started`, then the executable's `go` (by its deadline): from then on it never runs this itself."""
        try:
            service._send(conn, [b"started"])  # type: ignore[arg-type]
            return service._recv(conn, min(time.monotonic_ns() + int(service.READ_TIMEOUT_S * 1e9), end)) == [b"go"]  # type: ignore[arg-type]
        except (OSError, ValueError):
            return False

    if watchdog:
        signal.setitimer(signal.ITIMER_REAL, max((end - time.monotonic_ns()) / 1e9, 0.001))
    ipam_plugin.abandoned = abandoned  # type: ignore[attr-defined]  # looked at again once the host lock is held
    reply = handle(plugin, env, data, cwd or None, netns or None, mnt or None, begin=begin, deadline=end)
    if reply is None:
        return  # its executable gave up before `go`: nothing ran
    service._send(conn, reply)  # type: ignore[arg-type]
    if reply[0] != b"declined" and reply[2]:
        _log(reply[2].decode("utf-8", "surrogateescape"))


def _log(text: str) -> None:
    """`text` on this process's stderr (the agent's log); a full or closed pipe loses the lines, not the work."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _hung_up(conn: object) -> bool:
    """Whether the executable closed its end while its request waited in the queue: it sends
    nothing after the request, so its end readable (EOF) or hung up means it is gone."""
    import select

    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLRDHUP)
    return any(ev & (select.POLLIN | select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0))


def handle(ipam_plugin: object, env: bytes, data: bytes, cwd: bytes | None = None,
           netns: bytes | None = None, mnt: bytes | None = None, *,
           begin: "object | None" = None, deadline: "int | None" = None) -> "list[bytes] | None":
    """One invocation of the plugin module `ipam_plugin` (or calico-bgp-cni's), as the executable would
    have run it: [exit code, stdout, stderr]; [b"declined"] when its config says `ipam_service: false`,
    its working directory `cwd` cannot be entered here, its container namespace (`netns`, the
    executable's service.netns_id of CNI_NETNS, relative to `cwd`) is not the one seen here, or its root
    directory (`mnt`, service.netns_id of "/") is not this process's (another filesystem: a container's;
    its log and nodename files, etcd certificates, MTU file, CNI_PATH,
    /proc/sys would be others). Once none declines, `begin()` (when given) says whether to run it:
    False, None is returned and nothing ran. Exec'd delegates get what is left until `deadline`
    (monotonic ns). It runs in `cwd`; afterwards this process is back in its own directory and no
    log file of the invocation is left open."""
    import logging
    import os

    from calico_bgp.cni import delegate, skel

    declined = [b"declined", b"", b""]
    if not service.wanted(data):
        return declined
    if mnt is not None and mnt != service.netns_id(b"/"):
        return declined
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if cwd else None  # back here afterwards
    root = logging.getLogger()
    try:
        if cwd:
            try:
                os.chdir(cwd)  # the executable's: a relative log_file_path, nodename_file or CNI_NETNS means what it meant there
            except OSError as exc:  # not here (another mount namespace, removed): the executable runs it where it is
                _log(f"calico-bgp-ipam service: declined: cannot enter the executable's directory "
                     f"{cwd.decode(errors='replace')}: {exc.strerror}\n")
                return declined
        environ = dict(kv.decode("utf-8", "surrogateescape").partition("=")[::2] for kv in env.split(b"\0") if kv)
        if netns is not None and service.netns_id(environ.get("CNI_NETNS", "")) != netns:
            return declined
        if begin is not None and not begin():  # type: ignore[operator]
            return None
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stderr
        sys.stderr = err
        root.handlers.clear()  # the last invocation's handler wrote to its own stderr
        delegate.DEADLINE_NS = deadline
        try:
            code = skel.run(ipam_plugin.PLUGIN, ipam_plugin.HANDLERS, environ=environ,  # type: ignore[attr-defined]
                            stdin=io.BytesIO(data), stdout=out)
        finally:
            sys.stderr = saved
            delegate.DEADLINE_NS = None
            for h in root.handlers:
                h.close()  # its log file: not left open by a process that runs many invocations
            root.handlers.clear()
        return [str(code).encode(), out.getvalue().encode("utf-8", "surrogateescape"),
                err.getvalue().encode("utf-8", "surrogateescape")]
    finally:
        if home is not None:
            os.fchdir(home)
            os.close(home)
