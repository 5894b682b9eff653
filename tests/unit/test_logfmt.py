"""Structured log lines: `event=NAME k=v`, quoted where a value would not split back."""
from __future__ import annotations

import logging
import shlex

from dataplane.logfmt import event, line


def test_a_line_names_the_event_then_its_fields_in_order():
    assert line("route_failed", prefix="198.18.1.0/24", count=3, took=0.5) == \
        "event=route_failed prefix=198.18.1.0/24 count=3 took=0.500"


def test_values_that_would_not_split_back_are_quoted_and_none_is_left_out():
    text = line("x", reason="no route to host", empty="", eq="a=b", q='say "hi"', gone=None)
    assert text == 'event=x reason="no route to host" empty="" eq="a=b" q="say \\"hi\\""'
    assert shlex.split(text) == ["event=x", "reason=no route to host", "empty=", "eq=a=b", 'q=say "hi"']


def test_nothing_is_formatted_when_the_level_is_off(caplog):
    class Loud:
        def __str__(self):
            raise AssertionError("formatted")
    log = logging.getLogger("test.logfmt")
    with caplog.at_level(logging.WARNING, logger="test.logfmt"):
        event(log, "quiet", thing=Loud())
        event(log, "said", logging.WARNING, peer="198.18.0.1")
    assert [r.getMessage() for r in caplog.records] == ["event=said peer=198.18.0.1"]


def test_a_field_may_be_called_name_or_level(caplog):
    log = logging.getLogger("test.logfmt")
    with caplog.at_level(logging.INFO, logger="test.logfmt"):
        event(log, "protocol_name_registered", name="calico-bgp", level=3)
    assert line("x", name="y") == "event=x name=y"
    assert [r.getMessage() for r in caplog.records] == ["event=protocol_name_registered name=calico-bgp level=3"]
