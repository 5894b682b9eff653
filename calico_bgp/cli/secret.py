"""`secret set|list|delete`: BGP session passwords kept in etcd, referenced by BGPPeer.password.secretKeyRef.

Values are never printed: `list` shows secret and key names only.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from calico_bgp.cli.common import EXIT_USAGE, Globals, echo_json, fail, pass_globals, read_utf8, run, table
from calico_bgp.resources.fields import name as check_name


def register(main: click.Group) -> None:
    main.add_command(secret)


@click.group()
def secret() -> None:
    """Session passwords stored in etcd (referenced by BGPPeer spec.password.secretKeyRef)."""


def _checked_name(value: str, what: str) -> str:
    try:
        return check_name(value)
    except ValueError as exc:
        fail(f"{what} {value!r}: {exc}", EXIT_USAGE)


@secret.command("set")
@click.argument("name")
@click.argument("key")
@click.option("--from-file", "path", type=click.Path(exists=True, dir_okay=False), help="Read the value from a file.")
@pass_globals
def set_cmd(g: Globals, name: str, key: str, path: str | None) -> None:
    """Store KEY of secret NAME (value from --from-file, else from stdin)."""
    _checked_name(name, "secret name")
    if not key or any(c in key for c in "/\n"):
        fail(f"key {key!r}: must be non-empty without '/' or newlines", EXIT_USAGE)
    value = read_utf8(Path(path).read_text if path else sys.stdin.read, path or "stdin").strip()
    if not value:
        fail("the secret value is empty", EXIT_USAGE)

    async def go() -> None:
        async with g.client() as client:
            k = g.keys.secret(name)
            for _ in range(8):  # read-modify-write by compare-and-swap
                kv = await client.get(k)
                data = json.loads(kv.value) if kv else {}
                data[key] = value
                raw = json.dumps(data, sort_keys=True).encode()
                ok, _cur = await (client.cas(k, raw, kv.mod_revision) if kv else client.create(k, raw))
                if ok:
                    return
            fail(f"secret {name} kept changing; try again", 5)

    run(go)
    click.echo(f"secret {name} key {key} stored")


@secret.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@pass_globals
def list_cmd(g: Globals, output: str) -> None:
    """Secret and key names (never values)."""
    async def go() -> dict[str, list[str]]:
        async with g.client() as client:
            res = await client.range(g.keys.secrets())
        out = {}
        for kv in res.kvs:
            try:
                out[kv.key.rsplit("/", 1)[-1]] = sorted(json.loads(kv.value))
            except (ValueError, TypeError):
                out[kv.key.rsplit("/", 1)[-1]] = ["<corrupt>"]
        return out

    found = run(go)
    if output == "json":
        echo_json(found)
    else:
        click.echo(table([[n, " ".join(keys)] for n, keys in sorted(found.items())], ["NAME", "KEYS"]))


@secret.command("delete")
@click.argument("name")
@pass_globals
def delete_cmd(g: Globals, name: str) -> None:
    """Delete secret NAME."""
    async def go() -> int:
        async with g.client() as client:
            return await client.delete(g.keys.secret(_checked_name(name, "secret name")))

    if not run(go):
        fail(f"secret {name!r} not found")
    click.echo(f"secret {name} deleted")
