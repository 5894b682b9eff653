"""A blocking etcd client for short-lived processes (a CNI plugin): plain sockets, no trio, no httpx.

It has the EtcdClient methods IPAM uses (get, range, put, delete, txn, create, cas_delete), as
coroutines that never suspend: each does its HTTP exchange before returning, so `drive()` runs
IPAM's async code to completion without an event loop. What it shares with transport.py is the
wire format (wire.py), the typed errors and the failover rule: a read, or a request that was
never sent, moves on to the next endpoint; a write whose outcome is unknown is EtcdUnavailable.
"""
from __future__ import annotations

import json
import socket
from typing import Any, Coroutine, Sequence, TypeVar

from calico_bgp.datastore import wire
from calico_bgp.datastore.errors import Compacted, EtcdError, EtcdUnavailable
from calico_bgp.datastore.types import Compare, Get, KeyValue, Op, Put, RangeResult, TLSConfig, TxnResult, _to_bytes

T = TypeVar("T")
RANGE_PAGE = 1000


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (one that only awaits this client) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("drive(): the coroutine suspended; it must only await the blocking client")


class HTTPFailed(OSError):
    """The connection broke or the reply was not HTTP/1.1 as etcd's gateway sends it."""


class NotSent(OSError):
    """Connecting failed: the request never left, so another endpoint may take it."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.cause = cause


class _Connection:
    """One kept-alive HTTP/1.1 connection to one endpoint: POST a JSON body, read the reply
    (Content-Length or chunked). http.client would do, at the cost of importing the email package."""

    def __init__(self, endpoint: str, timeout: float, tls: TLSConfig | None) -> None:
        scheme, _, rest = endpoint.partition("://")
        self.scheme, self.timeout, self.tls = scheme, timeout, tls
        if scheme == "unix":
            self.path, self.host = rest, "localhost"
        else:
            self.host = rest.split("/", 1)[0]
            name, _, port = self.host.rpartition(":") if "]" not in self.host.rsplit(":", 1)[-1] else (self.host, "", "")
            self.addr = (name.strip("[]") or self.host, int(port or (443 if scheme == "https" else 80)))
        self.sock: socket.socket | None = None
        self.buf = b""
        self._got_any = False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _connect(self) -> socket.socket:
        if self.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            return sock
        sock = socket.create_connection(self.addr, timeout=self.timeout)
        if self.scheme == "https":
            import ssl

            tls = self.tls or TLSConfig()
            ctx = ssl.create_default_context(cafile=tls.ca_cert)
            if tls.cert:
                ctx.load_cert_chain(tls.cert, tls.key)
            sock = ctx.wrap_socket(sock, server_hostname=self.addr[0])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def post(self, path: str, body: bytes, idempotent: bool = True) -> tuple[int, bytes]:
        """POST and read the reply. NotSent: the request cannot have reached the server.

        On a kept-alive connection the server may have closed: one found closed (or readable)
        before writing is opened again; a request not wholly written is sent once more on a fresh
        connection; one wholly written whose reply never began is sent again only when
        `idempotent` (a read): a write's outcome is then unknown and the error is raised."""
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        if self.sock is not None and _closed_by_peer(self.sock):
            self.close()
        for fresh in ((False, True) if self.sock is not None else (True,)):
            if self.sock is None:
                try:
                    self.sock = self._connect()
                except OSError as exc:
                    self.close()
                    raise NotSent(exc) from None
            self._got_any, written = False, False
            try:
                self.sock.sendall(head + body)
                written = True
                return self._response()
            except (OSError, ValueError):
                self.close()
                if not fresh and not self._got_any and (idempotent or not written):
                    continue  # a kept-alive connection the server had closed: send once more, fresh
                raise
        raise AssertionError("unreachable")

    def _response(self) -> tuple[int, bytes]:
        self._got_any = False
        line = self._line()
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HTTPFailed(f"not an HTTP reply: {line[:80]!r}")
        status = int(parts[1])
        length, chunked, close = None, False, False
        while True:
            h = self._line()
            if not h:
                break
            name, _, value = h.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"connection" and value == b"close":
                close = True
        if chunked:
            body = b""
            while True:
                size = int(self._line().split(b";", 1)[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exactly(size)
                self._line()
        elif length is not None:
            body = self._exactly(length)
        else:
            body, close = self._until_eof(), True
        if close:
            self.close()
        return status, body

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise HTTPFailed("connection closed by the server")
        self._got_any = True
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _until_eof(self) -> bytes:
        try:
            while True:
                self._fill()
        except HTTPFailed:
            out, self.buf = self.buf, b""
            return out


class BlockingClient:
    """etcd v3 over its JSON gateway, one request at a time, keep-alive per endpoint."""

    def __init__(self, endpoints: Sequence[str], *, tls: TLSConfig | None = None, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._tls = tls
        self._current = 0
        self._conns: dict[str, _Connection] = {}

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> "BlockingClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the EtcdClient methods IPAM uses --------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        kvs = self.call("/v3/kv/range", wire.key_range(key)).get("kvs")
        return wire.decode_kv(kvs[0]) if kvs else None

    async def range(self, prefix: str, *, end: str | None = None, revision: int = 0,
                    keys_only: bool = False) -> RangeResult:
        body = wire.encode_range(prefix, prefix=True, end=end, revision=revision, keys_only=keys_only,
                                 limit=RANGE_PAGE)
        kvs: list[KeyValue] = []
        next_body: dict | None = body
        while next_body is not None:
            page, revision, next_body = wire.range_step(next_body, self.call("/v3/kv/range", next_body))
            kvs.extend(page)
        return RangeResult(kvs=kvs, revision=revision)

    async def put(self, key: str, value: bytes | str, *, lease: int = 0) -> int:
        return wire.header_revision(self.call("/v3/kv/put", wire.encode_put(key, _to_bytes(value), lease),
                                              idempotent=False))

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        return int(self.call("/v3/kv/deleterange", wire.key_range(key, prefix), idempotent=False).get("deleted", 0))

    async def txn(self, compares: list[Compare], success: list[Op], failure: list[Op]) -> TxnResult:
        read_only = all(isinstance(op, Get) for op in (*success, *failure))
        return wire.decode_txn(self.call("/v3/kv/txn", wire.encode_txn(compares, success, failure),
                                         idempotent=read_only))

    async def create(self, key: str, value: bytes | str, *, lease: int = 0) -> tuple[bool, KeyValue | None]:
        raw = _to_bytes(value)
        res = await self.txn([Compare.created(key, 0)], [Put(key, raw, lease)], [Get(key)])
        if res.succeeded:
            return True, KeyValue(key, raw, res.revision, res.revision, 1, lease)
        return False, (res.responses[0] or [None])[0]

    async def cas_delete(self, key: str, mod_revision: int) -> tuple[bool, KeyValue | None]:
        from calico_bgp.datastore.types import Delete

        res = await self.txn([Compare.mod(key, mod_revision)], [Delete(key)], [Get(key)])
        return (True, None) if res.succeeded else (False, (res.responses[0] or [None])[0])

    async def status(self) -> dict[str, Any]:
        """etcd's maintenance status of the first endpoint that answers (a liveness probe)."""
        return self.call("/v3/maintenance/status", {})

    # --- HTTP ------------------------------------------------------------------------------------
    def call(self, path: str, body: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        """POST one request, failing over between endpoints; the decoded JSON reply."""
        content = json.dumps(body, separators=(",", ":")).encode()
        failures: list[tuple[str, str]] = []
        n = len(self.endpoints)
        for i in range(n):
            idx = (self._current + i) % n
            endpoint = self.endpoints[idx]
            conn = self._conns.get(endpoint)
            if conn is None:
                conn = self._conns[endpoint] = _Connection(endpoint, self.timeout, self._tls)
            try:
                status, raw = conn.post(path, content, idempotent)
            except NotSent as exc:
                failures.append((endpoint, _describe(exc.cause)))
                continue
            except (OSError, ValueError) as exc:
                reason = _describe(exc)
                if not idempotent:
                    self._current = (idx + 1) % n
                    raise EtcdUnavailable([(endpoint, reason + " (request outcome unknown)")]) from None
                failures.append((endpoint, reason))
                continue
            self._current = idx
            if status == 200:
                return json.loads(raw)  # type: ignore[no-any-return]
            raise _error(endpoint, status, raw)
        raise EtcdUnavailable(failures)


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle kept-alive connection is readable only when the server closed it (or broke the
    exchange): either way it must not carry the next request."""
    import select

    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _describe(exc: BaseException) -> str:
    verify = getattr(exc, "verify_message", None)  # ssl.SSLCertVerificationError, without importing ssl
    if verify:
        return f"TLS certificate verify failed: {verify}"
    if type(exc).__name__.startswith("SSL"):
        return f"TLS error: {getattr(exc, 'reason', None) or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, FileNotFoundError):
        return "no such socket"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(exc) or type(exc).__name__


def _error(endpoint: str, status: int, raw: bytes) -> Exception:
    try:
        data = json.loads(raw)
        code, message = int(data.get("code", -1)), str(data.get("message") or data.get("error"))
    except (ValueError, AttributeError):
        code, message = -1, f"HTTP {status}: {raw[:200].decode('utf-8', 'replace').strip()}"
    if "required revision has been compacted" in message:
        return Compacted(0)
    return EtcdError(endpoint, code, message)
