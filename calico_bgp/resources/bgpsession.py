"""What BGPConfiguration (the agents' own sessions) and BGPPeer (one peering) both set on a BGP session:
hold and keepalive timers, the graceful-restart time, where the password comes from, origin validation."""
from __future__ import annotations

from typing import Any

import attrs

from calico_bgp.resources.fields import bad, checked, missing, name, one_of, seconds


def hold_time(value: Any) -> int:
    s = seconds(value)
    if s != 0 and not 3 <= s <= 65535:
        raise ValueError("hold time is 0 or 3..65535 seconds (RFC 4271)")
    return s


def optional_hold_time(value: Any) -> int | None:
    return None if value is None else hold_time(value)


def optional_restart_time(value: Any) -> int | None:
    if value is None:
        return None
    t = seconds(value)
    if t > 4095:
        raise ValueError("at most 4095s (the graceful-restart capability has 12 bits for it)")
    return t


def check_timers(hold: int | None, keepalive: int | None) -> None:
    """ExaBGP sends keepalives every third of the negotiated hold time and has no knob for it: a
    keepaliveTime is taken only when it says exactly that (never one that would not be honoured)."""
    if keepalive is None:
        return
    if hold is None:
        raise bad("keepaliveTime", keepalive, "keepalives follow holdTime (a third of it): set holdTime instead")
    if hold == 0 and keepalive:
        raise bad("keepaliveTime", keepalive, "must be 0 when holdTime is 0")
    if hold > 0 and keepalive != hold // 3:
        raise bad("keepaliveTime", keepalive, f"keepalives are sent every third of holdTime ({hold // 3}s here): "
                                               "set holdTime, or leave keepaliveTime out")


def _secret_key(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected the name of a field of the secret")
    return value


def _absolute_path(value: Any) -> str:
    if value in ("", None):
        return ""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("expected an absolute path")
    return value


@attrs.frozen
class SecretKeyRef:
    name: str = attrs.field(converter=checked(name))
    key: str = attrs.field(converter=checked(_secret_key))


@attrs.frozen(repr=False)
class BGPPassword:
    """Where a session password comes from: a secret in etcd (keys.secret(name), field key) or a file
    on the node. The password itself is never part of a resource, so it is never printed."""

    secret_key_ref: SecretKeyRef | None = None
    file: str = attrs.field(default="", converter=checked(_absolute_path))

    def __attrs_post_init__(self) -> None:
        if self.secret_key_ref is None and not self.file:
            raise missing("", "set one of secretKeyRef or file")
        if self.secret_key_ref is not None and self.file:
            raise bad("", {"secretKeyRef": True, "file": self.file}, "set exactly one of secretKeyRef or file")

    def __repr__(self) -> str:
        where = f"secret {self.secret_key_ref.name}/{self.secret_key_ref.key}" if self.secret_key_ref else self.file
        return f"BGPPassword(<from {where}>)"


_origin_mode = one_of("Reject", "Deprefer", "Disabled", case_insensitive=True)  # not "Off": YAML reads that as false


def origin_validation(value: Any) -> str:
    if value is False or value in ("False", "false"):  # a str field gets YAML's false as "false"
        raise ValueError("expected one of Reject, Deprefer, Disabled (an unquoted Off or No is YAML's false)")
    return _origin_mode(value)
