"""The network configuration on stdin, with Calico's fields, as one checked value.

The fields are Calico's CNI plugin's (projectcalico/calico cni-plugin/pkg/types/types.go
NetConf), so a Calico conflist carries over; the standard ones are the CNI spec's (SPEC.md
1.1.0 "Network configuration", `prevResult`, `cni.dev/valid-attachments`). Calico fields that
mean nothing here are accepted and named once in the log (`ignored`). Fields neither knows are
left alone: an IPAM plugin is handed its main plugin's whole config (ptp's, bridge's).
Undecodable JSON is error 6; a field with a wrong value is error 7 naming it; a datastore other
than etcd is error 2.
"""
from __future__ import annotations

import json
import logging
import os
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

from calico_bgp.cni.env import check_identifier
from calico_bgp.cni.error import DECODE_FAILURE, INVALID_CONFIG, IO_FAILURE, UNSUPPORTED_FIELD, CNIError
from calico_bgp.cni.spec import negotiate

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"  # what calico/node writes (Calico's utils.go)
MTU_FILE = "/var/lib/calico/mtu"  # what calico/node writes: the MTU it detected for workloads
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
              "error": logging.ERROR, "fatal": logging.CRITICAL, "panic": logging.CRITICAL}
# Calico's fields that configure what this project does not have (policy, VXLAN, Windows,
# Kubernetes API access, log rotation): accepted, named once in the log (container_settings is not
# among them: calico-bgp-cni honours its allow_ip_forwarding, as Calico's plugin does)
IGNORED = ("mode", "vxlan_mac_prefix", "vxlan_vni", "num_queues", "etcd_discovery_srv",
           "log_file_max_size", "log_file_max_age", "log_file_max_count", "policy", "kubernetes", "feature_control",
           "include_default_routes", "dataplane_options", "readiness_gates",
           "policy_setup_timeout_seconds", "endpoint_status_dir", "hostname",
           "windows_pod_deletion_timestamp_timeout", "windows_use_single_network",
           "windows_disable_default_deny_all_policy", "windows_loopback_DSR", "policy_type")
IGNORED_IPAM = ("subnet", "ip_pools_label_selector_keys")


class IpamConf(NamedTuple):
    """The `ipam` section: which plugin, which families, which pools (names or CIDRs)."""
    type: str = ""
    assign_ipv4: bool = True
    assign_ipv6: bool = False
    ipv4_pools: tuple[str, ...] = ()
    ipv6_pools: tuple[str, ...] = ()
    routes: tuple[dict[str, Any], ...] = ()  # host-local's `routes`: passed through to the result


class NetConf(NamedTuple):
    """One network configuration, checked; `raw` is the JSON object as given (for delegates)."""
    cni_version: str
    name: str
    type: str
    ipam: IpamConf = IpamConf()
    etcd_endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    etcd_key_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_ca_cert_file: str | None = None
    etcd_prefix: str | None = None  # ours: the cluster's key prefix, when not the default
    nodename: str | None = None
    nodename_file: str | None = None
    nodename_file_optional: bool = False
    mtu: int | None = None
    require_mtu_file: bool = False  # Calico's: a missing /var/lib/calico/mtu fails the ADD
    log_level: int = logging.INFO
    log_file_path: str | None = None
    ipam_lock_file: str | None = None
    prev_result: dict[str, Any] | None = None
    valid_attachments: tuple[tuple[str, str], ...] | None = None  # GC: (containerID, ifname)
    ignored: tuple[str, ...] = ()
    raw: Mapping[str, Any] = MappingProxyType({})


