"""ExaBGP configuration rendering and Neighbor validation (pure)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from calico_bgp.speaker.config import render_config
from calico_bgp.speaker.errors import InvalidNeighbor
from calico_bgp.speaker.neighbor import IPV4_UNICAST, IPV6_UNICAST, Neighbor

BRIDGE = [sys.executable, "-m", "calico_bgp.speaker.bridge", "--socket", "/tmp/x.sock"]


def nb(peer: str = "198.18.0.2", **kw) -> Neighbor:
    base = dict(peer_address=peer, peer_as=65001, local_as=65000, local_address="198.18.0.1", router_id="198.18.0.1")
    base.update(kw)
    return Neighbor(**base)


def test_renders_process_and_neighbor_blocks():
    text = render_config([nb(md5_password="s3cret", listen_port=1179, add_path=True, graceful_restart=120,
                             families=(IPV6_UNICAST, IPV4_UNICAST), description="tor-a", passive=True,
                             next_hop_v6="2001:db8::1")], BRIDGE)
    assert "process calico-bridge {" in text
    assert f"run {sys.executable} -m calico_bgp.speaker.bridge --socket /tmp/x.sock;" in text
    assert "encoder json;" in text
    for line in ("neighbor 198.18.0.2 {", "router-id 198.18.0.1;", "local-address 198.18.0.1;", "local-as 65000;",
                 "peer-as 65001;", "passive true;", "listen 1179;", 'md5-password "s3cret";', 'description "tor-a";',
                 "add-path send/receive;", "graceful-restart 120;", "processes [ calico-bridge ];",
                 "neighbor-changes;", "parsed;", "open;", "update;", "manual-eor true;"):
        assert line in text, line
    # without graceful restart ExaBGP sends End-of-RIB itself
    assert "manual-eor" not in render_config([nb()], BRIDGE)
    # families in a fixed order whatever order they were given in
    assert text.index("ipv4 unicast;") < text.index("ipv6 unicast;")


def test_output_is_deterministic_and_sorted_by_address():
    a, b, c = nb("198.18.0.10"), nb("198.18.0.9"), nb("2001:db8::2", local_address="2001:db8::1")
    one = render_config([a, b, c], BRIDGE)
    two = render_config([c, a, b], BRIDGE)
    assert one == two
    assert one.index("neighbor 198.18.0.9 ") < one.index("neighbor 198.18.0.10 ") < one.index("neighbor 2001:db8::2 ")


def test_adding_a_neighbor_leaves_the_others_blocks_byte_identical():
    a, b = nb("198.18.0.2"), nb("198.18.0.3")
    before = render_config([a], BRIDGE)
    after = render_config([a, b], BRIDGE)
    block_a = before[before.index("neighbor 198.18.0.2"):]
    assert block_a in after


def test_ipv6_addresses_are_compressed():
    n = nb("2001:DB8:0:0::2", local_address="2001:db8::1")
    assert n.key == "2001:db8::2"
    assert "neighbor 2001:db8::2 {" in render_config([n], BRIDGE)


@pytest.mark.parametrize("field,value", [
    ("peer_address", "not-an-ip"), ("peer_as", 0), ("local_as", 2**32), ("router_id", "2001:db8::1"),
    ("hold_time", 2), ("md5_password", 'a"b'), ("description", "x;y"), ("families", ("ipv4 flow",)),
    ("families", ()), ("local_address", "2001:db8::1"), ("next_hop_v6", "198.18.0.1"), ("peer_port", 70000), ("graceful_restart", 5000),
    ("ttl_security", 256), ("ttl_security", -1), ("ttl_security", True),
])
def test_invalid_neighbors_name_the_field(field, value):
    with pytest.raises(InvalidNeighbor) as err:
        nb(**{field: value})
    assert err.value.field == field


def test_duplicate_peer_addresses_are_rejected():
    with pytest.raises(InvalidNeighbor):
        render_config([nb(), nb(peer_as=65002)], BRIDGE)


def test_unsafe_process_command_rejected():
    with pytest.raises(InvalidNeighbor):
        render_config([nb()], ["/bin/sh", "-c", "rm -rf /; x"])


def test_exabgp_accepts_the_rendered_config(tmp_path: Path):
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_config([
        nb(md5_password="pw", add_path=True, graceful_restart=60, families=(IPV4_UNICAST, IPV6_UNICAST),
           next_hop_v6="2001:db8::1"),
        nb("2001:db8::2", local_address="2001:db8::1", families=(IPV6_UNICAST,), listen_port=1790, ttl_security=2),
    ], BRIDGE))
    exabgp = Path(sys.executable).with_name("exabgp")
    if not exabgp.exists():
        pytest.skip("exabgp not installed next to the interpreter")
    out = subprocess.run([str(exabgp), "validate", str(conf)], capture_output=True, text=True, cwd=tmp_path,
                         env={"exabgp_daemon_user": "root", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr


def test_gtsm_sends_255_and_accepts_only_what_crossed_at_most_the_hops_given():
    """BIRD's `ttl security on; multihop N` (what confd renders for ttlSecurity N): TTL 255 out, and
    at least 256 - N in (proto/bgp/bgp.c sk_set_min_ttl(sk, 256 - hops))."""
    one, two = render_config([nb(ttl_security=1)], BRIDGE), render_config([nb(ttl_security=2)], BRIDGE)
    assert "\toutgoing-ttl 255;\n\tincoming-ttl 255;\n" in one
    assert "\toutgoing-ttl 255;\n\tincoming-ttl 254;\n" in two
    off = render_config([nb()], BRIDGE)
    assert "ttl" not in off
    assert nb(ttl_security=2).minimum_ttl == 254 and nb().minimum_ttl is None


def test_local_as_is_the_sessions_own():
    assert "\tlocal-as 65099;\n\tpeer-as 65001;\n" in render_config([nb(local_as=65099)], BRIDGE)
