"""Field values of the resources: the errors that name a field, and the parsers that normalise one.

Each parser is pure and raises ValueError (or InvalidField for a nested path) with a reason; `checked`
turns it into an attrs converter that adds the field's JSON name, so an error reads
`spec.peerIP: not a valid IP address (got '198.18.0.300')`.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Callable, Mapping, NewType, TypeVar

import attrs

from calico_bgp.resources import codec
from calico_bgp.resources.selector import Selector, SelectorError
from calico_bgp.resources.selector import parse as parse_selector

T = TypeVar("T")

# ------------------------------------------------------------------------------------------------
# Errors

class InvalidField(ValueError):
    """One field is wrong: `path` (JSON spelling, e.g. spec.blockSize) and the offending value; or,
    `missing`, a required field left out (or null, or empty): `spec.cidr: missing (reason)`."""

    def __init__(self, path: str, value: Any, reason: str, *, missing: bool = False) -> None:
        self.path, self.value, self.reason, self.missing = path, value, reason, missing
        super().__init__(self.message())

    def message(self, prefix: str = "") -> str:
        path = join_path(prefix, self.path)
        if self.missing:
            return f"{path}: missing" + (f" ({self.reason})" if self.reason else "")
        return f"{path}: {self.reason} (got {_show(self.value)})"

    def under(self, prefix: str) -> InvalidField:
        """The same error, one level down: its path under `prefix` (a field name or a list index)."""
        return InvalidField(join_path(prefix, self.path), self.value, self.reason, missing=self.missing)


class InvalidResource(ValueError):
    """A resource (or YAML document, or stored value) does not validate; the message says where and why."""


class UnknownKind(InvalidResource):
    """A kind name that is not one of ours."""


SHOWN_CHARS = 80  # a value in an error line is cut here: a 5 MB value is not echoed whole


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text):,} characters)"


def join_path(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def checked(fn: Callable[[Any], T]) -> Any:
    """An attrs converter that normalises with `fn`; a ValueError/TypeError becomes InvalidField naming the field.
    A required field (no default) that `fn` refuses as null or empty is reported as missing."""
    def convert(value: Any, field: attrs.Attribute) -> T:
        try:
            return fn(value)
        except InvalidField as exc:  # nested: keep the inner path under this field
            raise exc.under(codec.json_name(field.name)) from None
        except (ValueError, TypeError) as exc:
            if field.default is attrs.NOTHING and (value is None or value == ""):
                raise missing(codec.json_name(field.name)) from None
            raise InvalidField(codec.json_name(field.name), value, str(exc)) from None
    return attrs.Converter(convert, takes_field=True)


def bad(field: str, value: Any, reason: str) -> InvalidField:
    return InvalidField(field, value, reason)


def missing(field: str, reason: str = "") -> InvalidField:
    """`field` is required and was not given; `reason` says when it is required, if not always."""
    return InvalidField(field, None, reason, missing=True)


# ------------------------------------------------------------------------------------------------
# Scalar value parsers (pure, raise ValueError with a reason; the converter adds the field)

ASNumber = NewType("ASNumber", int)   # 1..4294967295; "64512.10" (asdot) accepted on input
Seconds = NewType("Seconds", int)     # a duration in whole seconds; "90s", "1m30s" accepted on input
Port = NewType("Port", object)        # 22 or "8000:8080"
Integer = NewType("Integer", int)     # an int checked by the field's converter (cattrs would truncate 2.5 to 2)

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-zA-Z0-9_./-]{1,512}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
AS_MAX = 4294967295


def as_number(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an AS number")
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+\.\d+", text):
            high, low = (int(p) for p in text.split("."))
            if high > 65535 or low > 65535:
                raise ValueError("asdot halves must be 0..65535")
            value = high * 65536 + low
        elif text.isdigit():
            value = int(text)
        else:
            raise ValueError("expected an AS number (1..4294967295 or asdot like 64512.10)")
    if not isinstance(value, int):
        raise ValueError("expected an AS number")
    if not 1 <= value <= AS_MAX:
        raise ValueError("AS number out of range 1..4294967295")
    return value


def optional_as_number(value: Any) -> int | None:
    return None if value is None else as_number(value)


def seconds(value: Any) -> int:
    """90, "90", "90s", "1m30s", "1h" -> whole seconds (Go duration units h, m, s, ms)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, (int, float)):
        total = float(value)
    elif text and text.isdigit():
        total = float(text)
    elif text and re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+", text):
        unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        total = sum(float(n) * unit[u] for n, u in _DURATION.findall(text))
    else:
        raise ValueError("expected a duration in seconds (90) or like '90s', '1m30s'")
    if total < 0 or total != int(total):
        raise ValueError("a duration must be a whole, non-negative number of seconds")
    return int(total)


