"""calico-bgp-ipam against a real etcd: Calico's handle and attributes, idempotent ADD and DEL, the
three result versions, GC with valid-attachments, STATUS with etcd stopped, every bad input the
issue names (the spec's error JSON, nothing left allocated), and Debian's ptp and bridge using it as
their IPAM (containernetworking/plugins, /usr/lib/cni). Calico's behaviour followed:
cni-plugin/pkg/ipamplugin/ipam_plugin.go."""
from __future__ import annotations

import ipaddress
import os

import pytest

from calico_bgp.cni import error
from lab.etcd import EtcdServer
from lab.net import netns, sh
from tests.integration.cni_ipam_env import Cluster, exec_plugin, invoke
from tests.integration.test_datastore_cluster import make_etcd, pki  # noqa: F401 - fixtures
from tests.marks import needs_root

POOL4, POOL6 = ipaddress.ip_network("198.18.96.0/22"), ipaddress.ip_network("2001:db8:96::/120")


@pytest.fixture(scope="module")
def cluster(etcd_server, tmp_path_factory):
    return Cluster(etcd_server.url, tmp_path_factory.mktemp("cni"))


def ip_of(doc, i=0):
    return ipaddress.ip_interface(doc["ips"][i]["address"])


def test_add_twice_is_one_address_and_del_twice_succeeds(cluster):
    """The real executable, as a runtime runs it: Calico's handle and attributes, one address however
    often ADD comes, DEL idempotent, `ipam check` clean afterwards."""
    exe = str(cluster.bin_dir / "calico-bgp-ipam")
    env = cluster.env("ADD", "c-twice", CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0")
    code, first, err = exec_plugin(exe, cluster.conf(), env)
    assert code == 0, (first, err)
    assert ip_of(first).ip in POOL4 and ip_of(first).network.prefixlen == 28
    assert first["ips"][0]["gateway"] == "169.254.1.1" and "interfaces" not in first
    assert "event=cni_ipam_add" in err and not err.startswith("{")
    code, second, _ = exec_plugin(exe, cluster.conf(), env)
    assert code == 0 and second["ips"] == first["ips"]
    held = cluster.addresses()["net1.c-twice"]
    assert [u.ip for u in held] == [str(ip_of(first).ip)]
    assert {k: held[0].owner_attrs[k] for k in ("node", "namespace", "pod")} == {
        "node": "n1", "namespace": "shop", "pod": "web-0"}
    for _ in range(2):
        code, out, err = exec_plugin(exe, cluster.conf(), {**env, "CNI_COMMAND": "DEL"})
        assert (code, out) == (0, None), err
    assert "net1.c-twice" not in cluster.addresses()
    assert cluster.check()["clean"]


def test_del_also_releases_what_an_older_plugin_allocated_under_the_workload_id(cluster):
    """Calico's cmdDel (cni-plugin/pkg/ipamplugin/ipam_plugin.go) releases by handle, then by the workload
    ID its v2.x plugins allocated under: `<namespace>.<pod>` for a pod, else the container ID; another
    pod's allocation stays."""
    for handle in ("shop.web-7", "c-old", "shop.web-8"):
        res = cluster.cli("ipam", "allocate", "--node", "n1", "--handle", handle, "--pool", "pool4")
        assert res.exit_code == 0, res.output
    pod = cluster.env("DEL", "c-new", CNI_ARGS="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-7")
    assert invoke("DEL", cluster.conf(), pod) == (0, None)
    assert invoke("DEL", cluster.conf(), cluster.env("DEL", "c-old")) == (0, None)
    assert set(cluster.addresses()) & {"shop.web-7", "c-old", "shop.web-8"} == {"shop.web-8"}
    assert cluster.cli("ipam", "release", "--handle", "shop.web-8").exit_code == 0


@pytest.mark.parametrize("version, has_version", [("0.4.0", True), ("1.0.0", False), ("1.1.0", False)])
def test_the_result_is_written_in_the_configs_version(cluster, version, has_version):
    code, doc = invoke("ADD", cluster.conf(cniVersion=version), cluster.env("ADD", f"c-v{version[0]}{version[2]}"))
    assert code == 0 and doc["cniVersion"] == version and ("version" in doc["ips"][0]) == has_version
    assert invoke("DEL", cluster.conf(cniVersion=version), cluster.env("DEL", f"c-v{version[0]}{version[2]}"))[0] == 0


def test_dual_stack_and_routes_from_the_ipam_section(cluster):
    conf = cluster.conf(ipam={"type": "calico-bgp-ipam", "assign_ipv6": "true", "ipv4_pools": ["198.18.96.0/22"],
                              "ipv6_pools": ["pool6"], "routes": [{"dst": "0.0.0.0/0"}]})
    code, doc = invoke("ADD", conf, cluster.env("ADD", "c-dual"))
    assert code == 0, doc
    assert [ip_of(doc, i).ip in net for i, net in enumerate((POOL4, POOL6))] == [True, True]
    assert doc["ips"][1]["gateway"] == "fe80::1" and doc["routes"] == [{"dst": "0.0.0.0/0"}]
    code, again = invoke("ADD", conf, cluster.env("ADD", "c-dual"))
    assert again["ips"] == doc["ips"]
    assert invoke("CHECK", {**conf, "prevResult": doc}, cluster.env("CHECK", "c-dual")) == (0, None)
    assert invoke("DEL", conf, cluster.env("DEL", "c-dual")) == (0, None)
    code, doc = invoke("CHECK", {**conf, "prevResult": doc}, cluster.env("CHECK", "c-dual"))
    assert code == 1 and doc["code"] == error.UNKNOWN_CONTAINER


def test_check_names_an_address_ipam_does_not_hold(cluster):
    code, doc = invoke("ADD", cluster.conf(), cluster.env("ADD", "c-check"))
    wrong = {**doc, "ips": [{"address": "198.18.99.250/28"}]}
    code, err = invoke("CHECK", cluster.conf(prevResult=wrong), cluster.env("CHECK", "c-check"))
    assert code == 1 and err["code"] == error.ALLOCATION_MISMATCH and "198.18.99.250" in err["msg"]
    code, err = invoke("CHECK", cluster.conf(), cluster.env("CHECK", "c-check"))
    assert err["code"] == error.INVALID_CONFIG and "prevResult" in err["msg"]
    invoke("DEL", cluster.conf(), cluster.env("DEL", "c-check"))


def test_gc_releases_exactly_what_valid_attachments_does_not_list(cluster):
    for cid, node, net in (("g1", "n1", "gcnet"), ("g2", "n1", "gcnet"), ("g3", "n1", "gcnet"), ("g4", "n2", "gcnet"),
                           ("g5", "n1", "othernet")):
        assert invoke("ADD", cluster.conf(node, name=net), cluster.env("ADD", cid))[0] == 0
    valid = [{"containerID": "g1", "ifname": "eth0"}, {"containerID": "g3", "ifname": "eth0"}]
    conf = cluster.conf("n1", name="gcnet", **{"cni.dev/valid-attachments": valid})
    assert invoke("GC", conf, {"CNI_PATH": str(cluster.bin_dir)}) == (0, None)
    held = set(cluster.addresses())
    # g2 is gone; g4 (another node's: not this runtime's to judge) and g5 (another network) stay
    assert {"gcnet.g1", "gcnet.g3", "gcnet.g4", "othernet.g5"} <= held and "gcnet.g2" not in held
    code, doc = invoke("GC", cluster.conf("n1", name="gcnet"), {"CNI_PATH": str(cluster.bin_dir)})
    assert code == 1 and doc["code"] == error.INVALID_CONFIG and "valid-attachments" in doc["msg"]
    code, doc = invoke("GC", cluster.conf(cniVersion="1.0.0", **{"cni.dev/valid-attachments": []}), {})
    assert code == 1 and doc["code"] == error.INCOMPATIBLE_VERSION
    for cid, node, net in (("g1", "n1", "gcnet"), ("g3", "n1", "gcnet"), ("g4", "n2", "gcnet"), ("g5", "n1", "othernet")):
        invoke("DEL", cluster.conf(node, name=net), cluster.env("DEL", cid))


def test_gc_of_a_network_leaves_a_dotted_networks_addresses_alone(cluster):
    """Handles are `<network>.<container>` and both may hold dots: GC on `dot` must not read
    `dot.a.c1` (network `dot.a`, container `c1`) as its own container `a.c1`."""
    assert invoke("ADD", cluster.conf(name="dot.a"), cluster.env("ADD", "c1"))[0] == 0
    assert invoke("ADD", cluster.conf(name="dot"), cluster.env("ADD", "c2"))[0] == 0
    assert invoke("ADD", cluster.conf(name="dot"), cluster.env("ADD", "c.3"))[0] == 0
    conf = cluster.conf(name="dot", **{"cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "eth0"}]})
    assert invoke("GC", conf, {}) == (0, None)
    held = cluster.addresses()
    assert "dot.a.c1" in held and "dot.c2" in held and "dot.c.3" not in held  # c.3 is dot's, and stale
    assert {held["dot.a.c1"][0].owner_attrs[k] for k in ("network", "container")} == {"dot.a", "c1"}
    for net, cid in (("dot.a", "c1"), ("dot", "c2")):
        invoke("DEL", cluster.conf(name=net), cluster.env("DEL", cid))


def test_status_is_50_while_etcd_is_stopped(tmp_path):
    with EtcdServer() as etcd:
        cluster = Cluster(etcd.url, tmp_path)
        assert invoke("STATUS", cluster.conf(), {}) == (0, None)
        code, doc = invoke("STATUS", cluster.conf("n2", ipam={"type": "calico-bgp-ipam", "assign_ipv4": "false",
                                                              "assign_ipv6": "true"}), {})
        assert code == 0, doc
        etcd.stop()
        code, doc = invoke("STATUS", cluster.conf(), {})
        assert code == 1 and doc["code"] == error.NOT_AVAILABLE and "unreachable" in doc["msg"]
        code, doc = invoke("ADD", cluster.conf(), cluster.env("ADD", "c-down"))
        assert code == 1 and doc["code"] == error.TRY_AGAIN_LATER and etcd.url in doc["msg"]
        code, doc = invoke("DEL", cluster.conf(), cluster.env("DEL", "c-down"))
        assert code == 1 and doc["code"] == error.TRY_AGAIN_LATER  # the runtime must retry: nothing was released


def test_status_is_50_when_no_pool_serves_the_node(cluster, tmp_path):
    tiny = {"type": "calico-bgp-ipam", "ipv4_pools": ["tiny4"]}  # its nodeSelector picks n1 alone
    assert invoke("STATUS", cluster.conf("n1", ipam=tiny), {}) == (0, None)
    # named, it serves n2 too: named pools are used whatever their nodeSelector (Calico's determinePools)
    assert invoke("STATUS", cluster.conf("n2", ipam=tiny), {}) == (0, None)
    bare = Cluster(cluster.url, tmp_path)  # a cluster whose only IPv4 pool without a selector is gone
    assert bare.cli("delete", "ippool", "pool4").exit_code == 0
    assert invoke("STATUS", bare.conf("n1"), {}) == (0, None)  # tiny4 selects n1
    code, doc = invoke("STATUS", bare.conf("n2"), {})
    assert code == 1 and doc["code"] == error.NOT_AVAILABLE and "node n2" in doc["msg"]
    cluster.cli("apply", "-f", "-", input="apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: off4}\n"
                                          "spec: {cidr: 198.18.101.0/24, disabled: true}\n")
    code, doc = invoke("STATUS", cluster.conf("n2", ipam={"type": "calico-bgp-ipam", "ipv4_pools": ["off4"]}), {})
    assert code == 1 and doc["code"] == error.INVALID_CONFIG and "disabled" in doc["msg"]


def test_calicos_etcd_tls_fields_reach_an_etcd_that_wants_client_certificates(make_etcd, pki, tmp_path):  # noqa: F811
    server = make_etcd(tls=pki, extra=["--cert-file", pki["cert"], "--key-file", pki["key"],
                                       "--trusted-ca-file", pki["ca"], "--client-cert-auth"])
    tls = {"etcd_ca_cert_file": pki["ca"], "etcd_cert_file": pki["client_cert"], "etcd_key_file": pki["client_key"]}
    conf = {"cniVersion": "1.1.0", "name": "tlsnet", "type": "ptp", "etcd_endpoints": server.url, "nodename": "n1",
            "ipam_lock_file": str(tmp_path / "lock"), "cni.dev/valid-attachments": [], **tls}
    assert invoke("GC", conf, {}) == (0, None)  # lists this node's handles over TLS: none
    code, doc = invoke("GC", {**conf, "etcd_cert_file": "", "etcd_key_file": ""}, {})
    assert code == 1 and doc["code"] == error.TRY_AGAIN_LATER and server.url in doc["msg"]
    code, doc = invoke("GC", {**conf, "etcd_cert_file": str(tmp_path / "absent.pem")}, {})
    assert code == 1 and doc["code"] == error.INVALID_CONFIG and "etcd_cert_file" in doc["msg"]


# --- bad input: the spec's error JSON, a clear message, nothing left allocated ---------------------
@pytest.mark.parametrize("case, code, names", [
    ("malformed JSON", error.DECODE_FAILURE, "not JSON"),
    ("missing CNI_NETNS", error.INVALID_ENV, "CNI_NETNS"),
    ("unknown CNI_COMMAND", error.INVALID_ENV, "SPLICE"),
    ("pool that does not exist", error.INVALID_CONFIG, "'no-such-pool'"),
    ("unsupported cniVersion", error.INCOMPATIBLE_VERSION, "0.3.1"),
    ("etcd unreachable", error.TRY_AGAIN_LATER, "127.0.0.1:9"),
])
def test_bad_input_is_the_specs_error_and_allocates_nothing(cluster, case, code, names):
    before = cluster.in_use()
    conf, env, command = cluster.conf(), cluster.env("ADD", "c-bad"), "ADD"
    if case == "malformed JSON":
        conf = b'{"cniVersion": "1.1.0", "name": "net1", "ipam": {'
    elif case == "missing CNI_NETNS":
        del env["CNI_NETNS"]
    elif case == "unknown CNI_COMMAND":
        command = "SPLICE"
    elif case == "pool that does not exist":
        conf["ipam"] = {"type": "calico-bgp-ipam", "ipv4_pools": ["no-such-pool"]}
    elif case == "unsupported cniVersion":
        conf["cniVersion"] = "0.3.1"
    else:
        conf["etcd_endpoints"] = "http://127.0.0.1:9"
    got, doc = invoke(command, conf, env)
    assert got == 1 and doc["code"] == code and names in doc["msg"], doc
    assert set(doc) <= {"cniVersion", "code", "msg", "details"}
    assert cluster.in_use() == before and "net1.c-bad" not in cluster.addresses()


def test_an_exhausted_pool_is_error_100_and_leaves_nothing(cluster):
    conf = cluster.conf(name="tiny", ipam={"type": "calico-bgp-ipam", "ipv4_pools": ["tiny4"]})
    got = [invoke("ADD", conf, cluster.env("ADD", f"t{i}")) for i in range(4)]
    assert all(code == 0 for code, _ in got) and len({d["ips"][0]["address"] for _, d in got}) == 4
    code, doc = invoke("ADD", conf, cluster.env("ADD", "t4"))
    assert code == 1 and doc["code"] == error.POOL_EXHAUSTED and "tiny4" in doc["msg"]
    assert "tiny.t4" not in cluster.addresses()
    for i in range(4):
        invoke("DEL", conf, cluster.env("DEL", f"t{i}"))


def test_an_add_that_fails_half_way_gives_back_what_it_took(cluster):
    """IPv4 allocated, then IPv6's pool exhausted: the IPv4 address is released, the handle gone."""
    conf6 = cluster.conf(name="half", ipam={"type": "calico-bgp-ipam", "assign_ipv4": "false", "assign_ipv6": "true",
                                            "ipv6_pools": ["tiny6"]})
    for i in range(4):
        assert invoke("ADD", conf6, cluster.env("ADD", f"h{i}"))[0] == 0
    before = cluster.in_use()
    dual = cluster.conf(name="half", ipam={"type": "calico-bgp-ipam", "assign_ipv6": "true", "ipv6_pools": ["tiny6"]})
    code, doc = invoke("ADD", dual, cluster.env("ADD", "h-dual"))
    assert code == 1 and doc["code"] == error.POOL_EXHAUSTED and "tiny6" in doc["msg"]
    assert cluster.in_use() == before and "half.h-dual" not in cluster.addresses()
    for i in range(4):
        invoke("DEL", conf6, cluster.env("DEL", f"h{i}"))


# --- Debian's reference plugins with calico-bgp-ipam as their ipam ---------------------------------
@needs_root
@pytest.mark.skipif(not all(os.access(f"/usr/lib/cni/{p}", os.X_OK) for p in ("ptp", "bridge")),
                    reason="needs Debian's containernetworking-plugins (/usr/lib/cni/ptp, bridge)")
@pytest.mark.parametrize("plugin", ["ptp", "bridge"])
def test_a_reference_plugin_attaches_with_our_address(etcd_server, tmp_path, plugin):
    """The plugin runs in a namespace standing in for the host (etcd through its unix socket), attaches
    a container namespace; IPAM gives one address however often it is asked for that container; DEL
    twice succeeds; `ipam check` is clean."""
    cluster = Cluster(etcd_server.url, tmp_path, endpoint=etcd_server.unix_url)
    extra = {"bridge": "cbtest0", "isGateway": True} if plugin == "bridge" else {}
    with netns("h") as host, netns("c") as container:
        conf = cluster.conf(type=plugin, cniVersion="1.0.0", **extra)  # Debian's v1.1.1 plugins speak up to 1.0.0
        env = cluster.env("ADD", "c-ref", CNI_NETNS=f"/var/run/netns/{container}")
        code, doc, err = exec_plugin(f"/usr/lib/cni/{plugin}", conf, env, ns=host)
        assert code == 0, (doc, err)
        addr = next(ip["address"] for ip in doc["ips"])
        assert ipaddress.ip_interface(addr).ip in POOL4
        assert addr in sh("ip", "-o", "addr", "show", "dev", "eth0", ns=container).stdout
        code, again, err = exec_plugin(str(cluster.bin_dir / "calico-bgp-ipam"), conf, env, ns=host)
        assert code == 0 and again["ips"][0]["address"] == addr, err
        assert [u.ip for u in cluster.addresses()["net1.c-ref"]] == [str(ipaddress.ip_interface(addr).ip)]
        for _ in range(2):
            code, out, err = exec_plugin(f"/usr/lib/cni/{plugin}", conf, {**env, "CNI_COMMAND": "DEL"}, ns=host)
            assert code == 0, (out, err)
        assert "eth0" not in sh("ip", "-o", "link", ns=container).stdout
        assert cluster.addresses() == {} and cluster.check()["clean"]



def test_the_node_agents_warm_process_answers_the_executable_by_default(cluster):
    """With what the agent starts running (calico_bgp/agent/ipam_service.py, here without the rest
    of the agent), the executable's invocations are answered by its warm process (their log lines
    carry its pid, not the executable's); results and releases are the same as in process;
    `ipam_service: false` keeps one in its own process; when the agent stops, its process and
    socket go and the executable does the work itself."""
    import re
    import signal
    import subprocess
    import sys

    from calico_bgp.cni import service
    from lab.net import wait_for

    exe = str(cluster.bin_dir / "calico-bgp-ipam")
    conf = cluster.conf(name="svc", ipam={"type": "calico-bgp-ipam", "ipv4_pools": ["pool4"]})
    env = {**os.environ, "PYTHONPATH": ""}  # the launcher names its own paths

    def run(command, cid, conf=conf):
        import json

        p = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**env, **cluster.env(command, cid)})
        out, err = p.communicate(json.dumps(conf).encode(), timeout=60)
        pids = set(re.findall(r"calico-bgp-ipam\[(\d+)\]", err.decode()))
        return p.returncode, (json.loads(out) if out.strip() else None), p.pid, pids

    code, alone, pid, pids = run("ADD", "s0")
    assert code == 0 and pids == {str(pid)}  # no agent: the executable does it
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(service.__file__))))
    agent = subprocess.Popen([sys.executable, "-m", "calico_bgp.agent.ipam_service", "60"],
                             env={**os.environ, "PYTHONPATH": root}, stderr=subprocess.PIPE)
    try:
        wait_for("the agent's socket", lambda: os.path.exists(service.socket_path()) or None, timeout=20)
        code, first, pid, pids = run("ADD", "s1")
        assert code == 0 and pids and str(pid) not in pids  # answered by the warm process
        served_by = int(pids.pop())
        code, again, _, pids = run("ADD", "s1")
        assert again["ips"] == first["ips"] != alone["ips"] and pids == {str(served_by)}
        code, _, pid, pids = run("ADD", "s3", {**conf, "ipam_service": False})
        assert code == 0 and pids == {str(pid)}  # the config keeps it in its own process
        assert ip_of(first).ip in POOL4
        for cid in ("s0", "s1", "s3"):
            assert run("DEL", cid)[0] == 0
        assert not {h for h in cluster.addresses() if h.startswith("svc.")}
    finally:  # nothing outlives the test
        agent.send_signal(signal.SIGTERM)
        _, log = agent.communicate(timeout=20)
    assert agent.returncode == 0 and not os.path.exists(service.socket_path())
    assert not os.path.exists(f"/proc/{served_by}")
    assert f"event=ipam_service_started pid={served_by}" in log.decode()
    assert f"calico-bgp-ipam[{served_by}]" in log.decode()  # the invocations' log lines are in the agent's log
    code, _, pid, pids = run("ADD", "s4")
    assert code == 0 and pids == {str(pid)} and run("DEL", "s4")[0] == 0


