"""The XDP program itself, packet by packet, through BPF_PROG_TEST_RUN: no interface, no traffic.

Every crafted packet's verdict is checked against the reference semantics (InterfaceFilter.decide),
including the parsing limits the README documents (IPv4 options and fragments, IPv6 extension
headers, VLAN tags, ICMPv6 neighbour discovery), and the counters it lands on.
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from dataplane.filters.rules import (
    FAILSAFE_RULE,
    Action,
    FilterRule,
    PortRange,
    RuleId,
    compile_interface,
    default_failsafe,
    parse_network,
)
from dataplane.filters.xdp import bpf, enforce, libbpf
from dataplane.filters.xdp.enforce import XdpFilter
from dataplane.filters.xdp.loader import BPF_FS_MAGIC, XdpError, XdpLoader, _fs_type, unmount_bpffs
from lab.net import netns, sh
from tests.marks import needs_root

OBJ = Path(__file__).resolve().parents[2] / "dataplane" / "filters" / "xdp" / "filter.o"
pytestmark = [needs_root, pytest.mark.root,
              pytest.mark.skipif(not OBJ.exists(), reason=f"{OBJ} is missing: run `make -C dataplane/filters/xdp`")]

XDP_DROP, XDP_PASS = 1, 2
TCP, UDP, ICMP6 = 6, 17, 58
DENIED4, ALLOWED4, DENIED6 = "198.18.1.7", "198.18.2.7", "2001:db8:1::7"


def rule(net, action, idx, proto=None, ports=()):
    return FilterRule(parse_network(net), Action(action), RuleId("t", idx), proto,
                      tuple(PortRange.parse(p) for p in ports))


RULES = [rule("198.18.0.0/16", "Deny", 0), rule("198.18.2.0/24", "Allow", 1),
         rule("198.18.1.0/24", "Allow", 2, TCP, (443, "8000:8001")), rule("2001:db8:1::/48", "Deny", 3),
         rule("2001:db8:1::/48", "Allow", 4, UDP)]


@pytest.fixture
def prog(tmp_path):
    f = compile_interface("t0", RULES, default_failsafe())
    xf = XdpFilter(pin_root=tmp_path / "bpf", state_dir=tmp_path / "state")
    p = xf.loader.open_or_load("t0")
    try:
        xf.program_maps(p, f)
        yield p, f, xf
    finally:
        p.close()
        with contextlib.suppress(OSError):
            if _fs_type(tmp_path / "bpf") == BPF_FS_MAGIC:
                unmount_bpffs(tmp_path / "bpf")


# -- packet builders --------------------------------------------------------------------------

def eth(ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    head = b"\x02" * 6 + b"\x04" * 6
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    return head + struct.pack("!H", ethertype) + payload


def l4(proto: int, dport: int) -> bytes:
    if proto == TCP:
        return struct.pack("!HHIIBBHHH", 40000, dport, 0, 0, 0x50, 0x02, 1024, 0, 0)
    if proto == UDP:
        return struct.pack("!HHHH", 40000, dport, 8, 0) + b"x" * 18
    return b"\x80\x00" + b"\0" * 30


def ipv4(src: str, proto: int, payload: bytes, ihl: int = 5, frag: int = 0) -> bytes:
    opts = b"\x01" * ((ihl - 5) * 4)   # NOP options
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(opts) + len(payload), 1, frag, 64, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address("198.18.0.1").packed)
    return eth(0x0800, hdr + opts + payload)


def ipv6(src: str, nexthdr: int, payload: bytes) -> bytes:
    hdr = struct.pack("!IHBB16s16s", 0x60000000, len(payload), nexthdr, 64,
                      ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address("2001:db8::1").packed)
    return eth(0x86DD, hdr + payload)


def ext(nexthdr: int) -> bytes:          # an 8-byte hop-by-hop / destination options header
    return struct.pack("!BB6s", nexthdr, 0, b"\x01\x04\0\0\0\0")


def frag6(nexthdr: int, offset: int, more: bool) -> bytes:
    return struct.pack("!BBHI", nexthdr, 0, (offset << 3) | int(more), 7)


def run(p, packet: bytes) -> int:
    return bpf.prog_test_run(p.prog_fd, packet)[0]


def verdict(f, src, proto, dport) -> int:
    return XDP_PASS if f.decide(src, proto, dport).passed else XDP_DROP


# -- cases ------------------------------------------------------------------------------------

@pytest.mark.parametrize("src, proto, dport", [
    (DENIED4, UDP, 53), (DENIED4, TCP, 179), (DENIED4, UDP, 68), (DENIED4, TCP, 443), (DENIED4, TCP, 8001),
    (DENIED4, TCP, 8002), (ALLOWED4, UDP, 53), ("198.18.3.1", TCP, 22), ("198.18.3.1", TCP, 23),
    ("198.19.0.1", UDP, 53), ("198.18.1.255", 1, None),
])
def test_ipv4_matches_the_reference_semantics(prog, src, proto, dport):
    p, f, _ = prog
    assert run(p, ipv4(src, proto, l4(proto, dport or 0))) == verdict(f, src, proto, dport)


def test_ipv4_options_and_fragments(prog):
    p, f, _ = prog
    assert run(p, ipv4(DENIED4, TCP, l4(TCP, 179), ihl=8)) == XDP_PASS          # port found past options
    assert run(p, ipv4(DENIED4, TCP, l4(TCP, 80), ihl=8)) == XDP_DROP
    assert run(p, ipv4(DENIED4, TCP, l4(TCP, 179), frag=0x2000)) == XDP_PASS     # first fragment (MF)
    assert run(p, ipv4(DENIED4, TCP, l4(TCP, 179), frag=0x0010)) == XDP_DROP     # later fragment: no port
    assert run(p, ipv4(DENIED4, TCP, l4(TCP, 179), ihl=4)) == XDP_DROP           # bogus IHL: no port


@pytest.mark.parametrize("src, proto, dport", [
    (DENIED6, TCP, 179), (DENIED6, TCP, 80), (DENIED6, UDP, 9999), ("2001:db8:2::1", TCP, 80),
])
def test_ipv6_matches_the_reference_semantics(prog, src, proto, dport):
    p, f, _ = prog
    assert run(p, ipv6(src, proto, l4(proto, dport))) == verdict(f, src, proto, dport)


def test_ipv6_extension_headers_up_to_the_documented_limit(prog):
    p, _, _ = prog
    tcp179 = l4(TCP, 179)
    assert run(p, ipv6(DENIED6, 0, ext(TCP) + tcp179)) == XDP_PASS                       # hop-by-hop
    assert run(p, ipv6(DENIED6, 0, ext(60) + ext(TCP) + tcp179)) == XDP_PASS             # two
    assert run(p, ipv6(DENIED6, 0, ext(60) + ext(60) + ext(TCP) + tcp179)) == XDP_PASS   # three: the limit
    assert run(p, ipv6(DENIED6, 0, ext(60) + ext(60) + ext(60) + ext(TCP) + tcp179)) == XDP_DROP  # four
    assert run(p, ipv6(DENIED6, 44, frag6(TCP, 0, True) + tcp179)) == XDP_PASS           # first fragment
    assert run(p, ipv6(DENIED6, 44, frag6(TCP, 8, False) + tcp179)) == XDP_DROP          # a later one
    assert run(p, ipv6(DENIED6, 44, frag6(UDP, 8, False) + l4(UDP, 1))) == XDP_PASS      # proto-wide Allow


def test_neighbour_discovery_vlan_and_arp_pass(prog):
    p, _, _ = prog
    for nd_type in (133, 134, 135, 136, 137):
        assert run(p, ipv6(DENIED6, ICMP6, bytes([nd_type]) + b"\0" * 23)) == XDP_PASS
    assert run(p, ipv6(DENIED6, ICMP6, bytes([128]) + b"\0" * 23)) == XDP_DROP          # echo request
    assert run(p, eth(0x0800, ipv4(DENIED4, UDP, l4(UDP, 53))[14:], vlan=5)) == XDP_PASS
    assert run(p, eth(0x0806, b"\0" * 28)) == XDP_PASS


def test_truncated_packets_pass(prog):
    p, _, _ = prog
    full = ipv4(DENIED4, TCP, l4(TCP, 179))
    for n in (14, 20, 33, 34, 36):
        assert run(p, full[:n]) in (XDP_PASS, XDP_DROP)       # never a verifier-escaping read
    assert run(p, full[:14 + 20]) == XDP_DROP                  # header only: no port, denied
    assert run(p, full[:20]) == XDP_PASS                       # not even an IPv4 header


def test_counters_land_on_the_deciding_rule(prog):
    p, f, xf = prog
    before = {c.rule_id: c for c in xf.counters()}
    run(p, ipv4(DENIED4, TCP, l4(TCP, 443)))           # exception of rule 2
    run(p, ipv4(DENIED4, TCP, l4(TCP, 179)))           # failsafe
    run(p, ipv4(DENIED4, UDP, l4(UDP, 53)))            # the Deny, rule 0
    run(p, ipv4(ALLOWED4, UDP, l4(UDP, 53)))           # the Allow, rule 1
    after = {c.rule_id: c for c in xf.counters()}
    for rid in (RuleId("t", 2), FAILSAFE_RULE, RuleId("t", 0), RuleId("t", 1)):
        assert after[rid].packets == before[rid].packets + 1, rid
    assert after[RuleId("t", 0)].bytes - before[RuleId("t", 0)].bytes == 20 + 8 + 18


def test_program_cost_against_a_minimal_lpm_drop(prog, tmp_path):
    """Not a timed assertion: prints the in-kernel cost per packet (PROG_TEST_RUN, 1,000 prefixes)."""
    p, _, xf = prog
    rules = [rule(f"198.19.{i // 250}.{i % 250}/32", "Deny", 0) for i in range(999)] + [rule("198.18.1.0/24", "Deny", 0)]
    xf.program_maps(p, compile_interface("t0", rules, default_failsafe()))
    pkt = ipv4(DENIED4, UDP, l4(UDP, 9))
    ours = min(bpf.prog_test_run(p.prog_fd, pkt, repeat=200000)[1] for _ in range(5))
    assert run(p, pkt) == XDP_DROP
    print(f"\nXDP program cost per packet (test_run): ours {ours} ns")


# -- the object file ---------------------------------------------------------------------------

def test_iproute2_attaches_and_detaches_the_object():
    """`ip link set dev X xdp obj filter.o sec xdp` (iproute2 reads it with libbpf) accepts the object:
    its maps are BTF-defined, not the legacy "maps" section libbpf 1.0 refuses."""
    with netns("x") as ns:
        sh("ip", "link", "add", "xdp0", "type", "veth", "peer", "name", "xdp1", ns=ns)
        for ifname in ("xdp0", "xdp1"):
            sh("ip", "link", "set", ifname, "up", ns=ns)
        r = sh("ip", "link", "set", "dev", "xdp0", "xdp", "obj", str(OBJ), "sec", "xdp", ns=ns, check=False)
        assert r.returncode == 0, r.stderr
        link = json.loads(sh("ip", "-j", "-d", "link", "show", "xdp0", ns=ns).stdout)[0]
        assert link["xdp"]["prog"]["name"].startswith("cbf_")
        sh("ip", "link", "set", "dev", "xdp0", "xdp", "off", ns=ns)
        link = json.loads(sh("ip", "-j", "-d", "link", "show", "xdp0", ns=ns).stdout)[0]
        assert "xdp" not in link


def test_the_objects_maps_have_the_layouts_enforce_encodes():
    spec = libbpf.inspect(OBJ)
    maps = {m.name: m for m in spec.maps}
    assert spec.program.startswith("cbf_") and len(spec.program) <= 15    # the kernel keeps 15 characters
    assert sorted(maps) == ["cb_counters", "cb_exc", "cb_failsafe", "cb_v4", "cb_v6"]
    assert (maps["cb_v4"].key_size, maps["cb_v6"].key_size) == (4 + 4, 4 + 16)
    assert maps["cb_v4"].value_size == maps["cb_v6"].value_size == enforce._VERDICT.size
    assert (maps["cb_exc"].key_size, maps["cb_exc"].value_size) == (enforce._EXC_KEY.size, 4)
    assert (maps["cb_failsafe"].value_size, maps["cb_failsafe"].max_entries) == (8, enforce.FAILSAFE_WORDS)
    assert maps["cb_counters"].value_size == 16     # packets, bytes: u64 each, per CPU


def _build(tmp_path: Path, name: str, source: str) -> Path:
    src, obj = tmp_path / f"{name}.c", tmp_path / f"{name}.o"
    src.write_text(source)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{os.uname().machine}-linux-gnu",
                    "-c", str(src), "-o", str(obj)], check=True)
    return obj


LEGACY = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct map_def { __u32 type, key_size, value_size, max_entries, map_flags; };
struct map_def SEC("maps") cb_v4 = { BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0 };
SEC("xdp") int cbf_legacy(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
"""

