"""A CNI result: interfaces, addresses, routes and DNS, read and written in 0.4.0, 1.0.0 or 1.1.0.

Follows containernetworking/cni SPEC.md ("Success", "IP allocation") and pkg/types/100 +
pkg/types/040 (the conversions): 0.4.0 gives each address a "version"; 1.0.0 drops it; 1.1.0
adds an interface's mtu / socketPath / pciID and a route's mtu / advmss / priority / table /
scope. An IPAM plugin's result has no interfaces. Reading accepts any of the three (and 0.3.x,
which has 0.4.0's shape); a result that does not have the spec's shape is error 6.
"""
from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from calico_bgp.cni.error import DECODE_FAILURE, CNIError
from calico_bgp.cni.spec import parse_version

_IFACE_11 = ("mtu", "socketPath", "pciID")
_ROUTE_11 = ("mtu", "advmss", "priority", "table", "scope")


class Interface(NamedTuple):
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None
    socket_path: str = ""
    pci_id: str = ""


class IPConfig(NamedTuple):
    address: str                  # CIDR: the address and its prefix length
    gateway: str | None = None
    interface: int | None = None  # index into the result's interfaces

    @property
    def version(self) -> int:
        return 6 if ":" in self.address else 4

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]


class Route(NamedTuple):
    dst: str
    gw: str | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None


class DNS(NamedTuple):
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


class Result(NamedTuple):
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = DNS()
    interfaces: tuple[Interface, ...] = ()

    def with_interfaces(self, interfaces: tuple[Interface, ...], ip_interface: int | None) -> "Result":
        """The same result with its interfaces set and every address pointing at `ip_interface`."""
        return self._replace(interfaces=interfaces, ips=tuple(ip._replace(interface=ip_interface) for ip in self.ips))


def to_json(result: Result, version: str) -> dict[str, Any]:
    """The result as the spec's JSON for `version`."""
    v11, v04 = parse_version(version) >= (1, 1, 0), parse_version(version) < (1, 0, 0)
    out: dict[str, Any] = {"cniVersion": version}
    if result.interfaces:
        out["interfaces"] = [_iface_json(i, v11) for i in result.interfaces]
    if result.ips:
        out["ips"] = [_ip_json(ip, v04) for ip in result.ips]
    if result.routes:
        out["routes"] = [_route_json(r, v11) for r in result.routes]
    out["dns"] = _drop_empty({"nameservers": list(result.dns.nameservers), "domain": result.dns.domain,
                              "search": list(result.dns.search), "options": list(result.dns.options)})
    return out


def from_json(data: Any) -> Result:
    """A result in any version this plugin reads (a prevResult, a delegate's output)."""
    if not isinstance(data, dict):
        raise CNIError(DECODE_FAILURE, f"result: must be a JSON object, got {type(data).__name__}")
    try:
        ifaces = tuple(Interface(i["name"], i.get("mac", ""), i.get("sandbox", ""), i.get("mtu"),
                                 i.get("socketPath", ""), i.get("pciID", "")) for i in data.get("interfaces") or ())
        ips = tuple(_ip_from(ip) for ip in data.get("ips") or ())
        routes = tuple(_route_from(r) for r in data.get("routes") or ())
        d = data.get("dns") or {}
        dns = DNS(tuple(d.get("nameservers") or ()), d.get("domain", ""), tuple(d.get("search") or ()),
                  tuple(d.get("options") or ()))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CNIError(DECODE_FAILURE, f"result: not the spec's shape: {exc!r}") from None
    return Result(ips, routes, dns, ifaces)


def _ip_from(ip: dict[str, Any]) -> IPConfig:
    address = _text(ip["address"])
    ipaddress.ip_interface(address)  # raises ValueError: not a CIDR
    idx = ip.get("interface")
    if idx is not None and (isinstance(idx, bool) or not isinstance(idx, int) or idx < 0):
        raise ValueError(f"ips: interface index {idx!r}")
    return IPConfig(address, ip.get("gateway") or None, idx)


def _route_from(r: dict[str, Any]) -> Route:
    ipaddress.ip_network(_text(r["dst"]), strict=False)
    return Route(r["dst"], r.get("gw") or None, *(r.get(k) for k in _ROUTE_11))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r}: not a string")
    return value


def _iface_json(i: Interface, v11: bool) -> dict[str, Any]:
    out = {"name": i.name, "mac": i.mac, "sandbox": i.sandbox}
    if v11:
        out.update(mtu=i.mtu, socketPath=i.socket_path, pciID=i.pci_id)
    return _drop_empty(out, keep=("name",))


def _ip_json(ip: IPConfig, v04: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"version": str(ip.version)} if v04 else {}
    out.update(address=ip.address, gateway=ip.gateway, interface=ip.interface)
    return _drop_empty(out)


def _route_json(r: Route, v11: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": r.dst, "gw": r.gw}
    if v11:
        out.update((k, getattr(r, k)) for k in _ROUTE_11)
    return _drop_empty(out)


def _drop_empty(d: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k in keep or (v is not None and v != "" and v != [])}