def optional_seconds(value: Any) -> int | None:
    return None if value is None else seconds(value)


def name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a name is required")
    if len(value) > 253 or not _NAME.match(value):
        raise ValueError("names are lower-case alphanumerics, '-' and '.', starting and ending alphanumeric (max 253)")
    return value


def optional_name(value: Any) -> str:
    return "" if value in (None, "") else name(value)


def cidr(value: Any) -> str:
    """A network in CIDR notation, normalised; host bits set is an error (as Calico does for pools)."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError("expected a CIDR like 198.18.0.0/16 or 2001:db8::/48")
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError("not a valid CIDR") from None
    if net.network_address != ipaddress.ip_interface(value.strip()).ip:
        raise ValueError(f"host bits set; the network is {net}")
    return str(net)


def cidr_v4(value: Any) -> str:
    text = cidr(value)
    if ":" in text:
        raise ValueError("expected an IPv4 CIDR")
    return text


def cidr_v6(value: Any) -> str:
    text = cidr(value)
    if ":" not in text:
        raise ValueError("expected an IPv6 CIDR")
    return text


def ip_address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an IP address")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError("not a valid IP address") from None


def interface(version: int) -> Callable[[Any], str]:
    """An address with its subnet, as Calico's Node bgp.ipv4Address ("198.18.0.1/24"); bare -> /32 or /128."""
    def parse(value: Any) -> str:
        if value in (None, ""):
            return ""
        if not isinstance(value, str):
            raise ValueError("expected an address like 198.18.0.1/24")
        try:
            iface = ipaddress.ip_interface(value.strip())
        except ValueError:
            raise ValueError("not a valid address/prefix") from None
        if iface.version != version:
            raise ValueError(f"expected an IPv{version} address")
        return str(iface)
    return parse


def peer_ip(value: Any) -> str:
    """'198.18.0.1', '198.18.0.1:1790', '2001:db8::1' or '[2001:db8::1]:1790', normalised."""
    if not isinstance(value, str):
        raise ValueError("expected an IP address with an optional port")
    text = value.strip()
    if text == "":
        return ""
    host, port = text, None
    if m := re.fullmatch(r"\[([^\]]+)\]:(\d+)", text):
        host, port = m.group(1), m.group(2)
        if ":" not in host:
            raise ValueError("brackets are for IPv6 addresses only")
    elif text.count(":") == 1:
        host, port = text.split(":")
    addr = ip_address(host)
    if port is None:
        return addr
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("port out of range 1..65535")
    return f"[{addr}]:{int(port)}" if ":" in addr else f"{addr}:{int(port)}"


def split_peer_ip(text: str) -> tuple[str, int | None]:
    """'[2001:db8::1]:1790' -> ('2001:db8::1', 1790); '198.18.0.1' -> ('198.18.0.1', None)."""
    if m := re.fullmatch(r"\[([^\]]+)\]:(\d+)", text):
        return m.group(1), int(m.group(2))
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, None


def community_parser(large_ok: bool, standard_ok: bool = True) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        parts = str(value).split(":") if isinstance(value, str) else []
        if not all(p.isdigit() for p in parts):
            parts = []
        if standard_ok and len(parts) == 2 and all(int(p) <= 65535 for p in parts):
            return f"{int(parts[0])}:{int(parts[1])}"
        if large_ok and len(parts) == 3 and all(int(p) <= AS_MAX for p in parts):
            return ":".join(str(int(p)) for p in parts)
        kinds = [k for k, ok in (("aa:nn (16-bit each)", standard_ok), ("aa:nn:mm (32-bit each)", large_ok)) if ok]
        raise ValueError(f"expected a BGP community {' or '.join(kinds)}")
    return parse


