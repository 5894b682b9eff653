"""The CNI protocol pieces: versions, the environment, the network config with Calico's fields,
results in 0.4.0 / 1.0.0 / 1.1.0, and errors (containernetworking/cni SPEC.md 1.1.0, pkg/skel,
pkg/types/{040,100}; Calico's cni-plugin/pkg/types/types.go and internal/pkg/utils DetermineNodename)."""
from __future__ import annotations

import json
import logging

import pytest

from calico_bgp.cni import env, error, netconf, result, spec
from calico_bgp.cni.error import CNIError


def code_of(fn, *args, **kw):
    with pytest.raises(CNIError) as info:
        fn(*args, **kw)
    return info.value.code, info.value.msg


# --- versions ---------------------------------------------------------------------------------
def test_a_supported_cni_version_is_used_as_given():
    for v in ("0.4.0", "1.0.0", "1.1.0"):
        assert spec.negotiate(v) == v


def test_an_unsupported_or_missing_version_is_error_1_naming_what_we_speak():
    code, msg = code_of(spec.negotiate, "0.3.1")
    assert code == error.INCOMPATIBLE_VERSION and "'0.3.1'" in msg and "1.1.0" in msg
    code, msg = code_of(spec.negotiate, None)
    assert code == error.INCOMPATIBLE_VERSION and "no cniVersion" in msg


def test_a_malformed_version_is_an_invalid_config():
    assert code_of(spec.negotiate, "one")[0] == error.INVALID_CONFIG


def test_cni_version_is_the_output_version_whatever_cni_versions_lists():
    """cniVersions is a config list's field; libcni (containernetworking/cni libcni/api.go
    buildOneConfig) hands each plugin the version it picked as cniVersion, and the plugin writes
    that one."""
    assert spec.negotiate("1.0.0", ["0.3.1", "1.0.0", "1.1.0", "1.2.0"]) == "1.0.0"
    assert code_of(spec.negotiate, "1.0.0", "1.1.0")[0] == error.INVALID_CONFIG


def test_without_cni_version_cni_versions_picks_the_highest_common_one():
    assert spec.negotiate(None, ["0.4.0", "1.0.0"]) == "1.0.0"
    assert code_of(spec.negotiate, None, ["0.3.1"])[0] == error.INCOMPATIBLE_VERSION
    assert spec.negotiate("1.0.0", ["0.3.1"]) == "1.0.0"  # cniVersion still stands on its own


def test_gc_and_status_need_1_1_0():
    spec.check_command("GC", "1.1.0")
    spec.check_command("STATUS", "1.1.0")
    spec.check_command("CHECK", "0.4.0")
    code, msg = code_of(spec.check_command, "GC", "1.0.0")
    assert code == error.INCOMPATIBLE_VERSION and "GC" in msg


def test_version_output_lists_the_three_versions():
    assert spec.version_result("1.0.0") == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
    assert spec.version_result("9.9.9")["cniVersion"] == "1.1.0"


# --- environment ------------------------------------------------------------------------------
ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin:/usr/lib/cni", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0"}


def test_the_add_environment_parses():
    inv = env.parse(ADD_ENV)
    assert (inv.command, inv.container_id, inv.netns, inv.ifname) == ("ADD", "abc123", "/var/run/netns/x", "eth0")
    assert inv.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert inv.pod() == ("ns", "web-0")


def test_pod_attributes_need_both_namespace_and_name():
    assert env.parse({**ADD_ENV, "CNI_ARGS": "K8S_POD_NAME=web-0"}).pod() is None


@pytest.mark.parametrize("command, missing", [("ADD", "CNI_NETNS"), ("ADD", "CNI_CONTAINERID"), ("ADD", "CNI_IFNAME"),
                                              ("CHECK", "CNI_NETNS"), ("DEL", "CNI_IFNAME")])
def test_a_variable_the_command_needs_is_error_4_naming_it(command, missing):
    environ = {k: v for k, v in ADD_ENV.items() if k != missing} | {"CNI_COMMAND": command}
    code, msg = code_of(env.parse, environ)
    assert code == error.INVALID_ENV and missing in msg


def test_del_without_a_netns_is_fine():
    env.parse({k: v for k, v in ADD_ENV.items() if k != "CNI_NETNS"} | {"CNI_COMMAND": "DEL"})


def test_an_unknown_or_missing_command_is_error_4():
    code, msg = code_of(env.parse, {**ADD_ENV, "CNI_COMMAND": "FROB"})
    assert code == error.INVALID_ENV and "'FROB'" in msg
    assert code_of(env.parse, {})[0] == error.INVALID_ENV


