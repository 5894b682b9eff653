"""Bad CLI input is refused before anything touches etcd or the kernel: one line naming it, exit 2."""
from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from calico_bgp.cli import main as cli


@pytest.mark.parametrize("flags, fragment", [
    (["--ip", "2001:db8::1/64"], "is not an IPv4 address"),
    (["--ip6", "198.18.0.1/24"], "is not an IPv6 address"),
    (["--ip-autodetect", "bogus"], "use first-found, interface=REGEX or can-reach=IP"),
    (["--ip-autodetect", "can-reach=x"], "--ip-autodetect"),
    (["--ip-autodetect", "interface=("], "--ip-autodetect"),
])
def test_bad_node_flags_are_one_line_errors(flags, fragment):
    res = CliRunner().invoke(cli, ["--etcd-endpoints", "http://127.0.0.1:1", "node", "run", "--name", "n1", *flags])
    assert res.exit_code == 2 and fragment in res.output and "Traceback" not in res.output, res.output


def test_a_metrics_port_in_use_is_refused_before_the_agent_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(cli, ["--etcd-endpoints", "http://127.0.0.1:1", "node", "run", "--name", "n1",
                                       "--ip", "198.18.0.1/24", "--metrics-port", str(port)])
    assert res.exit_code == 2 and "--metrics-port" in res.output, res.output


@pytest.mark.parametrize("args, fragment", [
    (["events", "--since", "-1h"], "--since"),
    (["events", "--since", "nan"], "--since"),
    (["delete", "bgpconfig", "rack1-n1"], "a BGPConfiguration is 'default' or 'node.<node name>'"),
    (["get", "bgpconfig", "other"], "a BGPConfiguration is 'default' or 'node.<node name>'"),
    (["--etcd-ca-cert", "/nonexistent/ca.pem", "get", "ippools"], "does not exist"),
    (["--etcd-key", "/etc/hostname", "get", "ippools"], "--etcd-cert and --etcd-key go together"),
])
def test_bad_arguments_are_one_line_errors(args, fragment):
    res = CliRunner().invoke(cli, ["--etcd-endpoints", "http://127.0.0.1:1", *args])
    assert res.exit_code == 2 and fragment in res.output and "Traceback" not in res.output, res.output


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe kind: IPPool")
    for args in (["apply", "-f", str(bad)], ["secret", "set", "s", "k", "--from-file", str(bad)]):
        res = CliRunner().invoke(cli, ["--etcd-endpoints", "http://127.0.0.1:1", *args])
        assert res.exit_code == 2 and "bad.yaml: not UTF-8 text" in res.output, res.output
