"""Durations as Kubernetes and Go spell them (a metav1.Duration: `300ms`, `1s`, `1m30s`), held in
whole milliseconds. Pure. Parsing follows Go's time.ParseDuration (src/time/format.go): an optional
sign, then one or more decimal numbers each with a unit ns, us (or µs), ms, s, m, h; "0" alone."""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Callable, NewType

Milliseconds = NewType("Milliseconds", int)  # stored and shown as duration text ("300ms", "1m")

_UNIT_NS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9,
            "m": 60 * 10**9, "h": 3600 * 10**9}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DURATION = re.compile(f"(?:{_PART.pattern})+")
_EXAMPLES = "like '300ms', '1s', '1m' or '1m30s'"


def go_duration_ns(text: str) -> int | Fraction:
    """The duration `text` in nanoseconds, exactly (a Fraction when not a whole number of them).
    ValueError when it is not Go duration syntax."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    if not _DURATION.fullmatch(body):
        raise ValueError(f"expected a duration {_EXAMPLES}")
    total = sum((Fraction(n) * _UNIT_NS[u] for n, u in _PART.findall(body)), Fraction(0))
    total = -total if text.startswith("-") else total
    return int(total) if total.denominator == 1 else total


def milliseconds(lo: int, hi: int) -> Callable[[Any], int]:
    """A parser: duration text -> whole milliseconds within lo..hi (lo >= 1). Zero or negative, a
    fraction of a millisecond, and a bare number (YAML `300` has no unit; Kubernetes takes a
    metav1.Duration only as text) are refused with the reason."""
    def parse(value: Any) -> int:
        if not isinstance(value, str):
            raise ValueError(f"expected a duration {_EXAMPLES} (a bare number has no unit)")
        ns = go_duration_ns(value.strip())
        if ns <= 0:
            raise ValueError("must be greater than 0")
        if ns % 10**6:
            raise ValueError("must be a whole number of milliseconds")
        ms = int(ns // 10**6)
        if not lo <= ms <= hi:
            raise ValueError(f"out of range {format_ms(lo)}..{format_ms(hi)}")
        return ms
    return parse


def format_ms(ms: int) -> str:
    """Whole milliseconds as duration text that parses back to them: 60000 -> '1m',
    90500 -> '1m30s500ms', 100 -> '100ms', 0 -> '0s'."""
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def format_seconds(seconds: int) -> str:
    """Whole seconds as Go's time.Duration.String() spells them, which a metav1.Duration field (and so
    calicoctl) takes back: 120 -> '2m0s', 90 -> '1m30s', 3600 -> '1h0m0s', 5 -> '5s', 0 -> '0s'."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
