"""The CNI_* environment of one invocation, parsed and checked for its command.

Follows containernetworking/cni SPEC.md 1.1.0 ("Parameters" and each operation's required
environment) and pkg/skel + pkg/utils (container ID, interface name and network name rules):
a variable the command needs that is missing or malformed is error 4, naming the variable.
"""
from __future__ import annotations

import re
from types import MappingProxyType
from typing import Mapping, NamedTuple

from calico_bgp.cni.error import INVALID_ENV, CNIError
from calico_bgp.cni.spec import COMMANDS

# what each command must be given (SPEC.md 1.1.0); CNI_ARGS is always optional
REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
    "VERSION": (),
}
# the spec's identifier rule for container IDs and network names (pkg/utils/utils.go cniReg)
IDENTIFIER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
MAX_IFNAME = 15  # IFNAMSIZ - 1


class Invocation(NamedTuple):
    """What the runtime passed in the environment."""
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Mapping[str, str] = MappingProxyType({})
    path: tuple[str, ...] = ()

    def pod(self) -> tuple[str, str] | None:
        """(namespace, name) from K8S_POD_NAMESPACE / K8S_POD_NAME in CNI_ARGS, when both are there."""
        ns, name = self.args.get("K8S_POD_NAMESPACE", ""), self.args.get("K8S_POD_NAME", "")
        return (ns, name) if ns and name else None


def command_of(environ: Mapping[str, str]) -> str:
    """CNI_COMMAND, checked: missing or unknown is error 4."""
    command = environ.get("CNI_COMMAND")
    if not command:
        raise CNIError(INVALID_ENV, "CNI_COMMAND: missing (this is a CNI plugin: a container runtime runs it "
                                    f"with CNI_COMMAND one of {', '.join(COMMANDS)})")
    if command not in COMMANDS:
        raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND: {command!r} (expected one of {', '.join(COMMANDS)})")
    return command


def parse(environ: Mapping[str, str]) -> Invocation:
    """The invocation the environment describes, with what its command requires checked."""
    command = command_of(environ)
    missing = [v for v in REQUIRED[command] if not environ.get(v)]
    if missing:
        raise CNIError(INVALID_ENV, f"required environment variables missing for {command}: {', '.join(missing)}")
    container_id = environ.get("CNI_CONTAINERID", "")
    if container_id:
        check_identifier("CNI_CONTAINERID", container_id, INVALID_ENV)
    ifname = environ.get("CNI_IFNAME", "")
    if ifname:
        check_ifname(ifname)
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    return Invocation(command, container_id, environ.get("CNI_NETNS", ""), ifname,
                      parse_args(environ.get("CNI_ARGS", "")), path)


def parse_args(text: str) -> dict[str, str]:
    """CNI_ARGS 'K1=V1;K2=V2' -> {K1: V1, K2: V2}; a pair without '=' is error 4 (pkg/types/args.go)."""
    out: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENV, f"CNI_ARGS: invalid pair {pair!r} (expected KEY=VALUE, separated by ';')")
        out[key] = value
    return out


def check_identifier(what: str, value: str, code: int) -> None:
    """A container ID or network name: alphanumeric first, then alphanumerics, '_', '.', '-'."""
    if not IDENTIFIER.fullmatch(value):
        raise CNIError(code, f"{what} {value!r}: invalid characters (it must start with a letter or digit, "
                             "followed by letters, digits, '_', '.' or '-')")


def check_ifname(name: str) -> None:
    """An interface name Linux takes: 1..15 characters, not '.' or '..', no '/', ':' or whitespace."""
    if len(name) > MAX_IFNAME:
        raise CNIError(INVALID_ENV, f"CNI_IFNAME {name!r}: too long (at most {MAX_IFNAME} characters)")
    if name in (".", "..") or any(c in "/:" or c.isspace() for c in name):
        raise CNIError(INVALID_ENV, f"CNI_IFNAME {name!r}: not an interface name ('.', '..', '/', ':' "
                                    "and whitespace are not allowed)")