@pytest.mark.parametrize("cid", ["-abc", "a/b", "a b", "ä"])
def test_a_container_id_with_bad_characters_is_error_4(cid):
    code, msg = code_of(env.parse, {**ADD_ENV, "CNI_CONTAINERID": cid})
    assert code == error.INVALID_ENV and "CNI_CONTAINERID" in msg


@pytest.mark.parametrize("ifname", ["a" * 16, ".", "..", "et/h0", "eth:0", "eth 0"])
def test_an_interface_name_linux_refuses_is_error_4(ifname):
    assert code_of(env.parse, {**ADD_ENV, "CNI_IFNAME": ifname})[0] == error.INVALID_ENV


def test_cni_args_without_an_equals_sign_is_error_4():
    code, msg = code_of(env.parse_args, "A=1;junk")
    assert code == error.INVALID_ENV and "'junk'" in msg
    assert env.parse_args("A=1;;B=x=y") == {"A": "1", "B": "x=y"}


# --- network config ---------------------------------------------------------------------------
CALICO_CONF = {  # a Calico conflist's calico plugin entry, as calico/node's install writes it
    "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "log_level": "debug",
    "log_file_path": "/var/log/calico/cni/cni.log", "datastore_type": "etcdv3",
    "etcd_endpoints": "https://10.0.0.1:2379,https://10.0.0.2:2379", "etcd_key_file": "/k", "etcd_cert_file": "/c",
    "etcd_ca_cert_file": "/ca", "nodename": "node-a", "mtu": 1440,
    "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true", "ipv4_pools": ["default-ipv4"],
             "ipv6_pools": ["2001:db8::/48"], "subnet": "usePodCidr"},
    "policy": {"type": "k8s"}, "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
    "container_settings": {"allow_ip_forwarding": False}, "ipMasq": True,
}


def parse(d):
    return netconf.parse(json.dumps(d).encode())


def test_calicos_fields_carry_over():
    c = parse(CALICO_CONF)
    assert (c.cni_version, c.name, c.type, c.nodename, c.mtu) == ("1.0.0", "k8s-pod-network", "calico", "node-a", 1440)
    assert c.etcd_endpoints == ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
    assert (c.etcd_key_file, c.etcd_cert_file, c.etcd_ca_cert_file) == ("/k", "/c", "/ca")
    assert c.log_level == logging.DEBUG and c.log_file_path == "/var/log/calico/cni/cni.log"
    assert c.ipam == netconf.IpamConf("calico-ipam", True, True, ("default-ipv4",), ("2001:db8::/48",))


def test_fields_with_no_meaning_here_are_named_not_refused():
    assert parse(CALICO_CONF).ignored == ("policy", "kubernetes", "ipam.subnet")


def test_defaults_follow_calico():
    c = parse({"cniVersion": "1.1.0", "name": "n", "type": "calico-bgp-cni"})
    assert c.etcd_endpoints == ("http://127.0.0.1:2379",) and c.ipam.assign_ipv4 and not c.ipam.assign_ipv6
    assert c.log_level == logging.INFO and c.mtu is None and c.ignored == ()


def test_etcd_scheme_and_authority_are_calicos_older_spelling():
    c = parse({"cniVersion": "1.1.0", "name": "n", "type": "t", "etcd_scheme": "https", "etcd_authority": "e:2379"})
    assert c.etcd_endpoints == ("https://e:2379",)


@pytest.mark.parametrize("data, code, names", [
    (b"{not json", error.DECODE_FAILURE, "not JSON"),
    (b"[1, 2]", error.DECODE_FAILURE, "JSON object"),
    (b"\xff\xfe", error.DECODE_FAILURE, "UTF-8"),
])
def test_stdin_that_is_not_a_json_object_is_error_6(data, code, names):
    c, msg = code_of(netconf.parse, data)
    assert c == code and names in msg


