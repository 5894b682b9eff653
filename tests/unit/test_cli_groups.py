"""The top-level command table: each command's module is imported only when that command is used."""
from __future__ import annotations

import importlib
import subprocess
import sys

import click

from calico_bgp.cli import COMMANDS, main


def test_the_table_names_exactly_the_commands_each_module_registers():
    registered: dict[str, str] = {}
    for module in sorted(set(COMMANDS.values())):
        group = click.Group()
        importlib.import_module(f"calico_bgp.cli.{module}").register(group)
        registered.update({name: module for name in group.commands})
    assert registered == COMMANDS


def test_help_lists_every_command_and_each_resolves_to_its_own():
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        assert main.get_command(ctx, name).name == name
    assert main.get_command(ctx, "nope") is None


def test_node_run_loads_no_other_command_group():
    code = ("import sys; sys.argv = ['calico-bgp', 'node', 'run', '--help']\n"
            "from calico_bgp.cli import main\n"
            "try:\n    main(prog_name='calico-bgp')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('calico_bgp.cli.') or m == 'yaml'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == ("['calico_bgp.cli.attrs_cache', 'calico_bgp.cli.common', 'calico_bgp.cli.node', "
                                    "'calico_bgp.cli.system_malloc']")


def test_the_agents_modules_load_without_yaml_or_httpxs_command_line_client():
    """What `node run` imports (the agent, the etcd client) holds no YAML reader (the agent decodes
    stored JSON) and not httpx's CLI (pygments, rich), and httpx still works."""
    code = ("import sys\n"
            "from calico_bgp.cli.node import skip_unused_imports\n"
            "skip_unused_imports()\n"
            "import calico_bgp.agent.node, calico_bgp.datastore.client, httpx\n"
            "assert httpx.AsyncClient and httpx.Request('GET', 'http://198.18.0.1/').method == 'GET'\n"
            "print(sorted(m for m, mod in sys.modules.items() if mod is not None"
            " and (m.split('.')[0] in ('yaml', 'pygments', 'rich') or m == 'httpx._main')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
