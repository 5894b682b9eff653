"""Our route protocol number and its name, so `ip route` shows `proto calico-bgp`."""
from __future__ import annotations

import logging
import os

from dataplane.logfmt import event

log = logging.getLogger(__name__)

# not in iproute2's rt_protos nor linux/rtnetlink.h; Calico's felix uses 80, BIRD 12, FRR 186-192
DEFAULT_PROTOCOL = 86
PROTOCOL_NAME = "calico-bgp"
MAIN_TABLE = 254
RT_PROTOS_D = "/etc/iproute2/rt_protos.d"


def register_protocol_name(number: int = DEFAULT_PROTOCOL, name: str = PROTOCOL_NAME, directory: str = RT_PROTOS_D) -> bool:
    """Write `<directory>/<name>.conf` naming `number` for iproute2; True if the name is in place.

    Best effort: an unwritable /etc only costs the name in `ip route` output.
    """
    if not 0 < number < 256:
        raise ValueError(f"protocol={number!r}: must be 1..255")
    path = os.path.join(directory, f"{name}.conf")
    content = f"# written by calico-bgp's dataplane: routes it owns carry this protocol\n{number}\t{name}\n"
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == content:
                return True
    except OSError:
        pass
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(content)
        os.replace(tmp, path)
    except OSError as exc:
        event(log, "protocol_name_not_registered", protocol=number, name=name, path=path, reason=str(exc))
        return False
    event(log, "protocol_name_registered", protocol=number, name=name, path=path)
    return True
