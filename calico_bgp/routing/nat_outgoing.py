"""IPPool natOutgoing -> the NatSet every node programs (pure).

As felix does it (felix/dataplane/linux/masq_mgr.go fed by felix/calc/event_sequencer.go's
IPAMPoolUpdate, from libcalico-go's syncersv1/updateprocessors/ippoolprocessor.go, which sets
Masquerade from natOutgoing whatever `disabled` says): every pool's CIDR is in the "all pools" set and
a pool with natOutgoing is in the "masquerade" set too. Neither felix nor this looks at `disabled` (a disabled pool hands out no new
addresses, but the workloads that have one still get out) nor at the node selector (the rule is the
same on every node: a packet is masqueraded by the first node it leaves, whichever that is).
"""
from __future__ import annotations

from typing import Iterable

from calico_bgp.resources.ippool import IPPool
from dataplane.nat.rules import NatSet


def nat_set(pools: Iterable[IPPool]) -> NatSet:
    pools = list(pools)
    return NatSet.of([p.spec.cidr for p in pools if p.spec.nat_outgoing], [p.spec.cidr for p in pools])
