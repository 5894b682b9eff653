"""Sessions -> the speaker's neighbours with their passwords (agent/neighbors.py): a session whose
password cannot be had is never configured without one."""
import pytest

from calico_bgp.agent.neighbors import PasswordUnavailable, neighbor_for, password_for, read_password_files
from calico_bgp.resources.bgpsession import BGPPassword, SecretKeyRef
from calico_bgp.routing.topology import Session


def session(password: BGPPassword | None = None, addr: str = "198.18.0.9") -> Session:
    local = "2001:db8::1" if ":" in addr else "198.18.0.1"
    return Session(peer_address=addr, peer_as=65001, local_as=64512, local_address=local, kind="fabric",
                   password=password, peer_name="tor")


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