UNSAFE = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int cbf_unsafe(struct xdp_md *ctx) { return *(char *)(long)ctx->data; }
char _license[] SEC("license") = "GPL";
"""


def test_an_object_libbpf_refuses_is_an_error_naming_the_call_and_errno(tmp_path):
    with pytest.raises(XdpError) as exc:
        XdpLoader(tmp_path / "bpf", obj_path=_build(tmp_path, "legacy", LEGACY)).object()
    text = str(exc.value)
    assert "bpf_object__open_file" in text and os.strerror(errno.EOPNOTSUPP) in text
    assert "legacy map definitions" in text


def test_a_program_the_verifier_refuses_is_an_error_with_its_log_and_nothing_pinned(tmp_path):
    loader = XdpLoader(tmp_path / "bpf", obj_path=_build(tmp_path, "unsafe", UNSAFE))
    try:
        with pytest.raises(XdpError) as exc:
            loader.open_or_load("t0")
        text = str(exc.value)
        assert "bpf_object__load" in text and os.strerror(errno.EACCES) in text
        assert "invalid access to packet" in text    # the verifier's own words, from its log
        assert loader.pinned_interfaces() == [] and not (tmp_path / "bpf" / "v1" / "t0" / "prog").exists()
    finally:
        with contextlib.suppress(OSError):
            if _fs_type(tmp_path / "bpf") == BPF_FS_MAGIC:
                unmount_bpffs(tmp_path / "bpf")
