#!/usr/bin/env python3
"""Route churn: a peer sends a steady stream of announcements and withdrawals to one calico-bgp node
agent and, in the same run, to BIRD 2 as the reference; both program their kernel.

    src (BIRD 2, AS 65001) --eBGP--> node (our agent: ExaBGP + bridge + agent, kernel main table)
                           --eBGP--> ref  (BIRD 2, kernel protocol into the main table)

The source keeps a window of W /32s announced (198.19.0.0/16, inside the IPPool) and every tick
(0.1 s) withdraws the oldest and announces as many new ones: `--rate` prefix changes per second
(half announcements, half withdrawals) for `--seconds`. It changes its static routes by writing its
config and `birdc configure` (BIRD sends only the difference), so both receivers get the same stream.

Measured per receiver, over the stream window:
- CPU: our agent + its ExaBGP + the bridge (the whole process tree), BIRD's process; from /proc;
- programming latency p50/p99, directly: `ip -ts monitor route` in each receiver's namespace
  timestamps every kernel change, matched to the time the source was told to make it (this
  includes the source's own send time, the same for both); for our agent also from its
  calico_bgp_route_programming_seconds histogram (UPDATE received -> kernel ack, per batch);
- whether it kept up: rate sent vs rate programmed, the backlog (changes sent but not yet in the
  kernel) when the stream stops, and how long until the kernel matched the source after that.

    sudo .venv/bin/python -m bench.churn [--rate 1000] [--seconds 60] [--window 2000] [--json]
    sudo .venv/bin/python -m bench.churn --seconds 5        # smoke run
    sudo .venv/bin/python -m bench.churn --exabgp-runtime cpython   # ExaBGP under CPython (default: as the agent picks)

Everything (namespaces, BIRDs, the agent, etcd, ip monitor) is removed at the end, even on failure.
"""
from __future__ import annotations

import argparse
import bisect
import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from prometheus_client.parser import text_string_to_metric_families

from bench.common import bench_run, bird_receiver_conf, cpu_and_rss, cpu_by_part, one_peer_resources, progress, runnable
from lab.bird import Bird
from lab.etcd import EtcdServer
from lab.net import Ledger, Net, Process, sh, wait_for

SRC, NODE, REF = "198.18.0.10", "198.18.0.1", "198.18.0.3"
SRC_AS, NODE_AS, REF_AS = 65001, 64512, 64513
POOL = ipaddress.ip_network("198.19.0.0/16")
SPACE = 60_000          # /32s the stream cycles through
TICK = 0.1
METRICS_PORT = 9181


def prefix(i: int) -> str:
    return f"{POOL.network_address + (i % SPACE)}/32"


# ---------------------------------------------------------------- configs
def src_conf(routes: list[str]) -> str:
    lines = [f"router id {SRC};", "protocol device {}", "protocol static churn { ipv4;"]
    lines += [f"  route {p} blackhole;" for p in routes]
    lines.append("}")
    for name, addr, asn in (("node", NODE, NODE_AS), ("ref", REF, REF_AS)):
        lines += [f"protocol bgp {name} {{", f"  local {SRC} as {SRC_AS};", f"  neighbor {addr} as {asn};",
                  "  connect delay time 0;", "  connect retry time 1;",
                  "  ipv4 { import none; export where source = RTS_STATIC; next hop self; };", "}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- measuring
def cpu_seconds(pid: int) -> float:
    return cpu_and_rss(pid)[0]


def kernel_prefixes(ns: str) -> set[str]:
    out = set()
    for r in json.loads(sh("ip", "-j", "-4", "route", "show", "root", str(POOL), ns=ns).stdout or "[]"):
        if r.get("type", "unicast") == "unicast":
            out.add(r["dst"] if "/" in r["dst"] else r["dst"] + "/32")
    return out


def scrape(ns: str) -> dict[tuple[str, frozenset], float]:
    raw = sh("curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{METRICS_PORT}/metrics", ns=ns).stdout
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(raw) for s in fam.samples}


