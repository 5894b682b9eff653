"""What every CLI command shares: global options, the datastore connection, exit codes, error output.

Commands stay thin: parse, call one library function under `run()`, print. Typed errors are
turned into one line on stderr and an exit code scripts can rely on.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Awaitable, Callable, NoReturn, TypeVar

import attrs
import click
import trio

from calico_bgp.datastore.keys import DEFAULT_PREFIX, Keys

T = TypeVar("T")

# Exit codes (documented in the README).
EXIT_OK = 0
EXIT_ERROR = 1          # anything else that went wrong
EXIT_USAGE = 2          # bad flags or bad input (click uses 2 for usage errors too)
EXIT_UNAVAILABLE = 3    # the datastore cannot be reached
EXIT_EXHAUSTED = 4      # no address/block left to allocate
EXIT_CONFLICT = 5       # a compare-and-swap kept losing, or the resource changed underneath


@attrs.define
class Globals:
    endpoints: list[str]
    prefix: str = DEFAULT_PREFIX
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = None
    password: str | None = None

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    def client(self) -> Any:
        """A new EtcdClient for these options (use `async with`)."""
        from calico_bgp.datastore import EtcdClient, TLSConfig

        tls = TLSConfig(ca_cert=self.ca_cert, cert=self.cert, key=self.key) if (self.ca_cert or self.cert) else None
        return EtcdClient(self.endpoints, tls=tls, username=self.username, password=self.password)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def node_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """click callback for an option naming a node: the resource-name rule, or a usage error naming it."""
    from calico_bgp.resources.fields import name

    try:
        return None if value is None else name(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}") from None


def read_utf8(read: Callable[[], str], what: str) -> str:
    """Text from `read()` (a file or stdin); one that is not UTF-8 is a usage error naming `what`."""
    try:
        return read()
    except UnicodeDecodeError as exc:
        fail(f"{what}: not UTF-8 text ({exc.reason} at byte {exc.start})", EXIT_USAGE)


# Typed errors -> exit codes. Each module registers its own error types here at import time,
# so this file does not import every package.
ERROR_CODES: dict[type[BaseException], int] = {}


def register_errors(mapping: dict[type[BaseException], int]) -> None:
    ERROR_CODES.update(mapping)


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run an async library call under trio; typed errors become one line on stderr and an exit code."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:  # a nursery may wrap a single error
        leaves = list(_leaves(group))
        exc = leaves[0] if len(leaves) == 1 else group
        _exit_for(exc)
    except Exception as exc:  # noqa: BLE001 - the boundary: every error becomes a message
        _exit_for(exc)


def _leaves(group: BaseExceptionGroup) -> Any:
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _leaves(e)
        else:
            yield e


def _exit_for(exc: BaseException) -> NoReturn:
    for cls in type(exc).__mro__:
        if cls in ERROR_CODES:
            fail(str(exc), ERROR_CODES[cls])
    raise exc


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """An aligned, grep-friendly table in the style of `birdc show protocols`."""
    cols = [headers, *rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in cols]
    return "\n".join(lines)


pass_globals = click.make_pass_decorator(Globals)


# The datastore imports nothing of calico_bgp, so its errors are mapped to exit codes from this side.
from calico_bgp.datastore.errors import DatastoreError, EtcdUnavailable  # noqa: E402

register_errors({EtcdUnavailable: EXIT_UNAVAILABLE, DatastoreError: EXIT_ERROR})


def age(seconds: float) -> str:
    """A duration as the tables show it: 45s, 12m, 3h."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
