"""`calico-bgp cni install`: both CNI plugins and this node's conflist where a runtime looks. Thin."""
from __future__ import annotations

import os
import sys

import click

from calico_bgp.cli.common import EXIT_ERROR, Globals, fail, node_name, pass_globals


def register(main: click.Group) -> None:
    main.add_command(cni_group)


@click.group("cni")
def cni_group() -> None:
    """CNI: the calico-bgp-cni and calico-bgp-ipam plugins for container runtimes."""


@cni_group.command("install")
@click.option("--bin-dir", default="/opt/cni/bin", show_default=True, help="Where the runtime looks for plugins.")
@click.option("--conf-dir", default="/etc/cni/net.d", show_default=True, help="Where the runtime reads conflists.")
@click.option("--node", callback=node_name, help="This node's name (default: the host name).")
@click.option("--network", default="calico-bgp", show_default=True, help="The network's name in the conflist.")
@click.option("--mtu", type=click.IntRange(68, 65535), help="The workloads' MTU (default: the plugin's).")
@click.option("--dry-run", is_flag=True, help="Print what would be written; write nothing.")
@pass_globals
def install_cmd(g: Globals, bin_dir: str, conf_dir: str, node: str | None, network: str, mtu: int | None,
                dry_run: bool) -> None:
    """Install calico-bgp-cni and calico-bgp-ipam into BIN_DIR and this node's conflist into CONF_DIR."""
    import calico_bgp
    from calico_bgp.cni import install
    from calico_bgp.cni.env import IDENTIFIER
    from calico_bgp.datastore.keys import DEFAULT_PREFIX

    if not IDENTIFIER.fullmatch(network):
        raise click.BadParameter(f"{network!r}: letters, digits, '_', '.', '-', starting with a letter or digit",
                                 param_hint="--network")
    if g.username:
        click.echo("warning: --etcd-username/--etcd-password are not carried into the conflist (Calico's CNI "
                   "fields have none): the plugins connect without them", err=True)
    conf = install.conflist(node or os.uname().nodename, g.endpoints, None if g.prefix == DEFAULT_PREFIX else g.prefix,
                            ca_cert=g.ca_cert, cert=g.cert, key=g.key, name=network, mtu=mtu)
    root = os.path.dirname(os.path.dirname(os.path.abspath(calico_bgp.__file__)))
    paths = install.python_paths(root)
    files = install.plan(bin_dir, conf_dir, conf, sys.executable, paths)
    for problem in install.unsafe_paths(paths, root):  # the runtime runs the launchers as root
        click.echo(f"warning: {problem}: whoever can write there runs code as root at the next container "
                   "operation (install the package as root, or fix the ownership)", err=True)
    if dry_run:
        for f in files:
            click.echo(f"# {f.path} (mode {f.mode:o})")
            click.echo(f.content, nl=False)
        return
    try:
        install.write(files)
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}", EXIT_ERROR)
    for f in files:
        click.echo(f"wrote {f.path}")
