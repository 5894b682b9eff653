"""A watch on a key prefix that survives dropped streams, endpoint failover and compaction."""
from __future__ import annotations

import json
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import httpx
import trio

from calico_bgp.datastore import wire
from calico_bgp.datastore.errors import Compacted, EtcdError, EtcdUnavailable
from calico_bgp.datastore.transport import describe
from calico_bgp.datastore.types import Resync, WatchBatch
from dataplane.logfmt import event

if TYPE_CHECKING:
    from calico_bgp.datastore.client import EtcdClient

log = logging.getLogger("calico_bgp.datastore")

_TRANSIENT_GRPC = {1, 14}  # Canceled, Unavailable: the server side of the stream went away; reconnect
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0


class _StreamEnded(Exception):
    pass


class Watch:
    """Async iterator of WatchBatch | Resync. Prefer `async with client.watch(...) as w: async for item in w:`
    so the HTTP stream is closed as soon as the caller is done.

    Only revisions already handed to the caller are skipped on resume, so a cut stream neither loses nor
    repeats events. A cancelled `__anext__` drops the stream; the next call resumes it.
    """

    def __init__(self, client: EtcdClient, prefix: str, start_revision: int, end: str | None = None) -> None:
        self._client = client
        self.prefix = prefix
        self.end = end  # None: every key under prefix; else the keys from prefix up to end
        self.next_revision = start_revision  # the first revision not yet delivered (0: from "now")
        self._pending: deque[WatchBatch | Resync] = deque()
        self._resp: httpx.Response | None = None
        self._raw: Any = None
        self._buf = b""
        self._endpoint = ""
        self._backoff = _BACKOFF_MIN
        self._closed = False

    def __aiter__(self) -> Watch:
        return self

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self._drop()

    async def __anext__(self) -> WatchBatch | Resync:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self._next()
        except BaseException:
            # a cancelled or failed read leaves the HTTP stream mid-message: close it, resume on the next call
            with trio.CancelScope(shield=True):
                await self._drop()
            raise

    async def _next(self) -> WatchBatch | Resync:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._resp is None:
                await self._connect()
                continue
            try:
                line = await self._read_line()
            except (httpx.TransportError, _StreamEnded) as exc:
                reason = "stream ended" if isinstance(exc, _StreamEnded) else describe(exc)
                event(log, "watch_dropped", logging.WARNING, prefix=self.prefix, endpoint=self._endpoint,
                      next_revision=self.next_revision, reason=reason)
                await self._drop()
                await self._sleep_backoff()
                continue
            if not line.strip():
                continue
            try:
                batch = self._handle(json.loads(line))
            except Compacted as exc:
                await self._resync(exc.compact_revision)
                continue
            if batch is not None:
                self._backoff = _BACKOFF_MIN
                self.next_revision = batch.revision + 1
                return batch

    def _handle(self, msg: dict[str, Any]) -> WatchBatch | None:
        if "error" in msg:
            err = msg["error"]
            code, message = int(err.get("grpc_code", err.get("code", -1))), str(err.get("message"))
            if code in _TRANSIENT_GRPC:
                raise _StreamEnded(message)
            raise self._client.transport.error_from(self._endpoint, code, message)
        result = msg.get("result", {})
        if result.get("created") and not self.next_revision:
            # watching "from now": pin now, so a reconnect cannot skip what happens in between
            self.next_revision = wire.header_revision(result) + 1
        if result.get("canceled") and not result.get("compact_revision"):
            raise EtcdError(self._endpoint, -1, f"watch on {self.prefix!r} cancelled by etcd: "
                                                f"{result.get('cancel_reason', 'no reason given')}")
        return wire.decode_watch_result(result)

    async def _connect(self) -> None:
        body = {"create_request": {**wire.key_range(self.prefix, prefix=True, end=self.end),
                                   "start_revision": self.next_revision, "prev_kv": True}}
        while True:
            try:
                self._resp, self._endpoint = await self._client.transport.open_stream("/v3/watch", body)
            except EtcdUnavailable as exc:
                event(log, "watch_connect_failed", logging.WARNING, prefix=self.prefix, reason=str(exc))
                await self._sleep_backoff()
                continue
            self._raw = self._resp.aiter_raw()
            self._buf = b""
            event(log, "watch_started", logging.DEBUG, prefix=self.prefix, endpoint=self._endpoint,
                  start_revision=self.next_revision)
            return

    async def _read_line(self) -> bytes:
        """The next line of the stream. Only each new chunk is searched for its end and the chunks are
        joined once: a status document of a few hundred kB arrives in dozens of chunks, and adding
        each to the buffer and searching it all again was quadratic."""
        buf = self._buf
        if b"\n" not in buf:
            chunks = [buf]
            while True:
                try:
                    chunk = await self._raw.__anext__()
                except StopAsyncIteration:
                    self._buf = b"".join(chunks)
                    raise _StreamEnded() from None
                chunks.append(chunk)
                if b"\n" in chunk:
                    break
            buf = b"".join(chunks)
        line, _, self._buf = buf.partition(b"\n")
        return line

    async def _resync(self, compact_revision: int) -> None:
        await self._drop()
        event(log, "watch_compacted", logging.WARNING, prefix=self.prefix, wanted=self.next_revision,
              compact_revision=compact_revision, action="resync")
        while True:
            try:
                snap = await self._client.range(self.prefix, end=self.end)
                break
            except EtcdUnavailable as exc:
                event(log, "resync_failed", logging.WARNING, prefix=self.prefix, reason=str(exc))
                await self._sleep_backoff()
        self.next_revision = snap.revision + 1
        self._pending.append(Resync(kvs=snap.kvs, revision=snap.revision))

    async def _drop(self) -> None:
        raw, resp, self._raw, self._resp, self._buf = self._raw, self._resp, None, None, b""
        with trio.move_on_after(1):
            if raw is not None:
                await raw.aclose()
            if resp is not None:
                await resp.aclose()

    async def _sleep_backoff(self) -> None:
        await trio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
