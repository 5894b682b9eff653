"""The pools an ADD may use (Calico's ResolvePools: by name or CIDR, else by nodeSelector) and what
`calico-bgp cni install` writes (Calico's install: plugins in /opt/cni/bin, a conflist in /etc/cni/net.d)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from calico_bgp.cli import main as cli
from calico_bgp.cni import error, install, pools
from calico_bgp.cni.error import CNIError
from calico_bgp.resources import model
from calico_bgp.resources.ippool import IPPool, IPPoolSpec


def ippool(name, cidr, **kw):
    """The pool as `calico-bgp apply` stores it, read back as the plugin reads it."""
    return pools.stored_pool(model.encode(IPPool(model.Metadata(name), IPPoolSpec(cidr=cidr, **kw))))


POOLS = [ippool("a4", "198.18.0.0/24"), ippool("b4", "198.18.1.0/24", node_selector="rack == 'r1'"),
         ippool("off4", "198.18.2.0/24", disabled=True), ippool("a6", "2001:db8::/120")]


def names(chosen):
    return [p.name for p in chosen]


def test_without_a_list_every_enabled_pool_of_the_family_that_selects_the_node():
    assert names(pools.choose(POOLS, {}, (), 4, "ipv4_pools")) == ["a4"]
    assert names(pools.choose(POOLS, {"rack": "r1"}, (), 4, "ipv4_pools")) == ["a4", "b4"]
    assert names(pools.choose(POOLS, {}, (), 6, "ipv6_pools")) == ["a6"]


def test_a_list_names_pools_by_name_or_cidr_in_its_order():
    assert names(pools.choose(POOLS, {"rack": "r1"}, ("198.18.1.0/24", "a4"), 4, "ipv4_pools")) == ["b4", "a4"]
    # named: used whatever its nodeSelector (libcalico-go lib/ipam/ipam.go determinePools)
    assert names(pools.choose(POOLS, {}, ("b4",), 4, "ipv4_pools")) == ["b4"]


@pytest.mark.parametrize("ref, version, names_it", [("nope", 4, "'nope'"), ("a6", 4, "not an IPv4 pool"),
                                                     ("off4", 4, "disabled"), ("198.18.9.0/24", 4, "'198.18.9.0/24'")])
def test_a_pool_the_config_gets_wrong_is_error_7_naming_it(ref, version, names_it):
    with pytest.raises(CNIError) as info:
        pools.choose(POOLS, {}, (ref,), version, "ipv4_pools")
    assert info.value.code == error.INVALID_CONFIG and names_it in info.value.msg and "ipam.ipv4_pools" in info.value.msg


def test_a_stored_pool_reads_as_the_model_stored_it():
    row = ippool("b", "2001:db8::/64", node_selector="rack == 'r1'", disabled=True)
    assert (row.name, row.cidr, row.block_size, row.disabled) == ("b", "2001:db8::/64", 122, True)
    assert row.selects({"rack": "r1"}) and not row.selects({"rack": "r2"}) and not row.selects({})
    assert pools.stored_pool(b'{"metadata":{"name":"a"},"spec":{"cidr":"198.18.0.0/16"}}') == (
        "a", "198.18.0.0/16", 26, False, None, True, True)  # Calico's defaults: blockSize 26, nodeSelector
    # all(), allowedUses Workload and Tunnel, assignmentMode Automatic


def test_pools_not_for_workloads_or_manual_are_left_out_unless_named():
    """libcalico-go/lib/ipam/ipam.go: determinePools skips a pool whose assignmentMode is not
    Automatic unless the request names it; filterPoolsByUse keeps only pools whose allowedUses
    hold the use (a workload's address: Workload), named or not."""
    rows = [ippool("tun4", "198.18.3.0/24", allowed_uses=("Tunnel",)), ippool("man4", "198.18.4.0/24",
            assignment_mode="Manual"), ippool("lb4", "198.18.5.0/24", allowed_uses=("LoadBalancer",)),
            ippool("auto4", "198.18.6.0/24", allowed_uses=("Workload",), assignment_mode="Automatic")]
    assert names(pools.choose(rows, {}, (), 4, "ipv4_pools")) == ["auto4"]
    assert names(pools.choose(rows, {}, ("man4",), 4, "ipv4_pools")) == ["man4"]
    for ref in ("tun4", "lb4"):
        with pytest.raises(CNIError) as info:
            pools.choose(rows, {}, (ref,), 4, "ipv4_pools")
        assert info.value.code == error.INVALID_CONFIG and f"IPPool {ref}'s allowedUses" in info.value.msg
    with pytest.raises(ValueError, match="spec.assignmentMode"):
        pools.stored_pool(b'{"metadata":{"name":"a"},"spec":{"cidr":"198.18.0.0/16","assignmentMode":"Auto"}}')


@pytest.mark.parametrize("raw, names_it", [
    (b'not json', "Expecting value"), (b'[]', "value: not a JSON object"),
    (b'{"metadata":{},"spec":{"cidr":"198.18.0.0/16"}}', "metadata.name"),
    (b'{"metadata":{"name":"a"},"spec":{"cidr":"198.18.0.0/33"}}', "198.18.0.0/33"),
    (b'{"metadata":{"name":"a"},"spec":{"cidr":"198.18.0.0/16","blockSize":8}}', "spec.blockSize"),
    (b'{"metadata":{"name":"a"},"spec":{"cidr":"198.18.0.0/16","nodeSelector":"rack =="}}', "rack =="),
])
def test_a_stored_pool_that_does_not_read_is_a_value_error_naming_what(raw, names_it):
    with pytest.raises(ValueError, match=None) as info:
        pools.stored_pool(raw)
    assert names_it in str(info.value)


def test_a_stored_nodes_labels():
    from calico_bgp.resources.node import Node

    node = model.from_dict(Node, {"metadata": {"name": "n1", "labels": {"rack": "r1"}}, "spec": {}}, where="n1")
    assert pools.stored_labels(model.encode(node)) == {"rack": "r1"}
    assert pools.stored_labels(b'{"metadata":{"name":"n1"},"spec":{}}') == {}
    with pytest.raises(ValueError, match="metadata.labels"):
        pools.stored_labels(b'{"metadata":{"name":"n1","labels":{"rack":1}}}')


def test_the_conflist_carries_calicos_fields():
    conf = install.conflist("n1", ["https://10.0.0.1:2379", "https://10.0.0.2:2379"], "/other/v1",
                            ca_cert="/ca.pem", cert="/c.pem", key="/k.pem", mtu=1440)
    assert conf["cniVersion"] == "1.0.0" and conf["cniVersions"] == ["1.0.0", "1.1.0"]
    (plugin,) = conf["plugins"]
    assert plugin["type"] == "calico-bgp-cni" and plugin["ipam"]["type"] == "calico-bgp-ipam"
    assert plugin["etcd_endpoints"] == "https://10.0.0.1:2379,https://10.0.0.2:2379" and plugin["nodename"] == "n1"
    assert (plugin["etcd_ca_cert_file"], plugin["etcd_cert_file"], plugin["etcd_key_file"]) == ("/ca.pem", "/c.pem",
                                                                                                   "/k.pem")
    assert plugin["etcd_prefix"] == "/other/v1" and plugin["mtu"] == 1440
    from calico_bgp.cni import netconf

    parsed = netconf.from_dict({**plugin, "name": conf["name"], "cniVersion": "1.1.0"})
    assert parsed.ignored == () and parsed.etcd_endpoints == ("https://10.0.0.1:2379", "https://10.0.0.2:2379")


def test_installed_plugins_run_on_this_package(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    files = install.plan(str(tmp_path / "bin"), str(tmp_path / "conf"), {"name": "x"}, sys.executable,
                         install.python_paths(root))
    install.write(files)
    assert sorted(os.listdir(tmp_path / "bin")) == ["calico-bgp-cni", "calico-bgp-ipam"]
    assert all(os.access(f.path, os.X_OK) for f in files[:2]) and not os.access(files[2].path, os.X_OK)
    out = subprocess.run([str(tmp_path / "bin" / "calico-bgp-ipam")], input=b"", env={"CNI_COMMAND": "VERSION"},
                         capture_output=True, check=True)
    assert json.loads(out.stdout)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
    assert not [p for p in os.listdir(tmp_path / "bin") if ".tmp" in p]


def test_cni_install_dry_run_prints_and_writes_nothing(tmp_path):
    res = CliRunner().invoke(cli, ["--etcd-endpoints", "http://198.18.0.10:2379", "cni", "install", "--dry-run",
                                   "--node", "n1", "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert f"# {tmp_path}/bin/calico-bgp-ipam (mode 755)" in res.output and '"nodename": "n1"' in res.output
    assert '"etcd_endpoints": "http://198.18.0.10:2379"' in res.output and "etcd_prefix" not in res.output
    assert not (tmp_path / "bin").exists() and not (tmp_path / "c").exists()


def test_cni_install_writes_both_plugins_and_the_conflist(tmp_path):
    res = CliRunner().invoke(cli, ["--prefix", "/lab/v1", "cni", "install", "--node", "n2", "--bin-dir",
                                   str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "c"), "--network", "pods"])
    assert res.exit_code == 0, res.output
    conf = json.loads((tmp_path / "c" / "10-calico-bgp.conflist").read_text())
    assert conf["name"] == "pods" and conf["plugins"][0]["etcd_prefix"] == "/lab/v1"
    bad = CliRunner().invoke(cli, ["cni", "install", "--dry-run", "--network", "bad/name"])
    assert bad.exit_code == 2 and "--network" in bad.output


def test_the_service_is_asked_unless_the_config_says_false():
    from calico_bgp.cni import service

    for on in (b'{"ipam_service": true}', b'{"ipam_service": 2.5}', b"{}", b"not json", b"[1]"):
        assert service.wanted(on) is True  # a config that does not parse is the skeleton's to report
    for off in (b'{"ipam_service": false}', b'{"ipam_service": 0}'):
        assert service.wanted(off) is False
    path = service.socket_path()
    assert path.startswith(service.SERVICE_DIR + "/ipam-") and path == service.socket_path()


@pytest.mark.parametrize("changed", ["calico_bgp/cni/netconf.py", "calico_bgp/cni/pools.py", "ipam/store.py",
                                     "ipam/pool.py", "calico_bgp/datastore/wire.py", "calico_bgp/datastore/keys.py",
                                     "calico_bgp/resources/codec.py", "dataplane/logfmt.py", "ipam/new_module.py"])
def test_the_service_socket_changes_with_any_module_an_invocation_loads(tmp_path, monkeypatch, changed):
    """A service started before an upgrade must not answer for the new code: the socket's name is
    keyed on every module the service loads, so a changed, added or removed one gets a new service."""
    from calico_bgp.cni import service

    for rel in ("calico_bgp/cni/service.py", "calico_bgp/cni/netconf.py", "calico_bgp/cni/pools.py", "ipam/store.py",
                "ipam/pool.py", "calico_bgp/datastore/wire.py", "calico_bgp/datastore/keys.py",
                "calico_bgp/resources/codec.py", "dataplane/logfmt.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("# v1\n")
        os.utime(tmp_path / rel, ns=(10**18, 10**18))
    monkeypatch.setattr(service, "__file__", str(tmp_path / "calico_bgp/cni/service.py"))
    before = service.socket_path()
    (tmp_path / changed).write_text("# v2, longer\n")
    assert service.socket_path() != before


def test_the_service_key_covers_every_module_an_invocation_loads():
    import calico_bgp.cni.service as service

    code = ("import sys; from calico_bgp.cni import ipam_plugin, pools; from calico_bgp.datastore.blocking import "
            "BlockingClient; from calico_bgp.datastore.keys import Keys; from calico_bgp.datastore.types import "
            "TLSConfig; from ipam.allocator import BlockAllocator; from ipam.store import decode_handle; "
            "from ipam.pool import Pool; from calico_bgp.resources.selector import parse; "
            "from calico_bgp.cni import plugin; from dataplane.workload import plan, wiring; "
            "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] in "
            "('calico_bgp', 'ipam', 'dataplane')))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(service.__file__)))
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(root)}).stdout.split()
    keyed = {s.rsplit(":", 2)[0] for s in service.code_stamps(root)}
    keyed_paths = {os.path.normpath(os.path.join(root, k)) for k in keyed}
    assert loaded and {os.path.normpath(f) for f in loaded} <= keyed_paths


def test_the_service_protocol_is_length_prefixed_fields_and_declines_an_unasked_config():
    import socket

    from calico_bgp.cni import service, warm

    a, b = socket.socketpair()
    with a, b:
        fields = [b"CNI_COMMAND=ADD\0CNI_ARGS=K8S_POD_NAME=p", b"", "\u00e9".encode() * 70000]
        service._send(a, fields)
        assert service._recv(b) == fields
        a.sendall((99).to_bytes(4, "big"))
        with pytest.raises(ValueError, match="99 fields"):
            service._recv(b)
    assert warm.handle(None, b"", b'{"ipam_service": false}') == [b"declined", b"", b""]


def test_the_warm_process_declines_a_container_namespace_it_sees_otherwise():
    """calico-bgp-cni sends the device:inode of CNI_NETNS as it sees it; a warm process in another
    mount namespace (a file of another namespace at that path, or none) declines, and the executable
    wires the container itself. The same file is served (VERSION here: no kernel touched)."""
    from calico_bgp.cni import plugin, service, warm

    own = service.netns_id("/proc/self/ns/net")
    assert own != b"-" and service.netns_id("/nonexistent/netns") == b"-" and service.netns_id(b"") == b"-"
    env = b"CNI_COMMAND=VERSION\0CNI_NETNS=/proc/self/ns/net"
    for seen in (b"-", b"0:0", service.netns_id("/proc/self/ns/mnt")):
        assert warm.handle(plugin, env, b"{}", None, seen) == [b"declined", b"", b""]
    code, out, _err = warm.handle(plugin, env, b"{}", None, own)
    assert code == b"0" and b"supportedVersions" in out


def test_calico_bgp_cni_starts_in_the_service_front_end(tmp_path):
    (cni,) = [f for f in install.plan(str(tmp_path), str(tmp_path), {}, "/usr/bin/python3", ["/x"])
              if f.path.endswith("calico-bgp-cni")]
    assert cni.content.startswith("#!/usr/bin/python3 -S\n") and "from calico_bgp.cni.service import cni_main" in cni.content


def test_calico_bgp_ipam_starts_in_the_service_front_end(tmp_path):
    (ipam,) = [f for f in install.plan(str(tmp_path), str(tmp_path), {}, "/usr/bin/python3", ["/x"])
               if f.path.endswith("calico-bgp-ipam")]
    assert ipam.content.startswith("#!/usr/bin/python3 -S\n") and "from calico_bgp.cni.service import ipam_main" in ipam.content


def test_install_names_launcher_paths_another_user_could_change(tmp_path, monkeypatch):
    """The runtime runs the launchers as root with these directories first on sys.path: one that
    is not root's, or that group or others may write, is a way to root; `cni install` warns."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make directories owned by another user")
    safe, shared, users, root = (tmp_path / n for n in ("safe", "shared", "users", "root"))
    for d in (safe, shared, users, root / "calico_bgp"):
        d.mkdir(parents=True)
        d.chmod(0o755)
    shared.chmod(0o777)
    os.chown(users, 1000, 1000)
    got = install.unsafe_paths([str(safe), str(shared), str(users)], str(root))
    assert got == [f"{shared}: writable by group and others", f"{users}: owned by uid 1000, not root"]
    monkeypatch.setattr(install, "python_paths", lambda _root: [str(shared)])
    res = CliRunner().invoke(cli, ["cni", "install", "--dry-run"])
    assert res.exit_code == 0 and f"warning: {shared}: writable by group and others: whoever can write" in res.output


def test_the_host_lock_directory_is_root_only(tmp_path):
    from calico_bgp.cni.ipam_plugin import _host_lock

    fd = _host_lock(str(tmp_path / "run" / "ipam.lock"))
    try:
        assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700
    finally:
        os.close(fd)
