"""`calico-bgp-cni` exec'd as a runtime execs it (CNI_* in the environment, the config on stdin), in a
"node" namespace, with Debian's host-local as its IPAM plugin (the lab and the e2e test run it with
calico-bgp-ipam): ADD wires the namespace and answers the spec's result, CHECK compares the kernel
with that result, DEL leaves no veth, route or allocation and succeeds again; an ADD that fails
half way gives its address back (Calico's cni-plugin/pkg/plugin/plugin.go ReleaseIPAllocation).
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

from lab.net import netns, sh
from lab.workload import install_plugins
from tests.marks import needs_root

pytestmark = [needs_root, pytest.mark.root]
REFERENCE = Path("/usr/lib/cni")


@pytest.fixture(scope="module")
def node():
    if not (REFERENCE / "host-local").exists():
        pytest.skip("Debian's containernetworking-plugins (host-local) are not installed in /usr/lib/cni")
    with netns("node") as ns:
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):  # a node routes
            sh("sysctl", "-qw", key, ns=ns)
        sh("ip", "route", "add", "169.254.1.1/32", "dev", "lo", ns=ns)  # what a default route would give
        yield ns


def config(data_dir: Path, **extra) -> dict:
    # host-local (v1.1.1) speaks up to 1.0.0, so the network does too
    return {"cniVersion": "1.0.0", "name": "cbnet", "type": "calico-bgp-cni", "mtu": 1450, **extra,
            "ipam": {"type": "host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "198.19.9.0/28"}], [{"subnet": "2001:db8:9::/124"}]]}}


@pytest.fixture(scope="module")
def launchers(tmp_path_factory) -> Path:
    """The plugins as `calico-bgp cni install` writes them (the interpreter started with -S, lean)."""
    return install_plugins(tmp_path_factory.mktemp("cni-bin"))


@pytest.fixture(scope="module")
def plugin(launchers):
    """plugin(node, command, container, netns path, config, ...) -> (exit code, its JSON or {})."""
    return functools.partial(run_plugin, launchers)


def run_plugin(launchers: Path, node: str, command: str, container: str, ns_path: str, conf: dict,
               ifname: str = "eth0", args: str = "", cni_path: Path = REFERENCE) -> tuple[int, dict]:
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": ns_path,
           "CNI_IFNAME": ifname, "CNI_PATH": str(cni_path), "CNI_ARGS": args}
    res = subprocess.run(["ip", "netns", "exec", node, str(launchers / "calico-bgp-cni")],
                         input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
    return res.returncode, (json.loads(res.stdout) if res.stdout.strip() else {})


def allocations(data_dir: Path) -> list[str]:
    net = data_dir / "cbnet"
    return sorted(p.name for p in net.iterdir() if p.name[0].isdigit()) if net.exists() else []


def cali_links(node: str) -> list[str]:
    return [link["ifname"] for link in json.loads(sh("ip", "-j", "link", ns=node).stdout) if link["ifname"].startswith("cali")]


def workload_routes(node: str) -> list[str]:
    out = []
    for fam in ("-4", "-6"):
        out += [r["dst"] for r in json.loads(sh("ip", "-j", fam, "route", ns=node).stdout)
                if r.get("dev", "").startswith("cali") and not r["dst"].startswith("fe80")]
    return out


def test_add_check_del_through_the_plugin(node, plugin, tmp_path):
    with netns("w") as a, netns("w") as b:
        code, res = plugin(node, "ADD", "ctr-a", f"/run/netns/{a}", config(tmp_path))
        assert code == 0, res
        assert [i["name"] for i in res["interfaces"]] == ["calictr-a", "eth0"]
        assert res["interfaces"][0]["mac"] == "ee:ee:ee:ee:ee:ee" and res["interfaces"][1]["sandbox"] == f"/run/netns/{a}"
        assert [(ip["address"], ip["interface"]) for ip in res["ips"]] == [("198.19.9.2/32", 1), ("2001:db8:9::2/128", 1)]
        code, res_b = plugin(node, "ADD", "ctr-b", f"/run/netns/{b}", config(tmp_path))
        assert code == 0, res_b
        assert "mtu 1450" in sh("ip", "link", "show", "eth0", ns=a).stdout
        for dst in ("198.19.9.3", "2001:db8:9::3"):
            assert sh("ping", "-c", "1", "-W", "2", dst, ns=a, check=False).returncode == 0, dst

        prev = config(tmp_path, prevResult=res)
        assert plugin(node, "CHECK", "ctr-a", f"/run/netns/{a}", prev) == (0, {})
        sh("ip", "route", "del", "198.19.9.2/32", ns=node)
        code, err = plugin(node, "CHECK", "ctr-a", f"/run/netns/{a}", prev)
        assert code == 1 and err["code"] == 111
        assert "route 198.19.9.2/32 dev calictr-a is missing on the host" in err["msg"]

        assert plugin(node, "DEL", "ctr-a", f"/run/netns/{a}", config(tmp_path)) == (0, {})
        assert cali_links(node) == ["calictr-b"]
        assert sorted(workload_routes(node)) == ["198.19.9.3", "2001:db8:9::3"]
        assert allocations(tmp_path) == ["198.19.9.3", "2001:db8:9::3"]
        assert plugin(node, "DEL", "ctr-a", f"/run/netns/{a}", config(tmp_path)) == (0, {})  # idempotent
    # b's namespace is gone (its veth with it): DEL still releases its addresses and succeeds
    assert plugin(node, "DEL", "ctr-b", f"/run/netns/{b}", config(tmp_path)) == (0, {})
    assert allocations(tmp_path) == [] and cali_links(node) == [] and workload_routes(node) == []


def test_an_add_that_fails_half_way_gives_its_addresses_back(node, plugin, tmp_path):
    """The container already has an eth0 (not ours): the veth cannot be made, so the addresses the
    IPAM plugin gave are released and the error names the step."""
    with netns("w") as a:
        sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0", ns=a)
        code, err = plugin(node, "ADD", "ctr-c", f"/run/netns/{a}", config(tmp_path))
        assert code == 1 and err["code"] == 110, err
        assert "creating veth calictr-c with peer eth0" in err["msg"] and "EEXIST" in err["msg"]
        assert allocations(tmp_path) == [] and cali_links(node) == []


def test_a_missing_namespace_allocates_nothing(node, plugin, tmp_path):
    code, err = plugin(node, "ADD", "ctr-d", "/run/netns/cb-not-there", config(tmp_path))
    assert code == 1 and err["code"] == 3 and "/run/netns/cb-not-there" in err["msg"]
    assert allocations(tmp_path) == []


def test_a_pods_host_end_is_named_by_calicos_rule(node, plugin, tmp_path):
    import hashlib

    with netns("w") as a:
        code, res = plugin(node, "ADD", "ctr-e", f"/run/netns/{a}", config(tmp_path),
                           args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0")
        assert code == 0, res
        assert res["interfaces"][0]["name"] == "cali" + hashlib.sha1(b"default.web-0").hexdigest()[:11]
        assert plugin(node, "DEL", "ctr-e", f"/run/netns/{a}", config(tmp_path)) == (0, {})
    assert allocations(tmp_path) == []


POOL = """
kind: IPPool
apiVersion: projectcalico.org/v3
metadata: {name: cni-test}
spec: {cidr: 198.19.10.0/24, blockSize: 28}
"""


def test_with_calico_bgp_ipam_a_half_failed_add_releases_its_address_in_etcd(node, plugin, launchers, etcd_server,
                                                                               key_prefix, cli):
    assert cli("apply", "-f", "-", input=POOL).exit_code == 0
    conf = {"cniVersion": "1.1.0", "name": "cbnet", "type": "calico-bgp-cni", "nodename": "node1",
            "etcd_endpoints": etcd_server.unix_url, "etcd_prefix": key_prefix, "ipam": {"type": "calico-bgp-ipam"}}
    bin_dir = launchers

    def handles() -> dict:
        blocks = json.loads(cli("ipam", "show", "--show-blocks", "-o", "json").output)["blocks"]
        return {h: n for b in blocks for h, n in b["handles"].items()}

    with netns("w") as a:
        sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0", ns=a)
        code, err = plugin(node, "ADD", "ctr-f", f"/run/netns/{a}", conf, cni_path=bin_dir)
        assert code == 1 and err["code"] == 110 and "EEXIST" in err["msg"], err
        assert handles() == {} and cali_links(node) == []
        sh("ip", "link", "del", "eth0", ns=a)
        code, res = plugin(node, "ADD", "ctr-f", f"/run/netns/{a}", conf, cni_path=bin_dir)
        assert code == 0, res
        assert res["ips"][0]["address"].startswith("198.19.10.") and handles() == {"cbnet.ctr-f": 1}
        assert plugin(node, "DEL", "ctr-f", f"/run/netns/{a}", conf, cni_path=bin_dir) == (0, {})
        assert handles() == {} and cali_links(node) == []


def test_status_and_gc_are_the_ipam_plugins_to_answer(node, plugin, launchers, tmp_path, etcd_server, key_prefix,
                                                      cli):
    """STATUS goes to calico-bgp-ipam: 50 while etcd is unreachable, success when it answers."""
    assert cli("apply", "-f", "-", input=POOL).exit_code == 0
    bin_dir = launchers
    conf = {"cniVersion": "1.1.0", "name": "cbnet", "type": "calico-bgp-cni", "nodename": "node1",
            "etcd_endpoints": etcd_server.unix_url, "etcd_prefix": key_prefix, "ipam": {"type": "calico-bgp-ipam"}}
    assert plugin(node, "STATUS", "", "", conf, cni_path=bin_dir) == (0, {})
    dead = {**conf, "etcd_endpoints": f"unix://{tmp_path}/no-etcd.sock:2379"}
    code, err = plugin(node, "STATUS", "", "", dead, cni_path=bin_dir)
    assert code == 1 and err["code"] == 50, err
    assert plugin(node, "GC", "", "", {**conf, "cni.dev/valid-attachments": []}, cni_path=bin_dir) == (0, {})



def test_the_plugins_ipam_goes_to_the_node_agents_warm_process(node, launchers, etcd_server, key_prefix, cli):
    """calico-bgp-cni runs calico-bgp-ipam in its own process; with what the node's agent starts
    running in the node's namespace (calico_bgp/agent/ipam_service.py), the whole invocation goes to
    the agent's warm process instead (the IPAM's and the wiring's log lines then carry its pid, each
    under its own plugin's name), and the wiring is the same."""
    import re
    import signal
    import sys

    from lab.net import wait_for

    assert cli("apply", "-f", "-", input=POOL).exit_code == 0
    conf = {"cniVersion": "1.1.0", "name": "cbsvc", "type": "calico-bgp-cni", "nodename": "node1",
            "etcd_endpoints": etcd_server.unix_url, "etcd_prefix": key_prefix, "ipam": {"type": "calico-bgp-ipam"}}

    def run(command: str, cid: str, ns: str, conf: dict = conf) -> tuple[int, dict, set[str]]:
        env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{ns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": str(launchers)}
        p = subprocess.Popen(["ip", "netns", "exec", node, str(launchers / "calico-bgp-cni")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out, err = p.communicate(json.dumps(conf).encode(), timeout=60)
        served_by = set(re.findall(r"calico-bgp-ipam\[(\d+)\]", err.decode())) - {str(p.pid)}
        if command == "ADD" and served_by:  # the veth was made there too, and logged as calico-bgp-cni's
            assert set(re.findall(r"calico-bgp-cni\[(\d+)\][^\n]*event=cni_added", err.decode())) == served_by, err
        return p.returncode, (json.loads(out) if out.strip() else {}), served_by

    def handles() -> set[str]:
        blocks = json.loads(cli("ipam", "show", "--show-blocks", "-o", "json").output)["blocks"]
        return {h for b in blocks for h in b["handles"]}

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    sock = subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", "from calico_bgp.cni.service import "
                           "socket_path; print(socket_path())"], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()  # the node's: the socket is per network namespace
    agent = subprocess.Popen(["ip", "netns", "exec", node, sys.executable, "-m", "calico_bgp.agent.ipam_service"],
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    try:
        with netns("w") as a, netns("w") as b:
            wait_for("the agent's socket", lambda: os.path.exists(sock) or None, timeout=20)
            code, first, served_by = wait_for("an ADD the warm process answered",
                                              lambda: (r := run("ADD", "ctr-s1", a))[2] and r, timeout=30)
            assert code == 0 and first["interfaces"][0]["name"] == "calictr-s1", first
            code, res, again = run("ADD", "ctr-s2", b)
            assert code == 0 and again == served_by and res["interfaces"][0]["name"] == "calictr-s2", res
            assert "eth0" in sh("ip", "link", ns=b).stdout and handles() == {"cbsvc.ctr-s1", "cbsvc.ctr-s2"}
            for cid, ns in (("ctr-s1", a), ("ctr-s2", b)):
                assert run("DEL", cid, ns)[0] == 0
            alone = {**conf, "ipam_service": False}  # the whole invocation in the executable's own process
            code, res, by = run("ADD", "ctr-s3", a, alone)
            assert code == 0 and by == set() and res["interfaces"][0]["name"] == "calictr-s3", res
            assert run("DEL", "ctr-s3", a, alone)[0] == 0
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=20)
    assert handles() == set() and cali_links(node) == []
    pid = int(served_by.pop())
    assert not os.path.exists(f"/proc/{pid}") and not os.path.exists(sock)  # stopped with its agent


def test_container_settings_allow_ip_forwarding_is_honoured(node, plugin, tmp_path):
    """Calico's container_settings.allow_ip_forwarding: forwarding on inside the container; off by default."""
    with netns("w") as a, netns("w") as b:
        assert plugin(node, "ADD", "ctr-h", f"/run/netns/{a}", config(tmp_path))[0] == 0
        conf = config(tmp_path, container_settings={"allow_ip_forwarding": True})
        assert plugin(node, "ADD", "ctr-i", f"/run/netns/{b}", conf)[0] == 0
        assert sh("sysctl", "-n", "net.ipv4.ip_forward", ns=a).stdout.strip() == "0"
        assert sh("sysctl", "-n", "net.ipv4.ip_forward", ns=b).stdout.strip() == "1"
        assert sh("sysctl", "-n", "net.ipv6.conf.all.forwarding", ns=b).stdout.strip() == "1"
        for cid, ns in (("ctr-h", a), ("ctr-i", b)):
            assert plugin(node, "DEL", cid, f"/run/netns/{ns}", config(tmp_path)) == (0, {})
    assert allocations(tmp_path) == []


def test_the_mtu_calico_node_wrote_reaches_both_ends_of_the_veth(node, launchers, tmp_path):
    """Without mtu in the config, the number in /var/lib/calico/mtu (netconf.MTU_FILE, pointed at a file
    of this test's in the plugin's own process) is the veth's MTU on both sides; with require_mtu_file
    and no file, the ADD fails with error 5 and wires nothing (cni-plugin/pkg/plugin/plugin.go cmdAdd)."""
    import sys

    mtu_file = tmp_path / "mtu"
    mtu_file.write_text("1380\n")
    root = str(Path(__file__).resolve().parents[2])
    code = ("import sys; from calico_bgp.cni import netconf, plugin; netconf.MTU_FILE = sys.argv[1]; plugin.main()")

    def add(conf, cid, ns, mtu_path):
        env = {**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid, "CNI_NETNS": f"/run/netns/{ns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": str(REFERENCE), "CNI_ARGS": "", "PYTHONPATH": root}
        res = subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", code, mtu_path],
                             input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
        return res.returncode, (json.loads(res.stdout) if res.stdout.strip() else {})

    conf = {k: v for k, v in config(tmp_path / "ipam").items() if k != "mtu"}
    with netns("w") as a, netns("w") as b:
        status, res = add(conf, "ctr-m", a, str(mtu_file))
        assert status == 0, res
        assert "mtu 1380" in sh("ip", "link", "show", "eth0", ns=a).stdout
        assert "mtu 1380" in sh("ip", "link", "show", "calictr-m", ns=node).stdout
        status, err = add({**conf, "require_mtu_file": True}, "ctr-n", b, str(tmp_path / "absent"))
        assert status == 1 and err["code"] == 5 and "require_mtu_file" in err["msg"]
        assert cali_links(node) == ["calictr-m"]
        assert run_plugin(launchers, node, "DEL", "ctr-m", f"/run/netns/{a}", conf) == (0, {})
    assert allocations(tmp_path / "ipam") == [] and cali_links(node) == []
