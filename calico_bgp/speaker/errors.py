"""Typed errors of the speaker; each names what was wrong and with which value."""
from __future__ import annotations


class SpeakerError(Exception):
    """Base class for everything the speaker raises."""


class InvalidNeighbor(SpeakerError, ValueError):
    """A Neighbor field holds a value ExaBGP cannot be configured with."""

    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"neighbor {field}={value!r}: {why}")
        self.field, self.value, self.why = field, value, why


class InvalidRoute(SpeakerError, ValueError):
    """A prefix or route attribute that cannot be turned into an ExaBGP command."""


class MalformedMessage(SpeakerError, ValueError):
    """A line from ExaBGP that is not an ack, not known text and not a message we can decode."""

    def __init__(self, why: str, line: str) -> None:
        super().__init__(f"{why}: {line[:200]!r}")
        self.why, self.line = why, line


class BadHello(SpeakerError, ValueError):
    """A client of the API socket whose first line is not a bridge's hello (or names no pid)."""

    def __init__(self, line: str) -> None:
        super().__init__(f"not a bridge hello: {line[:200]!r}")
        self.line = line