def hist_quantiles(before: dict, after: dict, name: str, qs: tuple[float, ...]) -> dict[str, float | None]:
    """histogram_quantile() over the increase of a histogram's buckets between two scrapes."""
    buckets = []
    for (n, labels), v in after.items():
        if n == name + "_bucket":
            le = float(dict(labels)["le"])
            buckets.append((le, v - before.get((n, labels), 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out: dict[str, float | None] = {}
    for q in qs:
        key = f"p{int(q * 100)}"
        if total <= 0:
            out[key] = None
            continue
        rank, prev_le, prev_c = q * total, 0.0, 0.0
        for le, c in buckets:
            if c >= rank:
                if le == float("inf"):
                    out[key] = prev_le
                else:
                    out[key] = prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-9))
                break
            prev_le, prev_c = le, c
    return out


def kernel_events(log: Path) -> list[tuple[float, str, str]]:
    """(wall time, 'add'|'del', prefix) of every change to a pool route `ip -ts monitor route` printed."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("[") or "]" not in line:
            continue
        stamp, rest = line[1:].split("]", 1)
        words = rest.split()
        if not words:
            continue
        kind = "del" if words[0] == "Deleted" else "add"
        dst = words[1] if kind == "del" else words[0]
        if dst in ("blackhole", "unreachable", "local", "broadcast"):
            continue
        dst = dst if "/" in dst else dst + "/32"
        try:
            if ipaddress.ip_network(dst).subnet_of(POOL):  # type: ignore[arg-type]
                out.append((datetime.datetime.fromisoformat(stamp).timestamp(), kind, dst))
        except (ValueError, TypeError):
            continue
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def analyse(sent: list[tuple[float, str, str]], events: list[tuple[float, str, str]], t_start: float,
            t_stop: float, t_synced: float | None) -> dict:
    """Match every kernel change to the send it answers: latency, rate programmed, backlog at stop."""
    by_key: dict[tuple[str, str], list[float]] = {}
    for t, kind, p in sent:
        by_key.setdefault((p, kind), []).append(t)
    latencies, done_by_stop, programmed_in_window = [], 0, 0
    stamped: list[tuple[float, float]] = []  # (latency, when it was sent, seconds into the stream)
    for t, kind, p in events:
        times = by_key.get((p, kind))
        if not times or t < t_start:
            continue
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            continue
        latencies.append(t - times[i])
        stamped.append((t - times[i], times[i] - t_start))
        if t <= t_stop:
            programmed_in_window += 1
            done_by_stop += 1
    dur = max(t_stop - t_start, 1e-9)
    return {"programmed": len(latencies), "programmed_per_s": round(programmed_in_window / dur, 1),
            "backlog_at_stop": max(len(sent) - done_by_stop, 0),
            "p50_ms": _ms(pct(latencies, 0.5)), "p99_ms": _ms(pct(latencies, 0.99)), "max_ms": _ms(max(latencies, default=None)),
            # the slowest second of the stream: where stalls are
            "slowest_at_s": round(max(stamped)[1], 1) if stamped else None,
            "over_1s": sum(1 for x in latencies if x > 1.0),
            "synced_after_stop_s": None if t_synced is None else round(max(t_synced - t_stop, 0.0), 2)}


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 1)


# ---------------------------------------------------------------- the run
def run(args: argparse.Namespace, work: Path, etcd: EtcdServer, ledger: Ledger) -> dict:
    net = Net(ledger, f"ch{os.getpid() % 1000}")
    hub = net.namespace("hub")
    net.bridge(hub, "br0")
    nss = {}
    for name, addr in (("src", SRC), ("node", NODE), ("ref", REF)):
        ns = nss[name] = net.namespace(name)
        net.veth(ns, "eth0", hub, f"p{name}")
        net.attach(hub, f"p{name}", "br0")
        net.address(ns, "eth0", f"{addr}/24")
    mon = {}
    for name in ("node", "ref"):  # a large receive buffer: a burst must not overrun the monitor
        mon[name] = work / f"monitor-{name}.log"
        Process(ledger, nss[name], ["ip", "-rcvbuf", str(32 << 20), "-ts", "monitor", "route"], mon[name])

    progress("etcd resources; starting our agent and the reference BIRD")
    prefix_ = f"/churn{os.getpid()}/calico-bgp/v1"
    cli = [sys.executable, "-m", "calico_bgp", "--etcd-endpoints", etcd.url, "--prefix", prefix_]
    subprocess.run([*cli, "apply", "-f", "-"], input=one_peer_resources(NODE, NODE_AS, SRC, SRC_AS, POOL, "pods"), text=True, check=True, capture_output=True)
    agent = Process(ledger, nss["node"], [sys.executable, "-m", "calico_bgp", "--etcd-endpoints", etcd.unix_url,
                                          "--prefix", prefix_, "node", "run", "--name", "node",
                                          "--state-dir", str(work / "state"), "--grace", "0",
                                          "--metrics-port", str(METRICS_PORT), "--log-level", args.log_level],
                    work / "agent.log",
                    env={"CALICO_BGP_EXABGP_RUNTIME": args.exabgp_runtime})
    ref = Bird(nss["ref"], None, work / "ref")
    ref.start(ledger, config=bird_receiver_conf(REF, REF_AS, SRC, SRC_AS))

    window = [prefix(i) for i in range(args.window)]
    src = Bird(nss["src"], None, work / "src")
    src.start(ledger, config=src_conf(window))

    deadline = time.monotonic() + 90
    while True:
        up = src.birdc("show", "protocols")
        if up.count("Established") == 2:
            break
        if time.monotonic() > deadline or not agent.alive() or not ref.process.alive():
            raise RuntimeError(f"sessions not up:\n{up}\nagent log:\n{agent.tail(30)}\n"
                               f"reference BIRD log:\n{ref.process.tail(10)}")
        time.sleep(0.2)
    progress(f"both sessions Established; loading the window of {args.window} prefixes")
    want = set(window)
    wait_for("the initial window in both kernels",
             lambda: kernel_prefixes(nss["node"]) == want and kernel_prefixes(nss["ref"]) == want, timeout=120)

    per_tick = max(1, round(args.rate * TICK / 2))  # withdrawals = announcements = per_tick
    ticks = max(1, round(args.seconds / TICK))
    progress(f"streaming {2 * per_tick / TICK:.0f} changes/s ({per_tick} withdrawn + {per_tick} announced "
             f"every {TICK}s) for {ticks * TICK:.0f} s")
    m0 = scrape(nss["node"])
    cpu0 = {"ours": cpu_seconds(agent.pid), "bird": cpu_seconds(ref.process.pid)}
    parts0 = cpu_by_part(agent.pid)
    src_pid = src.process.pid
    src_cpu0 = cpu_seconds(src_pid)
    sent: list[tuple[float, str, str]] = []
    nxt = args.window
    t_start = time.time()
    late = 0
    for k in range(ticks):
        target = t_start + k * TICK
        delay = target - time.time()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
        gone, window = window[:per_tick], window[per_tick:]
        new = [prefix(nxt + j) for j in range(per_tick)]
        nxt += per_tick
        window += new
        src.conf.write_text(src_conf(window))
        t = time.time()
        out = src.birdc("configure")
        if "Reconfigured" not in out and "in progress" not in out:
            raise RuntimeError(f"source birdc configure: {out}")
        sent += [(t, "del", p) for p in gone] + [(t, "add", p) for p in new]
        if (k + 1) % round(5 / TICK) == 0:
            progress(f"{(k + 1) * TICK:.0f}s: sent {len(sent)} changes; in the kernel now: ours "
                     f"{len(kernel_prefixes(nss['node']) & set(window))}/{len(window)}, BIRD "
                     f"{len(kernel_prefixes(nss['ref']) & set(window))}/{len(window)} of the current window")
    t_stop = time.time()
    cpu1 = {"ours": cpu_seconds(agent.pid), "bird": cpu_seconds(ref.process.pid)}
    parts1 = cpu_by_part(agent.pid)
    src_cpu = cpu_seconds(src_pid) - src_cpu0
    m1 = scrape(nss["node"])
    progress(f"stream stopped after {t_stop - t_start:.1f}s ({late} late ticks); waiting for both kernels to match")
    want = set(window)
    synced: dict[str, float | None] = {"node": None, "ref": None}
    deadline = time.monotonic() + 60
    while None in synced.values() and time.monotonic() < deadline:
        for name in ("node", "ref"):
            if synced[name] is None and kernel_prefixes(nss[name]) == want:
                synced[name] = time.time()
        time.sleep(0.05)
    time.sleep(0.5)  # the monitors print the last changes
    m2 = scrape(nss["node"])
    dur = t_stop - t_start

    def received(m: dict) -> float:
        return sum(v for (n, _), v in m.items()
                   if n in ("calico_bgp_peer_updates_received_total", "calico_bgp_peer_withdrawals_received_total"))

    ours = analyse(sent, kernel_events(mon["node"]), t_start, t_stop, synced["node"])
    ours.update(cpu_s=round(cpu1["ours"] - cpu0["ours"], 2), cpu_pct=round(100 * (cpu1["ours"] - cpu0["ours"]) / dur, 1),
                cpu_s_by_part={k: round(parts1[k] - parts0[k], 2) for k in parts1},
                received_per_s=round((received(m1) - received(m0)) / dur, 1),
                received_total=int(received(m2) - received(m0)),
                histogram=hist_quantiles(m0, m2, "calico_bgp_route_programming_seconds", (0.5, 0.99)))
    ours["histogram"] = {k: _ms(v) for k, v in ours["histogram"].items()}
    ours["histogram_unit"] = "ms"
    bird = analyse(sent, kernel_events(mon["ref"]), t_start, t_stop, synced["ref"])
    bird.update(cpu_s=round(cpu1["bird"] - cpu0["bird"], 2), cpu_pct=round(100 * (cpu1["bird"] - cpu0["bird"]) / dur, 1))
    imported = ref.birdc("show", "protocols", "all", "upstream")
    for line in imported.splitlines():
        if "Import updates:" in line or "Import withdraws:" in line:
            bird.setdefault("import_stats", []).append(" ".join(line.split()))
    ours["rss_mb"] = round(cpu_and_rss(agent.pid)[1], 1)  # agent + ExaBGP + bridge
    return {"rate": round(len(sent) / dur, 1), "exabgp_runtime": args.exabgp_runtime, "seconds": round(dur, 1), "window": args.window,
            "changes_sent": len(sent), "late_ticks": late, "source_cpu_s": round(src_cpu, 2),
            "calico_bgp": ours, "bird": bird, "agent_alive": agent.alive(), "ref_alive": ref.process.alive()}


def kept_up(r: dict, rate: float) -> str:
    """Yes when at most half a second of changes was pending at the stop and the kernel matched the
    source within 2 s of it."""
    ok = (r["synced_after_stop_s"] is not None and r["synced_after_stop_s"] < 2.0
          and r["backlog_at_stop"] <= rate * 0.5)
    return "yes" if ok else "no"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000, help="prefix changes per second (default 1000)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the stream (default 60)")
    ap.add_argument("--window", type=int, default=2000, help="prefixes announced at any time (default 2000)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    ap.add_argument("--exabgp-runtime", choices=("cpython", "pypy", "auto"), default="cpython",
                    help="ExaBGP's interpreter (default cpython, as deployed; auto: PyPy when bootstrap.sh built its venv)")
    ap.add_argument("--log-level", default="warning", help="the agent's log level (its log is kept with BENCH_KEEP=1)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if not runnable("churn", ("bird", "birdc", "curl")):
        return 2
    if not 0 < args.window < SPACE // 2:
        ap.error(f"--window must be between 1 and {SPACE // 2}")
    with bench_run("churn") as (work, ledger), EtcdServer() as etcd:
        try:
            res = run(args, work, etcd, ledger)
        finally:
            ledger.teardown()  # the agent and BIRDs go before etcd does
    ours, bird = res["calico_bgp"], res["bird"]
    print(f"churn: {res['changes_sent']} changes in {res['seconds']} s ({res['rate']}/s, window {res['window']} /32s, "
          f"{res['late_ticks']} late ticks; source BIRD used {res['source_cpu_s']} s CPU)")
    print(f"{'receiver':<11} {'CPU s':>6} {'CPU %':>6} {'prog/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'backlog@stop':>12} {'synced after s':>14} {'kept up':>7}")
    for name, r in (("calico-bgp", ours), ("BIRD 2", bird)):
        print(f"{name:<11} {r['cpu_s']:>6.2f} {r['cpu_pct']:>6.1f} {r['programmed_per_s']:>7.1f} {_f(r['p50_ms']):>7} "
              f"{_f(r['p99_ms']):>7} {_f(r['max_ms']):>7} {r['backlog_at_stop']:>12} "
              f"{_f(r['synced_after_stop_s']):>14} {kept_up(r, res['rate']):>7}")
    print("calico-bgp CPU s by process: " + ", ".join(f"{k} {v:.2f}" for k, v in ours["cpu_s_by_part"].items())
          + f" (ExaBGP runtime: {res['exabgp_runtime']}); RSS agent + ExaBGP + bridge {ours['rss_mb']:.0f} MB")
    h = ours["histogram"]
    print(f"calico-bgp: received {ours['received_per_s']}/s by its counters; its programming histogram "
          f"(UPDATE received -> kernel ack, per batch): p50 {_f(h.get('p50'))} ms, p99 {_f(h.get('p99'))} ms")
    print("latencies above are from the source's configure to the kernel change seen by `ip monitor`;"
          " CPU for calico-bgp is the agent + ExaBGP + bridge")
    if args.json:
        for key in ("calico_bgp", "bird"):
            res[key]["kept_up"] = kept_up(res[key], res["rate"]) == "yes"
        print(json.dumps({"churn": res}))
    return 0


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}" if isinstance(x, float) else str(x)


if __name__ == "__main__":
    sys.exit(main())
