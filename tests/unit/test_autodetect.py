import ipaddress

import pytest

from calico_bgp.agent.autodetect import AutodetectError, Interface, choose

IF = ipaddress.ip_interface
IFACES = [Interface("lo", (IF("127.0.0.1/8"),)),
          Interface("veth12", (IF("198.18.9.1/24"),)),
          Interface("eth0", (IF("fe80::1/64"), IF("2001:db8::5/64"))),
          Interface("eth1", (IF("198.18.0.5/24"),)),
          Interface("eth2", (IF("198.18.1.5/24"),))]


def test_first_found_skips_excluded_and_loopback():
    assert choose("first-found", IFACES) == IF("198.18.0.5/24")
    assert choose("first-found", IFACES, version=6) == IF("2001:db8::5/64")


def test_interface_regex():
    assert choose("interface=eth2", IFACES) == IF("198.18.1.5/24")
    assert choose("interface=eth[12]", IFACES) == IF("198.18.0.5/24")


def test_can_reach_uses_the_route_source():
    assert choose("can-reach=198.18.1.1", IFACES, route_source="198.18.1.5") == IF("198.18.1.5/24")


@pytest.mark.parametrize("method, fragment", [("interface=nope", "no IPv4 address matched"),
                                              ("interface=(", "bad regular expression"),
                                              ("can-reach=foo", "not an IP address"),
                                              ("magic", "use first-found")])
def test_errors_name_the_method(method, fragment):
    with pytest.raises(AutodetectError, match=fragment.replace("(", r"\(")):
        choose(method, IFACES)