def community(value: Any) -> str:
    return community_parser(True)(value)


def one_of(*choices: str, case_insensitive: bool = False) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        for c in choices:
            if value == c or (case_insensitive and isinstance(value, str) and value.lower() == c.lower()):
                return c
        raise ValueError(f"expected one of {', '.join(choices)}")
    return parse


def tuple_of(fn: Callable[[Any], T]) -> Callable[[Any], tuple[T, ...]]:
    def parse(values: Any) -> tuple[T, ...]:
        if values is None:
            return ()
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError("expected a list")
        out = []
        for i, v in enumerate(values):
            try:
                out.append(fn(v))
            except InvalidField as exc:
                raise exc.under(f"[{i}]") from None
            except (ValueError, TypeError) as exc:
                raise InvalidField(f"[{i}]", v, str(exc)) from None
        return tuple(out)
    return parse


def selector(value: Any) -> Selector:
    try:
        return parse_selector(value)
    except SelectorError as exc:  # the field and value are added by the converter; keep where and what
        raise ValueError(f"expected {exc.expected} at position {exc.pos + 1}") from None


def optional_selector(value: Any) -> Selector | None:
    """Calico: an empty selector on a peer means 'not set'."""
    return None if value in (None, "") else selector(value)


def scalar_text(value: Any) -> Any:
    """What ghodss/yaml makes of a scalar bound for a Go string: numbers and booleans as their text
    (true -> "true", 5 -> "5", 1.5 -> "1.5"); anything else unchanged, for the field to refuse. Here,
    not in yamlread.py: a reader of stored JSON (the agent, a CNI plugin) decodes labels without PyYAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    return value


def _string_map(value: Any, what: str) -> dict[str, str]:
    """A map[string]string as calicoctl decodes one (ghodss/yaml): a number or boolean value becomes its
    text (`yes` -> "true", 5 -> "5"), null the empty string; a list or mapping is refused."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of {what} names to values")
    out = {}
    for k, v in value.items():
        key = scalar_text(k)
        if not isinstance(key, str):
            raise InvalidField("", k, f"{what} names are strings")
        v = "" if v is None else scalar_text(v)
        if not isinstance(v, str):
            raise InvalidField(f"[{key}]", v, f"{what} values are strings, not a list or mapping")
        out[key] = v
    return out


def label_map(value: Any) -> dict[str, str]:
    out = _string_map(value, "label")
    for k, v in out.items():
        if not _LABEL_KEY.match(k):
            raise InvalidField(f"[{k}]", k, "label names are [a-zA-Z0-9_./-], 1..512 chars")
        if len(v) > 253 or ("'" in v and '"' in v):
            raise InvalidField(f"[{k}]", v, "label values are strings (max 253, not both quote kinds)")
    return out


ANNOTATIONS_MAX_BYTES = 256 * 1024  # Kubernetes' TotalAnnotationSizeLimitB (apimachinery ValidateAnnotations)


def annotation_map(value: Any) -> dict[str, str]:
    out = _string_map(value, "annotation")
    total = sum(len(k.encode()) + len(v.encode()) for k, v in out.items())
    if total > ANNOTATIONS_MAX_BYTES:
        raise ValueError(f"annotations total {total:,} bytes (at most {ANNOTATIONS_MAX_BYTES:,}, as Kubernetes)")
    return out


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        if not lo <= value <= hi:
            raise ValueError(f"out of range {lo}..{hi}")
        return value
    return parse


def optional(fn: Callable[[Any], T]) -> Callable[[Any], T | None]:
    return lambda v: None if v is None else fn(v)


def port(value: Any) -> int | str:
    """A port (22) or an inclusive range ('8000:8080')."""
    if isinstance(value, bool):
        raise ValueError("expected a port")
    if isinstance(value, str) and ":" in value:
        lo, _, hi = value.partition(":")
        if lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi) <= 65535:
            return f"{int(lo)}:{int(hi)}"
        raise ValueError("expected a port range like 8000:8080 within 1..65535")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    raise ValueError("expected a port 1..65535 or a range like 8000:8080")
