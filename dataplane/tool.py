"""Running the netfilter tools (nft, iptables-restore, ipset, ...) the filters and NAT program."""
from __future__ import annotations

import json
import shutil
import subprocess


def run_tool(cmd: list[str], *, netns: str | None, error: type[Exception], stdin: str | None = None,
             check: bool = True, what: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `cmd` (in network namespace `netns` when given), its stdin `stdin`. A missing tool, and with
    `check` a non-zero exit, raise `error` naming the command (`what`, else its first three words)
    and the tool's own message (at most 2,000 characters)."""
    full = ["ip", "netns", "exec", netns, *cmd] if netns else cmd
    try:
        r = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise error(f"{cmd[0]} is not installed") from exc
    if check and r.returncode != 0:
        raise error(f"{what or ' '.join(cmd[:3])}: {r.stderr.strip()[:2000]}")
    return r


class NftTool:
    """One nftables table of our own in a namespace (the filters' and NAT's nft backends): the tool
    run with the backend's error, and the table read back as nft's JSON."""
    mode = "nft"
    error: type[Exception] = RuntimeError

    def __init__(self, netns: str | None = None, nft: str = "nft") -> None:
        self.netns = netns
        self.nft = nft

    @staticmethod
    def available(nft: str = "nft") -> bool:
        return shutil.which(nft) is not None

    def _run(self, args: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_tool([self.nft, *args], netns=self.netns, error=self.error, stdin=stdin, check=check,
                        what=f"nft {' '.join(args)}")

    def _listed(self, family: str, table: str) -> dict | None:
        """`nft -j list table FAMILY TABLE` as parsed JSON; None when there is no such table."""
        r = self._run(["-j", "list", "table", family, table], check=False)
        if r.returncode != 0:
            if "No such file" in r.stderr or "does not exist" in r.stderr:
                return None
            raise self.error(f"nft list table: {r.stderr.strip()[:2000]}")
        return json.loads(r.stdout)


class IptTool:
    """iptables, ip6tables and ipset in a namespace (the filters' and NAT's iptables backends), run with
    the backend's error."""
    mode = "iptables"
    error: type[Exception] = RuntimeError

    def __init__(self, netns: str | None = None, iptables: str = "iptables", ip6tables: str = "ip6tables",
                 ipset: str = "ipset") -> None:
        self.netns = netns
        self.tools = {4: iptables, 6: ip6tables}
        self.ipset = ipset

    @staticmethod
    def available(iptables: str = "iptables", ipset: str = "ipset") -> bool:
        return shutil.which(iptables) is not None and shutil.which(ipset) is not None

    def _run(self, cmd: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_tool(cmd, netns=self.netns, error=self.error, stdin=stdin, check=check)