def test_an_add_its_executable_gave_up_on_allocates_nothing_once_the_host_lock_comes(cluster, tmp_path, monkeypatch):
    """The warm process starts the ADD (its executable answered `go`: it never runs it itself), then
    waits on the host lock (another plugin holds it) past the executable's deadline; once it holds
    the lock it looks again and writes nothing: the executable reports try-again-later, and a DEL
    the runtime sends meanwhile is not followed by an allocation (flock is not FIFO)."""
    import fcntl
    import json
    import threading

    from calico_bgp.cni import service, warm

    path = str(tmp_path / "svc" / "ipam.sock")
    monkeypatch.setattr(service, "socket_path", lambda: path)
    monkeypatch.setattr(service, "START_MARGIN_S", 0.0)  # the request is taken at once: only the lock holds it
    server, lock = warm.bind(path)
    worker = threading.Thread(target=lambda: warm.serve_socket(server, 2.0), daemon=True)
    worker.start()
    conf = json.dumps(cluster.conf(name="late")).encode()
    held = os.open(cluster.conf()["ipam_lock_file"], os.O_RDWR | os.O_CREAT, 0o600)
    replies = {}
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # another plugin's operation
        monkeypatch.setattr(service, "CLIENT_TIMEOUT_S", 0.5)
        late = threading.Thread(target=lambda: replies.update(late=service.ask(cluster.env("ADD", "c-late"), conf)))
        late.start()
        late.join(0.6)  # the lock is held past the executable's 0.5 s: started, it waits on for the reply
        assert late.is_alive()
    finally:
        os.close(held)
    late.join(10)
    code, out, _ = replies["late"]
    assert code == 1 and json.loads(out)["code"] == 11  # try again later: not run in the executable's process
    monkeypatch.setattr(service, "CLIENT_TIMEOUT_S", 30.0)
    code, _, err = service.ask(cluster.env("DEL", "c-other"), conf)  # answered after the late ADD ran
    try:
        assert code == 0, err
        assert "late.c-late" not in cluster.addresses()
    finally:
        worker.join(10)
        warm.unbind(path, server, lock)
        invoke("DEL", cluster.conf(name="late"), cluster.env("DEL", "c-late"))