@pytest.mark.parametrize("change, names", [
    ({"name": None}, "name: missing"),
    ({"name": "bad/name"}, "name 'bad/name'"),
    ({"type": 3}, "type"),
    ({"mtu": "1500"}, "mtu"),
    ({"mtu": 20}, "mtu"),
    ({"log_level": "loud"}, "log_level"),
    ({"etcd_endpoints": "10.0.0.1:2379"}, "etcd_endpoints"),
    ({"ipam": {"type": "calico-bgp-ipam", "assign_ipv4": "yes"}}, "ipam.assign_ipv4"),
    ({"ipam": {"type": "calico-bgp-ipam", "ipv4_pools": "default"}}, "ipam.ipv4_pools"),
    ({"ipam": {"type": "calico-bgp-ipam", "routes": [{"gw": "1.2.3.4"}]}}, "ipam.routes"),
    ({"ipam": []}, "ipam"),
    ({"prevResult": []}, "prevResult"),
    ({"cni.dev/valid-attachments": [{"ifname": "eth0"}]}, "containerID"),
    ({"ipam_service": "yes"}, "ipam_service"),
    ({"ipam_service": -1}, "ipam_service"),
])
def test_a_wrong_field_is_error_7_naming_it(change, names):
    d = {**CALICO_CONF, **change}
    d = {k: v for k, v in d.items() if v is not None}
    code, msg = code_of(parse, d)
    assert code == error.INVALID_CONFIG and names in msg


def test_a_datastore_other_than_etcd_is_error_2_naming_key_and_value():
    code, msg = code_of(parse, {**CALICO_CONF, "datastore_type": "kubernetes"})
    assert code == error.UNSUPPORTED_FIELD and "datastore_type" in msg and "kubernetes" in msg


def test_gc_attachments_under_either_name():
    att = [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        assert parse({**CALICO_CONF, key: att}).valid_attachments == (("c1", "eth0"), ("c2", "net1"))
    assert parse(CALICO_CONF).valid_attachments is None


def test_node_name_in_calicos_order(tmp_path):
    base = {"cniVersion": "1.1.0", "name": "n", "type": "t"}
    f = tmp_path / "nodename"
    f.write_text("from-file\n")
    host = lambda: "from-host"  # noqa: E731
    assert netconf.node_name(parse({**base, "nodename": "conf", "nodename_file": str(f)}), hostname=host) == "conf"
    assert netconf.node_name(parse({**base, "nodename_file": str(f)}), hostname=host) == "from-file"
    missing = str(tmp_path / "absent")
    assert netconf.node_name(parse({**base, "nodename_file": missing, "nodename_file_optional": True,
                                    "hostname": "old"}), hostname=host) == "old"
    assert netconf.node_name(parse({**base, "nodename_file": missing, "nodename_file_optional": "true"}),
                             hostname=host) == "from-host"
    code, msg = code_of(netconf.node_name, parse({**base, "nodename_file": missing}), hostname=host)
    assert code == error.INVALID_CONFIG and missing in msg


# --- results ----------------------------------------------------------------------------------
FULL = result.Result(
    ips=(result.IPConfig("198.18.0.5/32", "169.254.1.1", 1), result.IPConfig("2001:db8::5/128")),
    routes=(result.Route("0.0.0.0/0", "169.254.1.1", mtu=1400, priority=10),),
    dns=result.DNS(("198.18.0.53",), "cluster.local"),
    interfaces=(result.Interface("cali1234", "ee:ee:ee:ee:ee:ee"),
                result.Interface("eth0", "02:00:00:00:00:01", "/var/run/netns/x", mtu=1440)))


def test_a_1_1_0_result_has_the_new_interface_and_route_fields():
    out = result.to_json(FULL, "1.1.0")
    assert out["cniVersion"] == "1.1.0"
    assert out["interfaces"][1] == {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/x",
                                    "mtu": 1440}
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1400, "priority": 10}]
    assert out["ips"] == [{"address": "198.18.0.5/32", "gateway": "169.254.1.1", "interface": 1},
                          {"address": "2001:db8::5/128"}]
    assert out["dns"] == {"nameservers": ["198.18.0.53"], "domain": "cluster.local"}


def test_a_1_0_0_result_drops_the_1_1_fields():
    out = result.to_json(FULL, "1.0.0")
    assert "mtu" not in out["interfaces"][1] and out["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]


def test_a_0_4_0_result_gives_each_address_its_version():
    out = result.to_json(FULL, "0.4.0")
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]


def test_an_ipam_result_has_no_interfaces_and_index_0_is_kept():
    out = result.to_json(result.Result(ips=(result.IPConfig("198.18.0.5/32", interface=0),)), "1.1.0")
    assert "interfaces" not in out and out["ips"][0]["interface"] == 0


@pytest.mark.parametrize("version", spec.SUPPORTED_VERSIONS)
def test_results_read_back_in_every_version(version):
    back = result.from_json(json.loads(json.dumps(result.to_json(FULL, version))))
    assert back.ips == FULL.ips and back.dns == FULL.dns
    assert [r.dst for r in back.routes] == ["0.0.0.0/0"]
    assert [i.name for i in back.interfaces] == ["cali1234", "eth0"]


