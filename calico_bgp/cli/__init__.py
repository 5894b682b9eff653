"""The `calico-bgp` command: global options here; each command group lives in its own module.

    common.py     what every command shares: global options, the datastore connection, exit codes, errors
    resources.py  apply -f / get / delete, in the style of calicoctl
    ipam.py       ipam allocate / release / show / check
    node.py       node run: the agent
    sessions.py   node sessions: the sessions a node gets, from etcd, before anything runs
    status.py     status, routes: what the agents publish
    events.py     events: each node's event ring
    secret.py     secret set / list / delete (BGP passwords)
    policy.py     policy show: this machine's filter mode and counters
    lab.py        lab up / status / check / chaos / down
    cni.py        cni install: the CNI plugins and this node's conflist
    system_malloc.py  node run re-executes itself on the C library's malloc, before the heavy imports
    attrs_cache.py    node run keeps the methods attrs generates as bytecode between starts
"""
from __future__ import annotations

from calico_bgp.cli.system_malloc import use_system_malloc

use_system_malloc()  # first: a `node run` re-executes itself here, before the imports below

from calico_bgp.cli.attrs_cache import use_for_node_run  # noqa: E402

use_for_node_run()  # before any class is defined: attrs' methods as bytecode kept between starts

import importlib  # noqa: E402

import click  # noqa: E402

from calico_bgp.cli.common import Globals  # noqa: E402
from calico_bgp.datastore.keys import DEFAULT_PREFIX  # noqa: E402

# each command's module (it adds the command to `main` with its register()); a test checks this
# table against what the modules register
COMMANDS = {"apply": "resources", "get": "resources", "delete": "resources", "ipam": "ipam", "node": "node",
            "status": "status", "routes": "status", "events": "events", "secret": "secret", "policy": "policy",
            "lab": "lab", "cni": "cni"}


class CommandGroups(click.Group):
    """The top-level group, whose command groups each live in their own module, imported when one of
    its commands is used (or when help lists them all): `node run` does not load the YAML reader,
    the IPAM or the lab commands it never runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"calico_bgp.cli.{module}").register(self)
        return super().get_command(ctx, cmd_name)


@click.group(cls=CommandGroups, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--etcd-endpoints", envvar="CALICO_BGP_ETCD_ENDPOINTS", default="http://127.0.0.1:2379",
              show_default=True, help="Comma-separated etcd client URLs, tried in order.")
@click.option("--prefix", envvar="CALICO_BGP_PREFIX", default=DEFAULT_PREFIX, show_default=True,
              help="Key prefix of this cluster's data in etcd.")
@click.option("--etcd-ca-cert", envvar="CALICO_BGP_ETCD_CA_CERT",
              type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--etcd-cert", envvar="CALICO_BGP_ETCD_CERT",
              type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--etcd-key", envvar="CALICO_BGP_ETCD_KEY",
              type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--etcd-username", envvar="CALICO_BGP_ETCD_USERNAME")
@click.option("--etcd-password", envvar="CALICO_BGP_ETCD_PASSWORD")
@click.pass_context
def main(ctx: click.Context, etcd_endpoints: str, prefix: str, etcd_ca_cert: str | None,
         etcd_cert: str | None, etcd_key: str | None, etcd_username: str | None,
         etcd_password: str | None) -> None:
    """calico-bgp: BGP routing control plane for bare-metal racks."""
    endpoints = [e.strip() for e in etcd_endpoints.split(",") if e.strip()]
    if not endpoints:
        raise click.BadParameter("at least one endpoint is needed", param_hint="--etcd-endpoints")
    if bool(etcd_cert) != bool(etcd_key):  # a client certificate is a pair: one alone would be ignored
        raise click.UsageError("--etcd-cert and --etcd-key go together")
    ctx.obj = Globals(endpoints, prefix, etcd_ca_cert, etcd_cert, etcd_key, etcd_username, etcd_password)
