"""`calico-bgp-cni`: the main plugin. A veth into the container, its addresses as /32 and /128, a host
route to each, proxy ARP and link-local gateways: routed, not bridged (dataplane/workload).

Follows Calico's CNI plugin (projectcalico/calico cni-plugin/pkg/plugin/plugin.go cmdAdd/cmdDel and
pkg/k8s/k8s.go CmdAddK8s/CmdDelK8s): ADD asks the IPAM plugin of the config's `ipam.type` for the
addresses (exec'd as libcni does; with calico-bgp-ipam the handle is "<network>.<CNI_CONTAINERID>",
so an ADD repeated for one container gets the same addresses), then wires the namespace; if the
wiring fails the addresses are given back through the IPAM plugin's DEL and the pair is gone, so a
failed ADD leaves nothing. DEL deletes the container's interface (its host end and routes go with
it) and then releases through the IPAM plugin; a namespace or interface already gone is not an error,
so DEL is idempotent. CHECK (Calico's plugin has none) asks the IPAM plugin to check, then compares
the kernel with the previous result and names every missing piece. GC and STATUS are the IPAM
plugin's to answer: what this plugin makes (the pair, its routes) dies with the container's namespace.

Nothing here needs the agent to be running, and nothing heavier than the netlink codec is loaded.
The executable (service.cni_main) hands the invocation to the node agent's warm process when that
answers, and these handlers run there, with the invocation's environment (Request.environ).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from calico_bgp.cni import skel
from calico_bgp.cni.delegate import delegate
from calico_bgp.cni.error import INTERNAL, INVALID_CONFIG, UNKNOWN_CONTAINER, CNIError
from calico_bgp.cni.netconf import workload_mtu
from calico_bgp.cni.result import Interface, IPConfig, Result, from_json
from dataplane.logfmt import event

PLUGIN = "calico-bgp-cni"
WIRING_FAILED = 110  # ours: the kernel refused a step of the wiring; the message names it
CHECK_FAILED = 111   # ours: CHECK found the wiring incomplete; the message lists what is missing
log = logging.getLogger("cni.plugin")


def _wiring():
    """The netlink half, loaded only by the commands that touch the kernel (VERSION, GC and STATUS
    stay as lean as the IPAM plugin)."""
    from dataplane.workload import plan, wiring

    return plan, wiring


def _host_ifname(req: skel.Request) -> str:
    plan, _ = _wiring()
    pod = req.invocation.pod()
    try:
        return plan.host_ifname(req.invocation.container_id, *(pod or ("", "")))
    except plan.WiringError as exc:
        raise CNIError(INVALID_CONFIG, str(exc)) from None


def _allow_ip_forwarding(req: skel.Request) -> bool:
    settings = req.conf.raw.get("container_settings")
    return isinstance(settings, dict) and settings.get("allow_ip_forwarding") is True


def _ipam_type(req: skel.Request) -> str:
    if not req.conf.ipam.type:
        raise CNIError(INVALID_CONFIG, "ipam.type: missing (the IPAM plugin that allocates the addresses, "
                                       "e.g. calico-bgp-ipam)")
    return req.conf.ipam.type


def add(req: skel.Request) -> Result:
    inv = req.invocation
    if not os.path.exists(inv.netns):
        raise CNIError(UNKNOWN_CONTAINER, f"CNI_NETNS {inv.netns}: no such network namespace")
    plan, wiring = _wiring()
    host_if = _host_ifname(req)
    ipam_type = _ipam_type(req)
    mtu = workload_mtu(req.conf)  # before anything is allocated: a bad MTU file leaves nothing behind
    allocated = delegate("ADD", ipam_type, req.stdin, req.environ)
    try:
        if allocated is None or not allocated.ips:
            raise CNIError(INTERNAL, f"IPAM plugin {ipam_type} returned no IP addresses")
        try:
            w = plan.workload(inv.netns, inv.ifname, host_if, [ip.address for ip in allocated.ips], mtu or 0)
            done = wiring.attach(w, _allow_ip_forwarding(req))
        except plan.NoNamespace as exc:
            raise CNIError(UNKNOWN_CONTAINER, str(exc)) from None
        except plan.WiringError as exc:
            raise CNIError(WIRING_FAILED, str(exc)) from None
    except BaseException as exc:
        _give_back(req, ipam_type, exc)
        raise
    event(log, "cni_added", container=inv.container_id, host_if=done.host_ifname,
          ips=",".join(str(ip) for ip in w.ips))
    return _result(allocated, w, done, inv.netns, mtu)


def _give_back(req: skel.Request, ipam_type: str, why: BaseException) -> None:
    """Release what the IPAM plugin gave for this container: its DEL, with the same config
    (Calico's ReleaseIPAllocation, cni-plugin/internal/pkg/utils/utils.go); a failed release is
    logged, and the ADD's own error is the one reported."""
    try:
        delegate("DEL", ipam_type, req.stdin, req.environ)
        event(log, "cni_add_released", logging.WARNING, container=req.invocation.container_id, error=str(why))
    except CNIError as exc:
        event(log, "cni_add_release_failed", logging.ERROR, container=req.invocation.container_id,
              error=str(why), release_error=str(exc))


def _result(allocated: Result, w: Any, done: Any, netns: str, mtu: int | None) -> Result:
    """The IPAM's result with the two interfaces (the host end, then the container's) and each address
    as the workload holds it: alone, /32 or /128, on the container's interface."""
    ips = tuple(IPConfig(f"{ip}/{ip.max_prefixlen}", None, 1) for ip in w.ips)
    host = Interface(done.host_ifname, done.host_mac, mtu=mtu)
    cont = Interface(w.ifname, done.container_mac, netns, mtu=mtu)
    return Result(ips, allocated.routes, allocated.dns, (host, cont))


def delete(req: skel.Request) -> None:
    inv = req.invocation
    _plan, wiring = _wiring()
    try:
        removed = wiring.detach(inv.netns, inv.ifname)
    except Exception as exc:  # noqa: BLE001 - a refusal from the kernel, named for the runtime to retry
        raise CNIError(WIRING_FAILED, f"deleting {inv.ifname} in {inv.netns}: {exc}") from None
    delegate("DEL", _ipam_type(req), req.stdin, req.environ)
    event(log, "cni_deleted", container=inv.container_id, interface_removed=removed)
    return None


def check(req: skel.Request) -> None:
    inv = req.invocation
    prev = req.conf.prev_result
    if not prev:
        raise CNIError(INVALID_CONFIG, "prevResult: missing (CHECK compares the kernel with the ADD's result)")
    previous = from_json(prev)
    delegate("CHECK", _ipam_type(req), req.stdin, req.environ)
    plan, wiring = _wiring()
    if not previous.ips:
        raise CNIError(INVALID_CONFIG, "prevResult: has no addresses to check")
    w = plan.workload(inv.netns, inv.ifname, _host_ifname(req), [ip.address for ip in previous.ips])
    try:
        found = plan.problems(w, *wiring.inspect(w))
    except plan.NoNamespace as exc:
        raise CNIError(UNKNOWN_CONTAINER, str(exc)) from None
    if found:
        raise CNIError(CHECK_FAILED, f"{inv.ifname} in {inv.netns} is not wired as ADD left it: " + "; ".join(found))
    return None


def _to_ipam(command: str):
    def handler(req: skel.Request) -> None:
        delegate(command, _ipam_type(req), req.stdin, req.environ)
        return None

    return handler


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": _to_ipam("GC"), "STATUS": _to_ipam("STATUS")}


def main() -> None:
    skel.main(PLUGIN, HANDLERS)


if __name__ == "__main__":
    main()
