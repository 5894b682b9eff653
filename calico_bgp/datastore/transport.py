"""HTTP to etcd's JSON gateway: one pooled httpx client, endpoint failover, TLS, the auth token."""
from __future__ import annotations

import json
import logging
import ssl
from typing import Any, Iterator, Sequence

import httpx
import trio

from calico_bgp.datastore.errors import AuthFailed, Compacted, DatastoreError, EtcdError, EtcdUnavailable
from calico_bgp.datastore.types import TLSConfig
from dataplane.logfmt import event

log = logging.getLogger("calico_bgp.datastore")

# gRPC codes etcd uses for token trouble, and the messages that go with them
_TOKEN_ERRORS = ("invalid auth token", "revision of auth store is old", "user name is empty")
_NEEDS_AUTH = ("user name is empty", "invalid auth token")


def plain_context() -> ssl.SSLContext:
    """The context of a client that never speaks TLS (only http:// and unix:// endpoints): no CA
    bundle loaded (httpx's default loads certifi's for every transport, ~50 ms and memory each, at
    every start); and should it ever be asked to verify a server, it fails, trusting no one."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.ca_cert)
    if tls.cert:
        ctx.load_cert_chain(tls.cert, tls.key)
    return ctx


def describe(exc: BaseException) -> str:
    """A short reason for a transport failure ("connection refused", "TLS certificate verify failed: ...")."""
    for seen in _causes(exc):
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS certificate verify failed: {seen.verify_message}"
        if isinstance(seen, ssl.SSLError):
            return f"TLS error: {seen.reason or seen}"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out waiting for a response"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed by the server ({exc})"
    if isinstance(exc, httpx.ReadError) and not str(exc):
        return "connection dropped before a response"
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    return text or type(exc).__name__


def _causes(exc: BaseException | None, depth: int = 0) -> Iterator[BaseException]:
    """exc, its causes, and the members of exception groups among them (trio's connect error holds one per address)."""
    while exc is not None and depth < 20:
        yield exc
        if isinstance(exc, BaseExceptionGroup):
            for member in exc.exceptions:
                yield from _causes(member, depth + 1)
        exc, depth = exc.__cause__ or exc.__context__, depth + 1


def _not_sent(exc: httpx.TransportError) -> bool:
    """True when the request surely never reached etcd, so even a non-idempotent one may be retried."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


class Transport:
    def __init__(self, endpoints: Sequence[str], *, tls: TLSConfig | None, username: str | None,
                 password: str | None, timeout: float) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self.endpoints = [e.rstrip("/") for e in endpoints]
        if not self.endpoints:
            raise ValueError("EtcdClient needs at least one endpoint")
        self.timeout = timeout
        self._current = 0  # sticky: the endpoint that last worked
        self._username, self._password = username, password
        self._token: str | None = None
        self._auth_lock = trio.Lock()
        # a dead endpoint must not use up the whole budget before the next one is tried
        connect = min(timeout, max(timeout / len(self.endpoints), 0.5))
        self._stream_timeout = httpx.Timeout(timeout, connect=connect, read=None)
        self._headers = {"Content-Type": "application/json"}
        self._urls: dict[tuple[str, str], httpx.URL] = {}
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        # unix:///path/to/etcd.sock endpoints: each gets a placeholder host served by a socket transport,
        # so processes in other network namespaces can reach an etcd through the filesystem
        self._base: dict[str, str] = {}
        mounts: dict[str, httpx.AsyncBaseTransport] = {}
        for i, e in enumerate(self.endpoints):
            if e.startswith("unix://"):
                base = self._base[e] = f"http://etcd-unix-{i}.invalid"
                mounts[base] = httpx.AsyncHTTPTransport(uds=e[len("unix://"):], limits=limits, verify=plain_context())
            else:
                self._base[e] = e
        https = any(e.startswith("https://") for e in self.endpoints)
        self._http = httpx.AsyncClient(
            verify=ssl_context(tls) if tls else (True if https else plain_context()),
            timeout=httpx.Timeout(timeout, connect=connect),
            limits=limits,
            mounts=mounts or None,
            trust_env=False,  # loopback etcd must never go through an http_proxy from the environment
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    async def call(self, path: str, body: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        """POST one request, failing over between endpoints; returns the decoded JSON reply."""
        content = json.dumps(body, separators=(",", ":")).encode()
        for attempt in range(2):
            if self._username and self._token is None:
                await self._authenticate(None)
            token = self._token
            resp, endpoint = await self._send(path, content, idempotent=idempotent, stream=False)
            if resp.status_code == 200:
                return resp.json()  # type: ignore[no-any-return]
            err = self._error(endpoint, resp.status_code, resp.content)
            if attempt == 0 and self._username and _is_token_error(err):
                event(log, "token_rejected", endpoint=endpoint, reason=err.message)
                await self._authenticate(token)
                continue
            raise err
        raise AssertionError("unreachable")

    async def open_stream(self, path: str, body: dict[str, Any]) -> tuple[httpx.Response, str]:
        """Start a streaming POST (watch); the caller reads lines and closes the response."""
        content = json.dumps(body, separators=(",", ":")).encode()
        for attempt in range(2):
            if self._username and self._token is None:
                await self._authenticate(None)
            token = self._token
            resp, endpoint = await self._send(path, content, idempotent=True, stream=True)
            if resp.status_code == 200:
                return resp, endpoint
            raw = await resp.aread()
            await resp.aclose()
            err = self._error(endpoint, resp.status_code, raw)
            if attempt == 0 and self._username and _is_token_error(err):
                await self._authenticate(token)
                continue
            raise err
        raise AssertionError("unreachable")

    async def _send(self, path: str, content: bytes, *, idempotent: bool, stream: bool,
                    headers: dict[str, str] | None = None) -> tuple[httpx.Response, str]:
        headers = self._headers if headers is None else headers
        failures: list[tuple[str, str]] = []
        n = len(self.endpoints)
        start = self._current
        for i in range(n):
            idx = (start + i) % n
            endpoint = self.endpoints[idx]
            try:
                if stream:
                    req = self._http.build_request("POST", self._base[endpoint] + path, content=content, headers=headers,
                                                   timeout=self._stream_timeout)
                    resp = await self._http.send(req, stream=True)
                else:
                    resp = await self._http.post(self._url(endpoint, path), content=content, headers=headers)
            except httpx.TransportError as exc:
                reason = describe(exc)
                if endpoint.startswith("https:") and isinstance(exc, httpx.ReadError):
                    # Go's TLS 1.3 server just hangs up on a client that sent no certificate
                    reason += " (does etcd require a client certificate?)"
                if not (idempotent or _not_sent(exc)):
                    self._current = (idx + 1) % n  # the next call starts elsewhere
                    # the request may have been applied: retrying a compare-and-swap elsewhere could misreport it
                    raise EtcdUnavailable([(endpoint, reason + " (request outcome unknown)")]) from exc
                event(log, "endpoint_failed", endpoint=endpoint, path=path, reason=reason)
                failures.append((endpoint, reason))
                continue
            if idx != self._current:
                event(log, "failover", **{"from": self.endpoints[self._current]}, to=endpoint)
                self._current = idx
            return resp, endpoint
        raise EtcdUnavailable(failures)

    def _url(self, endpoint: str, path: str) -> httpx.URL:
        # parsing a URL string costs about as much as encoding the request: parse each one once
        url = self._urls.get((endpoint, path))
        if url is None:
            url = self._urls[(endpoint, path)] = httpx.URL(self._base[endpoint] + path)
        return url

    def _error(self, endpoint: str, status: int, raw: bytes) -> DatastoreError:
        try:
            data = json.loads(raw)
            code, message = int(data.get("code", -1)), str(data.get("message") or data.get("error"))
        except (ValueError, AttributeError):
            code, message = -1, f"HTTP {status}: {raw[:200].decode('utf-8', 'replace').strip()}"
        return self.error_from(endpoint, code, message)

    def error_from(self, endpoint: str, code: int, message: str) -> DatastoreError:
        if "required revision has been compacted" in message:
            return Compacted(0)
        if not self._username and any(m in message for m in _NEEDS_AUTH):
            return AuthFailed(f"etcd at {endpoint} requires authentication: set a username and password ({message})")
        return EtcdError(endpoint, code, message)

    async def _authenticate(self, stale: str | None) -> None:
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return  # another task already refreshed it
            body = json.dumps({"name": self._username, "password": self._password or ""}).encode()
            # other tasks keep using the old token meanwhile; a rejection sends them here, after this refresh
            resp, endpoint = await self._send("/v3/auth/authenticate", body, idempotent=True, stream=False,
                                              headers={"Content-Type": "application/json"})
            if resp.status_code != 200:
                err = self._error(endpoint, resp.status_code, resp.content)
                if isinstance(err, EtcdError) and "authentication is not enabled" in err.message:
                    event(log, "auth_not_enabled", endpoint=endpoint, user=self._username)
                    self._token = ""
                    return
                if isinstance(err, EtcdError) and "authentication failed" in err.message:
                    raise AuthFailed(f"etcd at {endpoint} rejected user {self._username!r}: "
                                     f"invalid user name or password") from None
                raise err
            self._token = str(resp.json().get("token", ""))
            self._headers = {**self._headers, "Authorization": self._token}
            event(log, "authenticated", endpoint=endpoint, user=self._username)


def _is_token_error(err: DatastoreError) -> bool:
    return isinstance(err, EtcdError) and any(m in err.message for m in _TOKEN_ERRORS)
