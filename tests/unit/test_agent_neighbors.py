"""Sessions -> the speaker's neighbours with their passwords (agent/neighbors.py): a session whose
password cannot be had is never configured without one."""
import pytest

from calico_bgp.agent.neighbors import (PasswordUnavailable, listen_addresses, neighbor_for, next_hop_self,
                                        password_for, read_password_files)
from calico_bgp.resources.bgpsession import BGPPassword, SecretKeyRef
from calico_bgp.resources.documents import load_documents
from calico_bgp.routing.topology import Session


def session(password: BGPPassword | None = None, addr: str = "198.18.0.9", **kw) -> Session:
    local = "2001:db8::1" if ":" in addr else "198.18.0.1"
    base = dict(peer_address=addr, peer_as=65001, local_as=64512, local_address=local, kind="fabric",
                password=password, peer_name="tor")
    base.update(kw)
    return Session(**base)


def test_a_password_comes_from_its_secret_or_its_file():
    secret = BGPPassword(secret_key_ref=SecretKeyRef("bgp", "tor"))
    assert password_for(secret, {"bgp": {"tor": "s3cret"}}, {}) == "s3cret"
    assert password_for(BGPPassword(file="/etc/pw"), {}, {"/etc/pw": "from-file"}) == "from-file"
    assert password_for(None, {}, {}) is None


def test_a_missing_secret_or_unreadable_file_names_what_is_missing():
    with pytest.raises(PasswordUnavailable, match="password secret bgp/tor not found"):
        password_for(BGPPassword(secret_key_ref=SecretKeyRef("bgp", "tor")), {"bgp": {}}, {})
    with pytest.raises(PasswordUnavailable, match="password file /etc/pw unreadable: No such file"):
        password_for(BGPPassword(file="/etc/pw"), {}, {"/etc/pw": FileNotFoundError(2, "No such file or directory")})


def test_password_files_are_read_once_each_and_errors_kept(tmp_path):
    good = tmp_path / "pw"
    good.write_text("  hunter2\n")
    files = read_password_files([session(BGPPassword(file=str(good))), session(BGPPassword(file=str(good))),
                                 session(BGPPassword(file=str(tmp_path / "none"))), session()])
    assert files[str(good)] == "hunter2"
    assert isinstance(files[str(tmp_path / "none")], OSError) and len(files) == 2


def test_a_neighbour_carries_the_sessions_password_family_and_name():
    n = neighbor_for(session(BGPPassword(secret_key_ref=SecretKeyRef("bgp", "tor")), addr="2001:db8::9"),
                     "198.18.0.1", 179, {"bgp": {"tor": "s3cret"}}, {})
    assert n.md5_password == "s3cret" and n.families == ("ipv6 unicast",) and n.description == "tor"


def test_a_session_without_its_password_is_not_built():
    with pytest.raises(ValueError, match="not found"):
        neighbor_for(session(BGPPassword(secret_key_ref=SecretKeyRef("bgp", "tor"))), "198.18.0.1", 179, {}, {})


def test_ttl_security_and_local_as_reach_the_neighbour():
    n = neighbor_for(session(ttl_security=3, local_as=65099), "198.18.0.1", 179, {}, {})
    assert n.ttl_security == 3 and n.minimum_ttl == 253 and n.local_as == 65099 and n.peer_as == 65001


@pytest.mark.parametrize("mode,peer_as,expected", [
    ("Auto", 64512, False),   # iBGP (reflected routes): BIRD keeps the next hop
    ("Auto", 65001, True),    # eBGP: BIRD sets its own
    ("Self", 64512, True),    # `next hop self`, a reflector's clients then route through it
    ("Self", 65001, True),
    ("Keep", 64512, False),   # `next hop keep`
    ("Keep", 65001, False),
])
def test_next_hop_mode_as_calico_renders_it_for_bird(mode, peer_as, expected):
    """confd bgp_processor.go buildPeerFromData: Self -> `next hop self`, Keep (or keepOriginalNextHop)
    -> `next hop keep`, Auto -> neither (BIRD's default: kept on iBGP, ours on eBGP)."""
    s = session(next_hop_mode=mode, peer_as=peer_as)
    assert next_hop_self(s) is expected
    assert neighbor_for(s, "198.18.0.1", 179, {}, {}).next_hop_self is expected


def node(bgp: str):
    return load_documents(f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: n1}}\nspec: {{bgp: {bgp}}}\n")[0]


def config(spec: str = "{}"):
    return load_documents(f"apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {{name: default}}\n"
                          f"spec: {spec}\n")[0]


def test_bind_mode_node_ip_listens_on_the_node_addresses_only():
    me = node('{ipv4Address: 198.18.0.1/24, ipv6Address: "2001:db8:0:0::1/64"}')
    assert listen_addresses(config(), me) is None
    assert listen_addresses(config("{bindMode: None}"), me) is None
    on = listen_addresses(config("{bindMode: NodeIP}"), me)
    assert on == {"198.18.0.1", "2001:db8::1"}
    mesh = neighbor_for(session(addr="198.18.0.2", peer_as=64512, passive=True), "198.18.0.1", 179, {}, {}, on)
    assert mesh.listen_port == 179
    # a ToR reached from the node's address on that link: dialled, never listened for
    tor = neighbor_for(session(addr="198.18.1.1", local_address="198.18.1.11"), "198.18.0.1", 179, {}, {}, on)
    assert tor.listen_port is None and not tor.passive
    assert neighbor_for(session(addr="198.18.1.1", local_address="198.18.1.11"), "198.18.0.1", 179, {}, {}
                        ).listen_port == 179


def test_a_passive_session_nobody_could_reach_under_node_ip_is_refused_with_why():
    s = session(addr="198.18.1.1", local_address="198.18.1.11", passive=True)
    with pytest.raises(ValueError, match="passive session from 198.18.1.11, and bindMode NodeIP listens only on "
                                         "198.18.0.1: the peer could never connect"):
        neighbor_for(s, "198.18.0.1", 179, {}, {}, frozenset({"198.18.0.1"}))
