"""Running the netfilter tools (nft, iptables-restore, ipset, ...) the filters and NAT program."""
from __future__ import annotations

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
