"""Structured log lines, one event per line: `event=NAME key=value ...` (logfmt).

The one helper every package logs through (it lives here, in the lowest layer, because dataplane
may import nothing of calico_bgp and everything else may import dataplane):

    event(log, "route_failed", prefix="198.18.1.0/24", reason="EINVAL")
    event(log, "exabgp_exited", logging.WARNING, pid=123, code=1, restart_in=1.5)
    event(log, "sync_failed", logging.ERROR, exc_info=True, action="keep_last_good")

Values are rendered with str(); one that is empty or holds a space, a quote, an '=' or a newline
is quoted (JSON string rules), so every line splits back into its fields. Floats get 3 decimals.
Nothing is formatted when the level is off.
"""
from __future__ import annotations

import json
import logging
from typing import Any

_NEEDS_QUOTES = frozenset(' "=\n\t\\')


def value(v: Any) -> str:
    """One field value as logfmt writes it."""
    text = f"{v:.3f}" if isinstance(v, float) else str(v)
    if not text or any(c in _NEEDS_QUOTES for c in text):
        return json.dumps(text)
    return text


def line(name: str, /, **fields: Any) -> str:
    """The text of one event: `event=NAME k=v ...`, fields in the order given; None values left out."""
    return " ".join([f"event={name}", *(f"{k}={value(v)}" for k, v in fields.items() if v is not None)])


def event(log: logging.Logger, name: str, level: int = logging.INFO, /, *, exc_info: Any = None,
          **fields: Any) -> None:
    """Log one event at `level` (INFO by default)."""
    if log.isEnabledFor(level):
        log.log(level, "%s", line(name, **fields), exc_info=exc_info, stacklevel=2)
