"""Kernel route programming: our RouteProgrammer beside `ip -batch`, same namespace, same N, same run.

    sudo .venv/bin/python -m bench.routes [--sizes 10000,100000] [--repeat 3] [--json]

Creates a network namespace (with one veth pair, 198.18.0.0/24) and removes it on exit, even on
failure or Ctrl-C. For each N it times, for both systems: add N /32s, replace all (new next hop),
a no-op reconcile (ours only), delete all. Best of --repeat runs each, wall time and, beside it,
CPU (user + system, the kernel's work on our behalf included: on a shared machine the steadier
figure). With --json the last line is one JSON object: add_ratio, replace_ratio, delete_ratio
(ours/ip -batch throughput at the largest N), noop_reconcile_s, rss_mb (ours, with the largest N
desired and programmed), and per N under "ratios" the wall and CPU ratios of add, replace, delete.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import json
import os
import resource
import sys
import tempfile
import time
from typing import Callable, Iterator, Sequence

import trio

from bench.common import runnable
from dataplane.routes.programmer import ReconcileResult, RouteProgrammer
from dataplane.routes.route import NextHop, Route
from lab.net import netns, sh, veth

FIRST = int(ipaddress.IPv4Address("198.18.64.0"))  # /32s from here stay inside 198.18.0.0/15 up to ~130k
LAST = int(ipaddress.IPv4Address("198.19.255.255"))
GW1, GW2 = "198.18.0.2", "198.18.0.3"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def bench_namespace() -> Iterator[str]:
    """A namespace with one veth pair, 198.18.0.1/24 on one end; removed on exit."""
    with netns("routes") as ns:
        veth(ns, "rb0", ns, "rb1", ("198.18.0.1/24",))
        yield ns


def prefixes(n: int) -> list[str]:
    if FIRST + n - 1 > LAST:
        raise SystemExit(f"N={n} does not fit in 198.18.0.0/15 from {ipaddress.IPv4Address(FIRST)}")
    return [str(ipaddress.IPv4Address(FIRST + i)) for i in range(n)]


def build_routes(n: int, gateway: str) -> list[Route]:
    hops = (NextHop(gateway=gateway),)
    return [Route(ipaddress.IPv4Network((FIRST + i, 32)), hops) for i in range(n)]


def cpu_s(who: int) -> float:
    """User + system CPU seconds of this process (RUSAGE_SELF, every thread) or its waited-for children."""
    used = resource.getrusage(who)
    return used.ru_utime + used.ru_stime


def ip_batch(ns: str, lines: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `ip -batch` run."""
    with tempfile.NamedTemporaryFile("w", prefix="routes-", suffix=".batch", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    try:
        cpu = cpu_s(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        sh("ip", "-n", ns, "-batch", path, timeout=600)
        return time.perf_counter() - started, cpu_s(resource.RUSAGE_CHILDREN) - cpu
    finally:
        os.unlink(path)


def count_routes(ns: str) -> int:
    out = sh("ip", "-n", ns, "-4", "route", "show", "table", "main").stdout
    return sum(1 for line in out.splitlines() if line.startswith("198.1") and "/" not in line.split()[0])


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_ip(ns: str, n: int) -> dict[str, float]:
    addrs = prefixes(n)
    out = {}
    say(f"  ip -batch N={n}: add")
    out["add"], out["add_cpu"] = ip_batch(ns, [f"route add {a}/32 via {GW1}" for a in addrs])
    assert count_routes(ns) == n, "ip -batch add incomplete"
    say(f"  ip -batch N={n}: replace")
    out["replace"], out["replace_cpu"] = ip_batch(ns, [f"route replace {a}/32 via {GW2}" for a in addrs])
    say(f"  ip -batch N={n}: delete")
    out["delete"], out["delete_cpu"] = ip_batch(ns, [f"route del {a}/32" for a in addrs])
    assert count_routes(ns) == 0, "ip -batch delete incomplete"
    return out


def progress_printer(label: str) -> Callable[[int, int], None]:
    step = [0]

    def show(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth > step[0] or done == total:
            step[0] = tenth
            say(f"    {label}: {done}/{total}")

    return show


async def timed_reconcile(rp: RouteProgrammer, out: dict[str, float], op: str, label: str | None = None) -> ReconcileResult:
    """One reconcile; its seconds in out[op], the process's CPU seconds during it in out[op + "_cpu"]."""
    cpu = cpu_s(resource.RUSAGE_SELF)
    result = await rp.reconcile(progress_printer(label) if label else None)
    out[op + "_cpu"] = cpu_s(resource.RUSAGE_SELF) - cpu
    out[op] = result.seconds
    return result


async def bench_ours(ns: str, n: int, window: int) -> dict[str, float]:
    out: dict[str, float] = {}
    async with RouteProgrammer(netns=ns, window=window, register_name=False) as rp:
        rp.end_grace()
        say(f"  ours N={n}: build + set_desired")
        started = time.perf_counter()
        rp.set_desired(build_routes(n, GW1))
        out["set_desired"] = time.perf_counter() - started
        gc.collect()
        say(f"  ours N={n}: add")
        result = await timed_reconcile(rp, out, "add", "add")
        assert result.adds == n and not result.failures, result
        out["rss_mb"] = rss_mb()
        say(f"  ours N={n}: no-op reconcile")
        result = await timed_reconcile(rp, out, "noop")
        assert result.changes == 0, result
        say(f"  ours N={n}: replace")
        rp.set_desired(())  # drop the old set before building the new one: one set in memory at a time
        rp.set_desired(build_routes(n, GW2))
        result = await timed_reconcile(rp, out, "replace", "replace")
        assert result.replaces == n and not result.failures, result
        say(f"  ours N={n}: delete")
        rp.set_desired(())
        result = await timed_reconcile(rp, out, "delete", "delete")
        assert result.deletes == n and not result.failures, result
        out["changes_sent"] = rp.counts.changes
    assert count_routes(ns) == 0, "our delete incomplete"
    return out


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: min(r[k] for r in runs) for k in runs[0]}


def ratios(res: dict[str, dict[str, float]]) -> dict[str, float]:
    """ip -batch's seconds over ours (above 1: ours is faster), wall and CPU, for add, replace, delete."""
    out = {}
    for op in ("add", "replace", "delete"):
        out[op] = round(res["ip"][op] / res["ours"][op], 3)
        out[op + "_cpu"] = round(res["ip"][op + "_cpu"] / max(res["ours"][op + "_cpu"], 1e-6), 3)
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.routes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated N (default 10000,100000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per system and N; the best is reported")
    ap.add_argument("--window", type=int, default=1024, help="requests per netlink send")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not runnable("routes"):
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results: dict[int, dict[str, dict[str, float]]] = {}
    with bench_namespace() as ns:
        say(f"namespace {ns}; sizes {sizes}; best of {args.repeat}")
        for n in sizes:
            ip_runs, our_runs = [], []
            for r in range(args.repeat):
                say(f"N={n} run {r + 1}/{args.repeat}")
                ip_runs.append(bench_ip(ns, n))
                our_runs.append(trio.run(bench_ours, ns, n, args.window))
            results[n] = {"ip": best(ip_runs), "ours": best(our_runs)}

    print(f"{'N':>7}  {'op':<8} {'ip -batch s':>11} {'routes/s':>9}  {'ours s':>8} {'routes/s':>9}  {'ratio':>6}"
          f"  {'ip cpu s':>8} {'ours cpu s':>10} {'cpu ratio':>9}")
    for n, res in results.items():
        for op in ("add", "replace", "noop", "delete"):
            ours, ours_cpu = res["ours"][op], res["ours"][op + "_cpu"]
            ip, ip_cpu = res["ip"].get(op), res["ip"].get(op + "_cpu")
            ip_s = f"{ip:11.3f} {n / ip:9.0f}" if ip else f"{'-':>11} {'-':>9}"
            ratio = f"{ip / ours:6.2f}" if ip else f"{'-':>6}"
            cpu = f"{ip_cpu:8.3f} {ours_cpu:10.3f} {ip_cpu / ours_cpu:9.2f}" if ip_cpu else f"{'-':>8} {ours_cpu:10.3f} {'-':>9}"
            print(f"{n:>7}  {op:<8} {ip_s}  {ours:8.3f} {n / ours:9.0f}  {ratio}  {cpu}")
        print(f"{n:>7}  set_desired {res['ours']['set_desired']:.3f}s   rss with N desired {res['ours']['rss_mb']:.0f} MB")
    top = max(results)
    res = results[top]
    summary = {
        "n": top,
        "add_ratio": round(res["ip"]["add"] / res["ours"]["add"], 3),
        "replace_ratio": round(res["ip"]["replace"] / res["ours"]["replace"], 3),
        "delete_ratio": round(res["ip"]["delete"] / res["ours"]["delete"], 3),
        "noop_reconcile_s": round(res["ours"]["noop"], 4),
        "rss_mb": round(res["ours"]["rss_mb"], 1),
        "routes_per_s": {op: round(top / res["ours"][op]) for op in ("add", "replace", "delete")},
        "ip_batch_routes_per_s": {op: round(top / res["ip"][op]) for op in ("add", "replace", "delete")},
        "ratios": {str(n): ratios(r) for n, r in results.items()},
        "sizes": {str(n): r for n, r in results.items()},
    }
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
