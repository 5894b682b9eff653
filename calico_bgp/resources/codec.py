"""The one codec for values stored in etcd: attrs classes <-> compact JSON.

Field names are snake_case in Python and camelCase in JSON (Calico's spelling: blockSize,
nodeSelector, peerIP). Unknown keys are an error, so a typo in a stored value is reported,
not silently dropped. A field at its default is left out, unless its class names it in
`always_shown` (Calico's fields that calicoctl prints, or that examples give, at their default).
"""
from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

T = TypeVar("T")

# Python names whose JSON spelling is not plain camelCase.
_SPECIAL = {"peer_ip": "peerIP", "ipv4_address": "ipv4Address", "ipv6_address": "ipv6Address",
            "route_reflector_cluster_id": "routeReflectorClusterID", "as_number": "asNumber",
            "source_ip": "sourceIP", "disable_bgp_export": "disableBGPExport",
            "num_allowed_local_as_numbers": "numAllowedLocalASNumbers", "fabric_as_numbers": "fabricASNumbers",
            "service_cluster_ips": "serviceClusterIPs", "service_external_ips": "serviceExternalIPs",
            "service_load_balancer_ips": "serviceLoadBalancerIPs",
            "local_workload_peering_ipv4": "localWorkloadPeeringIPV4",
            "local_workload_peering_ipv6": "localWorkloadPeeringIPV6",
            "ipv4_ipip_tunnel_addr": "ipv4IPIPTunnelAddr", "ipv4_vxlan_tunnel_addr": "ipv4VXLANTunnelAddr",
            "ipv6_vxlan_tunnel_addr": "ipv6VXLANTunnelAddr", "vxlan_tunnel_mac_addr": "vxlanTunnelMACAddr",
            "vxlan_tunnel_mac_addr_v6": "vxlanTunnelMACAddrV6", "local_as_number": "localASNumber",
            "as_path_prefix": "asPathPrefix", "prepend_as_path": "prependASPath", "ttl_security": "ttlSecurity",
            "ipv4_normal_route_priority": "ipv4NormalRoutePriority", "ipv6_normal_route_priority": "ipv6NormalRoutePriority"}


class DecodeError(ValueError):
    """A stored or supplied value does not decode; the message names the key/field and the problem."""


def json_name(name: str) -> str:
    if name in _SPECIAL:
        return _SPECIAL[name]
    head, *rest = name.lstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _strict_bool(value: Any, _type: Any) -> bool:
    # cattrs' default is bool(value), which turns the string "false" into True.
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _go_string(value: Any, _type: Any) -> str:
    # ghodss/yaml (calicoctl's decoder) gives a Go string field a number's or boolean's text: `yes` ->
    # "true", 5 -> "5"; cattrs' default str() would make "True"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value) if not isinstance(value, float) or not value.is_integer() else str(int(value))
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)

    def unstructure_factory(cls: type) -> Any:
        shown = getattr(cls, "always_shown", frozenset())  # printed at their default too, as calicoctl does
        renames = {a.name: override(rename=json_name(a.name), omit_if_default=a.name not in shown)
                   for a in attrs.fields(cls)}
        return make_dict_unstructure_fn(cls, conv, **renames)

    def structure_factory(cls: type) -> Any:
        renames = {a.name: override(rename=json_name(a.name)) for a in attrs.fields(cls)}
        return make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **renames)

    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(str, _go_string)
    conv.register_structure_hook_factory(attrs.has, structure_factory)
    return conv


converter = _make_converter()


def to_dict(obj: Any) -> Any:
    return converter.unstructure(obj)


def from_dict(cls: type[T], data: Any, *, where: str = "value") -> T:
    """Structure `data` into `cls`; errors become one DecodeError naming `where` and the fields."""
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise DecodeError(f"{where}: {describe(exc)}") from None


def encode(obj: Any) -> bytes:
    return json.dumps(to_dict(obj), separators=(",", ":"), sort_keys=True).encode()


def decode(cls: type[T], raw: bytes | str, *, where: str = "value") -> T:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{where}: not valid JSON ({exc})") from None
    return from_dict(cls, data, where=where)


def describe(exc: BaseException) -> str:
    """One line for a cattrs/attrs validation failure: 'field: problem; field: problem'."""
    if isinstance(exc, cattrs.BaseValidationError):
        msgs = cattrs.transform_error(exc, path="")
        return "; ".join(m.replace(" @ $", " @ ").replace(" @ .", " @ ") for m in msgs)
    return str(exc)