@pytest.mark.parametrize("bad", [[], {"ips": [{"address": "nope"}]}, {"ips": [{}]}, {"routes": [{"dst": 5}]},
                                 {"ips": [{"address": "198.18.0.1/32", "interface": -1}]}])
def test_a_result_not_in_the_specs_shape_is_error_6(bad):
    assert code_of(result.from_json, bad)[0] == error.DECODE_FAILURE


def test_with_interfaces_points_every_address_at_one():
    r = result.Result(ips=(result.IPConfig("198.18.0.5/32"),)).with_interfaces((result.Interface("eth0"),), 0)
    assert r.ips[0].interface == 0 and r.interfaces[0].name == "eth0"


# --- errors -----------------------------------------------------------------------------------
def test_an_error_is_the_specs_json():
    e = CNIError(error.INVALID_CONFIG, "ipam.ipv4_pools: no IPPool named 'x'", "known: default")
    assert e.to_json("1.0.0") == {"cniVersion": "1.0.0", "code": 7, "msg": "ipam.ipv4_pools: no IPPool named 'x'",
                                  "details": "known: default"}
    assert "details" not in CNIError(11, "etcd unreachable").to_json("1.1.0")


def test_a_delegates_error_keeps_its_code():
    e = CNIError.from_json({"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "d"})
    assert (e.code, e.msg, e.details) == (11, "busy", "d")
    assert CNIError.from_json({"msg": "no code"}).code == error.INTERNAL


def test_the_workload_mtu_is_the_configs_else_calico_nodes_file():
    """Calico's order (cni-plugin/pkg/plugin/plugin.go cmdAdd, utils.MTUFromFile): the config's mtu wins;
    without one (or 0), /var/lib/calico/mtu when it exists; a file that is there but unreadable or not an
    MTU fails the ADD naming the file (error 5)."""
    def reading(text=None, exc=None):
        def read(path):
            assert path == netconf.MTU_FILE
            if exc:
                raise exc
            return text
        return read

    conf, bare = parse({**CALICO_CONF, "mtu": 1440}), parse({**CALICO_CONF, "mtu": 0})
    assert netconf.workload_mtu(conf, reading("9000\n")) == 1440
    assert netconf.workload_mtu(bare, reading("8950\n")) == 8950
    assert netconf.workload_mtu(bare, reading(exc=FileNotFoundError(2, "No such file"))) is None
    assert netconf.workload_mtu(bare, reading("0")) is None  # calico/node's "not detected"
    for text, exc in (("jumbo", None), ("20", None), (None, PermissionError(13, "Permission denied"))):
        code, msg = code_of(lambda: netconf.workload_mtu(bare, reading(text, exc)))
        assert code == error.IO_FAILURE and netconf.MTU_FILE in msg


def test_calicos_mtu_file_is_read_even_when_the_config_sets_mtu_and_can_be_required():
    """cmdAdd calls MTUFromFile before looking at conf.MTU (cni-plugin/pkg/plugin/plugin.go; utils.go):
    a broken file fails the ADD whatever mtu says, a number the config overrides is not checked, and
    `require_mtu_file: true` makes a missing file an error (error 5 naming the file and the field)."""
    def reading(text=None, exc=None):
        def read(path):
            if exc:
                raise exc
            return text
        return read

    conf = parse({**CALICO_CONF, "mtu": 1440})
    code, msg = code_of(lambda: netconf.workload_mtu(conf, reading("jumbo")))
    assert code == error.IO_FAILURE and netconf.MTU_FILE in msg and "not a number" in msg
    assert netconf.workload_mtu(conf, reading("20")) == 1440  # the config's wins; the file's is unused
    gone = reading(exc=FileNotFoundError(2, "No such file"))
    required = parse({**CALICO_CONF, "mtu": 0, "require_mtu_file": True})
    code, msg = code_of(lambda: netconf.workload_mtu(required, gone))
    assert code == error.IO_FAILURE and netconf.MTU_FILE in msg and "require_mtu_file" in msg
    assert netconf.workload_mtu(required, reading("1400")) == 1400
    assert netconf.workload_mtu(parse({**CALICO_CONF, "mtu": 0, "require_mtu_file": False}), gone) is None
    assert "require_mtu_file" not in required.ignored
    code, msg = code_of(lambda: parse({**CALICO_CONF, "require_mtu_file": "maybe"}))
    assert code == error.INVALID_CONFIG and "require_mtu_file" in msg