def parse(data: bytes | str) -> NetConf:
    """stdin's bytes -> NetConf, or the CNIError that names what is wrong."""
    try:
        raw = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError as exc:
        raise CNIError(DECODE_FAILURE, f"network config: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise CNIError(DECODE_FAILURE, f"network config: not JSON: {exc.msg} at line {exc.lineno} "
                                       f"column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise CNIError(DECODE_FAILURE, f"network config: must be a JSON object, got {type(raw).__name__}")
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> NetConf:
    version = negotiate(raw.get("cniVersion"), raw.get("cniVersions"))
    name = _str(raw, "name", required=True)
    check_identifier("name", name, INVALID_CONFIG)
    datastore = raw.get("datastore_type") or "etcdv3"
    if datastore != "etcdv3":
        raise CNIError(UNSUPPORTED_FIELD, f"datastore_type: {datastore!r} is not supported (this plugin reads "
                                          "etcd: leave it out or set \"etcdv3\")")
    level_name = _str(raw, "log_level") or "info"
    if level_name.lower() not in LOG_LEVELS:
        raise CNIError(INVALID_CONFIG, f"log_level: {level_name!r} is not one of {', '.join(LOG_LEVELS)}")
    ipam, ignored_ipam = _ipam(raw.get("ipam"))
    _service_flag(raw.get("ipam_service", True))
    return NetConf(
        cni_version=version, name=name, type=_str(raw, "type", required=True), ipam=ipam,
        etcd_endpoints=_endpoints(raw), etcd_key_file=_str(raw, "etcd_key_file") or None,
        etcd_cert_file=_str(raw, "etcd_cert_file") or None, etcd_ca_cert_file=_str(raw, "etcd_ca_cert_file") or None,
        etcd_prefix=_str(raw, "etcd_prefix") or None, nodename=_str(raw, "nodename") or None,
        nodename_file=_str(raw, "nodename_file") or None,
        nodename_file_optional=_bool(raw, "nodename_file_optional", False), mtu=_mtu(raw.get("mtu")),
        require_mtu_file=_bool(raw, "require_mtu_file", False),
        log_level=LOG_LEVELS[level_name.lower()], log_file_path=_str(raw, "log_file_path") or None,
        ipam_lock_file=_str(raw, "ipam_lock_file") or None,
        prev_result=_object(raw, "prevResult"), valid_attachments=_attachments(raw),
        ignored=tuple(k for k in IGNORED if k in raw) + ignored_ipam, raw=raw)


def node_name(conf: NetConf, read: Callable[[str], str] | None = None,
              hostname: Callable[[], str] = lambda: os.uname().nodename) -> str:
    """The node this plugin allocates for, in Calico's order (utils.go DetermineNodename): `nodename`,
    then the nodename file's first line, then the deprecated `hostname` field, then the OS hostname.
    A `nodename_file` that was named but cannot be read is error 7 unless `nodename_file_optional`."""
    if conf.nodename:
        return conf.nodename
    read = read or _read_text
    path = conf.nodename_file or DEFAULT_NODENAME_FILE
    try:
        text = read(path).strip()
    except OSError as exc:
        if conf.nodename_file and not conf.nodename_file_optional:
            raise CNIError(INVALID_CONFIG, f"nodename_file {path}: cannot be read ({exc.strerror or exc}); set "
                                           "nodename, or nodename_file_optional: true") from None
        text = ""
    if text:
        return text
    deprecated = conf.raw.get("hostname")
    return deprecated if isinstance(deprecated, str) and deprecated else hostname()


def workload_mtu(conf: NetConf, read: Callable[[str], str] | None = None,
                 path: str | None = None) -> int | None:
    """The workload interfaces' MTU, as Calico's plugin decides it (cni-plugin/pkg/plugin/plugin.go cmdAdd,
    cni-plugin/internal/pkg/utils/utils.go MTUFromFile). /var/lib/calico/mtu is read on every ADD,
    whatever the config says: a file that exists but cannot be read, or does not hold a whole
    number, is error 5 naming it; a missing file is error 5 when `require_mtu_file` is true, else
    no MTU from the file. Then the config's `mtu` wins when set (not 0); else the file's number
    when not 0 (one outside 68..65535 is error 5 here, where Calico would fail at the link); else
    None (the kernel's default). `path`: MTU_FILE unless given."""
    path = path or MTU_FILE
    try:
        text = (read or _read_text)(path).strip()
    except FileNotFoundError:
        if conf.require_mtu_file:
            raise CNIError(IO_FAILURE, f"MTU file {path}: does not exist and require_mtu_file is true "
                                       "(is calico/node running with /var/lib/calico mounted?)") from None
        text = "0"
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"MTU file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        value = int(text)
    except ValueError:
        raise CNIError(IO_FAILURE, f"MTU file {path}: {text[:40]!r} is not a number") from None
    if conf.mtu:
        return conf.mtu
    if value == 0:
        return None
    if not 68 <= value <= 65535:
        raise CNIError(IO_FAILURE, f"MTU file {path}: {text[:40]!r} is not an MTU from 68 to 65535 (set mtu in the "
                                   "network config to override it)")
    return value


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read(256)


def _str(raw: dict[str, Any], key: str, required: bool = False, where: str = "") -> str:
    value = raw.get(key)
    if value is None or (value == "" and not required):
        if required:
            raise CNIError(INVALID_CONFIG, f"{where}{key}: missing")
        return ""
    if not isinstance(value, str) or (required and not value):
        raise CNIError(INVALID_CONFIG, f"{where}{key}: must be a non-empty string, got {value!r}")
    return value


def _bool(raw: dict[str, Any], key: str, default: bool, where: str = "") -> bool:
    """A flag given as JSON true/false or, as Calico's *string fields take it, "true"/"false"."""
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CNIError(INVALID_CONFIG, f"{where}{key}: must be true or false, got {value!r}")


def _object(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, dict):
        raise CNIError(INVALID_CONFIG, f"{key}: must be a JSON object, got {value!r}")
    return value


def _endpoints(raw: dict[str, Any]) -> tuple[str, ...]:
    """etcd_endpoints ('http://a:2379,https://b:2379'); Calico's older etcd_scheme + etcd_authority too."""
    text = _str(raw, "etcd_endpoints")
    if not text and _str(raw, "etcd_authority"):
        text = f"{_str(raw, 'etcd_scheme') or 'http'}://{_str(raw, 'etcd_authority')}"
    if not text:
        return (DEFAULT_ENDPOINT,)
    out = tuple(e.strip() for e in text.split(",") if e.strip())
    for e in out:
        scheme, sep, rest = e.partition("://")
        if not sep or scheme not in ("http", "https", "unix") or not rest:
            raise CNIError(INVALID_CONFIG, f"etcd_endpoints: {e!r} is not an http://, https:// or unix:// URL")
    if not out:
        raise CNIError(INVALID_CONFIG, f"etcd_endpoints: {text!r} names no endpoint")
    return out


def _service_flag(value: Any) -> None:
    """`ipam_service`: true (the default: the node agent's warm IPAM answers when it runs) or false (every
    invocation in its own process); a number, from configs that gave the old self-started service's idle
    seconds, is true unless 0."""
    if not isinstance(value, (bool, int, float)) or (not isinstance(value, bool) and value < 0):
        raise CNIError(INVALID_CONFIG, "ipam_service: must be true (the node agent's warm IPAM when it answers) or "
                                       f"false (every invocation in its own process), got {value!r}")


def _mtu(value: Any) -> int | None:
    if value is None or value == 0:
        return None  # Calico's 0: the default
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise CNIError(INVALID_CONFIG, f"mtu: must be an integer from 68 to 65535, got {value!r}")
    return value


def _pools(section: dict[str, Any], key: str) -> tuple[str, ...]:
    value = section.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise CNIError(INVALID_CONFIG, f"ipam.{key}: must be a list of pool names or CIDRs, got {value!r}")
    return tuple(value)


def _ipam(section: Any) -> tuple[IpamConf, tuple[str, ...]]:
    if section is None:
        return IpamConf(), ()
    if not isinstance(section, dict):
        raise CNIError(INVALID_CONFIG, f"ipam: must be a JSON object, got {section!r}")
    routes = section.get("routes", [])
    if not isinstance(routes, list) or not all(isinstance(r, dict) and isinstance(r.get("dst"), str) for r in routes):
        raise CNIError(INVALID_CONFIG, f"ipam.routes: must be a list of {{\"dst\": CIDR[, \"gw\": IP]}}, got {routes!r}")
    conf = IpamConf(type=_str(section, "type", where="ipam."),
                    assign_ipv4=_bool(section, "assign_ipv4", True, "ipam."),
                    assign_ipv6=_bool(section, "assign_ipv6", False, "ipam."),
                    ipv4_pools=_pools(section, "ipv4_pools"), ipv6_pools=_pools(section, "ipv6_pools"),
                    routes=tuple(routes))
    return conf, tuple(f"ipam.{k}" for k in IGNORED_IPAM if k in section)


def _attachments(raw: dict[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """GC's list; libcni sends it as both cni.dev/valid-attachments and cni.dev/attachments."""
    key = "cni.dev/valid-attachments" if "cni.dev/valid-attachments" in raw else "cni.dev/attachments"
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise CNIError(INVALID_CONFIG, f"{key}: must be a list of {{containerID, ifname}}, got {value!r}")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str) or not item["containerID"]:
            raise CNIError(INVALID_CONFIG, f"{key}: {item!r} has no containerID")
        out.append((item["containerID"], str(item.get("ifname", ""))))
    return tuple(out)
