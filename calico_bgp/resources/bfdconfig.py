"""BFDConfiguration: the BFD timers of the nodes a nodeSelector picks, per interface, in Calico
Enterprise's shape (projectcalico.org/v3), so its YAML applies unchanged. Which sessions they give a
node: routing/bfd.py.

Followed field by field from Calico Enterprise's reference (docs.tigera.io/calico-enterprise/latest/
reference/resources/bfdconfig) and its API type with its kubebuilder defaults (tigera/api
pkg/apis/projectcalico/v3/bfdconfiguration.go):

- `nodeSelector`: the nodes it applies to; left out or empty, every node (as Calico's selector "").
- `interfaces`: a list of entries; an empty list is accepted (as Enterprise's) and runs BFD nowhere.
  - `matchPattern`: an interface name (`eth0`), a name prefix ending in `*` (`eth*`), or `*`;
    left out or empty, `*` (Enterprise's default). Anything else is refused with what is accepted:
    a `*` anywhere but at the end, other glob characters' meaning, or a name Linux would not take
    (over 15 characters, '/', ':', white space).
  - `minimumRecvInterval` (default 10ms), `minimumSendInterval` (default 100ms), `idleSendInterval`
    (default 1m): Kubernetes/Go durations (`300ms`, `1s`, `1m30s`), "a whole number of milliseconds
    greater than 0" as the reference says. A bare number is refused (YAML `300` has no unit).
    Where the reference is silent, chosen here: at most 4294967ms, the largest whole number of
    milliseconds RFC 5880's 32-bit microsecond interval fields carry (section 4.1), as BIRD holds
    them (u32 microseconds in proto/bfd/bfd.h struct bfd_session_config).
  - `multiplier` (default 5): 1..255, the detect multiplier's 8 bits (RFC 5880 section 4.1; BIRD
    keeps it in a u8 and its grammar checks no range, so 256 would silently become 0). Unlike
    Enterprise, where Go's zero value turns an explicit 0 into the default 5, an explicit 0 is
    refused: it is a mistake, not a request for the default.
- Chosen here, the reference being silent: two entries with the same `matchPattern` in one
  configuration are refused (the second could never apply).

A value left out is not stored (`get -o yaml` shows what was set); the `*_ms` properties give the
effective value, default included.
"""
from __future__ import annotations

import re
from typing import Any, ClassVar, Mapping

import attrs

from calico_bgp.resources.durations import Milliseconds, milliseconds
from calico_bgp.resources.fields import Integer, bad, checked, int_range, optional, optional_selector
from calico_bgp.resources.model import Metadata
from calico_bgp.resources.selector import Selector

DEFAULT_RECV_MS = 10
DEFAULT_SEND_MS = 100
DEFAULT_IDLE_SEND_MS = 60_000
DEFAULT_MULTIPLIER = 5
MAX_INTERVAL_MS = (2**32 - 1) // 1000   # RFC 5880 4.1: intervals are 32-bit microseconds

_interval = optional(milliseconds(1, MAX_INTERVAL_MS))

_IFNAME_FORBIDDEN = re.compile(r"[/:*\s]")
IFNAMSIZ = 16  # Linux include/uapi/linux/if.h: 15 characters and the terminating NUL
_PATTERN_HELP = ("expected an interface name (eth0; at most 15 characters, none of '/', ':', '*' or spaces), "
                 "a name prefix ending in '*' (eth*, ens1f*), or '*' for every interface")


def interface_pattern(value: Any) -> str:
    """An interface name, a name prefix followed by '*', or '*'. A name is one Linux accepts
    (net/core/dev.c dev_valid_name: 1..15 characters, not '.' or '..', no '/', ':' or white space);
    a '*' anywhere but at the end, or doubled, is refused."""
    if not isinstance(value, str):
        raise ValueError(_PATTERN_HELP)
    if value == "*":
        return value
    name = value[:-1] if value.endswith("*") else value
    if not name or len(name) >= IFNAMSIZ or name in (".", "..") or _IFNAME_FORBIDDEN.search(name):
        raise ValueError(_PATTERN_HELP)
    return value


def _match_pattern(value: Any) -> str:
    return "*" if value in (None, "") else interface_pattern(value)


@attrs.frozen
class BFDInterface:
    match_pattern: str = attrs.field(default="*", converter=checked(_match_pattern))
    minimum_recv_interval: Milliseconds | None = attrs.field(default=None, converter=checked(_interval))
    minimum_send_interval: Milliseconds | None = attrs.field(default=None, converter=checked(_interval))
    idle_send_interval: Milliseconds | None = attrs.field(default=None, converter=checked(_interval))
    multiplier: Integer | None = attrs.field(default=None, converter=checked(optional(int_range(1, 255))))

    @property
    def min_rx_ms(self) -> int:
        return DEFAULT_RECV_MS if self.minimum_recv_interval is None else self.minimum_recv_interval

    @property
    def min_tx_ms(self) -> int:
        return DEFAULT_SEND_MS if self.minimum_send_interval is None else self.minimum_send_interval

    @property
    def idle_tx_ms(self) -> int:
        return DEFAULT_IDLE_SEND_MS if self.idle_send_interval is None else self.idle_send_interval

    @property
    def detect_multiplier(self) -> int:
        return DEFAULT_MULTIPLIER if self.multiplier is None else self.multiplier

    def matches(self, interface: str) -> bool:
        """Does this entry's pattern match the interface named `interface`?"""
        p = self.match_pattern
        return interface.startswith(p[:-1]) if p.endswith("*") else interface == p

    @property
    def specificity(self) -> tuple[int, int]:
        """How specific the pattern is, for choosing among entries that match one interface:
        an exact name (2, len) over a prefix (1, prefix length: longer wins) over `*` (0, 0)."""
        p = self.match_pattern
        if p == "*":
            return (0, 0)
        return (1, len(p) - 1) if p.endswith("*") else (2, len(p))


@attrs.frozen
class BFDConfigurationSpec:
    node_selector: Selector | None = attrs.field(default=None, converter=checked(optional_selector))
    interfaces: tuple[BFDInterface, ...] = ()

    def __attrs_post_init__(self) -> None:
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.interfaces):
            if entry.match_pattern in seen:
                raise bad(f"interfaces[{i}].matchPattern", entry.match_pattern,
                          f"the same pattern as interfaces[{seen[entry.match_pattern]}]; each pattern once")
            seen[entry.match_pattern] = i

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Does this configuration apply to a node with these labels? (No selector: every node.)"""
        return self.node_selector is None or self.node_selector.matches(labels)

    def entry_for(self, interface: str) -> BFDInterface | None:
        """The entry that applies to `interface`: of those whose pattern matches it, the most
        specific (an exact name, then the longest prefix, then `*`), whatever their order. Patterns
        are unique, so there is never a tie."""
        matching = [e for e in self.interfaces if e.matches(interface)]
        return max(matching, key=lambda e: e.specificity, default=None)


@attrs.frozen
class BFDConfiguration:
    kind: ClassVar[str] = "BFDConfiguration"
    metadata: Metadata
    spec: BFDConfigurationSpec = attrs.field(factory=BFDConfigurationSpec)

    @property
    def name(self) -> str:
        return self.metadata.name
