"""Calico's label selector language: one parser, one frozen value, one canonical spelling.

Grammar (as libcalico-go's lib/selector/parser, precedence low to high):

    selector   := ""  |  or
    or         := and ("||" and)*
    and        := unary ("&&" unary)*
    unary      := "!"* operation
    operation  := "all()" | "global()" | "has(" label ")" | "(" or ")"
               |  label ("==" | "!=" | "contains" | "starts with" | "ends with") string
               |  label ("in" | "not in") "{" [string ("," string)*] "}"
    label      := [a-zA-Z0-9_./-]{1,512}
    string     := '...' | "..."            (no escapes, as in Calico)

Semantics follow Calico: `k != 'v'` and `k not in {...}` also match when `k` is absent.
The empty selector is `all()`.
"""
from __future__ import annotations

import re
from typing import Mapping, Union

import attrs

__all__ = ["Selector", "SelectorError", "parse", "ALL",
           "All", "Has", "Eq", "Ne", "In", "NotIn", "Contains", "StartsWith", "EndsWith", "Not", "And", "Or"]

_LABEL = re.compile(r"[a-zA-Z0-9_./-]{1,512}")
_WS = " \t"


class SelectorError(ValueError):
    """A selector does not parse; names the selector, the position (1-based) and what was expected."""

    def __init__(self, text: str, pos: int, expected: str) -> None:
        found = repr(text[pos:pos + 12]) if pos < len(text) else "end of input"
        super().__init__(f"selector {text!r}: expected {expected} at position {pos + 1}, found {found}")
        self.text, self.pos, self.expected = text, pos, expected


def _quote(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


# --- the expression tree: frozen values, each with `matches` and a canonical `str` ---------------

@attrs.frozen
class All:
    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "all()"


@attrs.frozen
class Has:
    key: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels

    def __str__(self) -> str:
        return f"has({self.key})"


@attrs.frozen
class Eq:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) == self.value

    def __str__(self) -> str:
        return f"{self.key} == {_quote(self.value)}"


@attrs.frozen
class Ne:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) != self.value

    def __str__(self) -> str:
        return f"{self.key} != {_quote(self.value)}"


@attrs.frozen
class Contains:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels and self.value in labels[self.key]

    def __str__(self) -> str:
        return f"{self.key} contains {_quote(self.value)}"


@attrs.frozen
class StartsWith:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels and labels[self.key].startswith(self.value)

    def __str__(self) -> str:
        return f"{self.key} starts with {_quote(self.value)}"


@attrs.frozen
class EndsWith:
    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels and labels[self.key].endswith(self.value)

    def __str__(self) -> str:
        return f"{self.key} ends with {_quote(self.value)}"


def _sorted_set(values: object) -> tuple[str, ...]:
    return tuple(sorted(set(values)))  # type: ignore[call-overload]


@attrs.frozen
class In:
    key: str
    values: tuple[str, ...] = attrs.field(converter=_sorted_set)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels and labels[self.key] in self.values

    def __str__(self) -> str:
        return f"{self.key} in {{{', '.join(_quote(v) for v in self.values)}}}"


@attrs.frozen
class NotIn:
    key: str
    values: tuple[str, ...] = attrs.field(converter=_sorted_set)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) not in self.values if self.key in labels else True

    def __str__(self) -> str:
        return f"{self.key} not in {{{', '.join(_quote(v) for v in self.values)}}}"


@attrs.frozen
class Not:
    expr: "Expr"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.expr.matches(labels)

    def __str__(self) -> str:
        inner = str(self.expr)
        # brackets around a negation too: `!!x` would read back as x, not as the Not(Not(x)) printed
        return f"!({inner})" if isinstance(self.expr, (And, Or, Not)) else f"!{inner}"


@attrs.frozen
class And:
    terms: tuple["Expr", ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(t.matches(labels) for t in self.terms)

    def __str__(self) -> str:
        return " && ".join(f"({t})" if isinstance(t, Or) else str(t) for t in self.terms)


@attrs.frozen
class Or:
    terms: tuple["Expr", ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(t.matches(labels) for t in self.terms)

    def __str__(self) -> str:
        return " || ".join(str(t) for t in self.terms)


Expr = Union[All, Has, Eq, Ne, Contains, StartsWith, EndsWith, In, NotIn, Not, And, Or]


def _join(cls: type[And] | type[Or], terms: list[Expr]) -> Expr:
    """Flatten nested terms of the same operator so that equal meaning has one canonical tree."""
    flat: list[Expr] = []
    for t in terms:
        flat.extend(t.terms if isinstance(t, cls) else (t,))
    return flat[0] if len(flat) == 1 else cls(tuple(flat))


@attrs.frozen
class Selector:
    """A parsed selector. `str()` is the canonical text; `parse(str(s)) == s`."""

    expr: Expr

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.expr.matches(labels)

    @property
    def is_all(self) -> bool:
        return isinstance(self.expr, All)

    def __str__(self) -> str:
        return str(self.expr)

    def __repr__(self) -> str:
        return f"Selector({str(self)!r})"


ALL = Selector(All())


# --- the parser: recursive descent straight over the text, so errors know their position -----------

class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, expected: str) -> SelectorError:
        return SelectorError(self.text, self.pos, expected)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip_ws()
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str, what: str | None = None) -> None:
        if not self.take(token):
            raise self.fail(what or repr(token))

    def keyword(self, word: str) -> bool:
        """`word` as a whole word (not the start of a longer label)."""
        self.skip_ws()
        end = self.pos + len(word)
        if self.text.startswith(word, self.pos) and (end >= len(self.text) or not _LABEL.match(self.text[end])):
            self.pos = end
            return True
        return False

    def label(self) -> str:
        self.skip_ws()
        m = _LABEL.match(self.text, self.pos)
        if not m:
            raise self.fail("a label name")
        self.pos = m.end()
        return m.group()

    def string(self) -> str:
        self.skip_ws()
        if self.pos >= len(self.text) or self.text[self.pos] not in "'\"":
            raise self.fail("a quoted string")
        quote = self.text[self.pos]
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise self.fail(f"a closing {quote}")
        value = self.text[self.pos + 1:end]
        self.pos = end + 1
        return value

    def parse(self) -> Selector:
        self.skip_ws()
        if self.pos == len(self.text):
            return ALL
        expr = self.or_()
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail("'&&', '||' or end of selector")
        return Selector(expr)

    def or_(self) -> Expr:
        terms = [self.and_()]
        while self.take("||"):
            terms.append(self.and_())
        return _join(Or, terms)

    def and_(self) -> Expr:
        terms = [self.unary()]
        while self.take("&&"):
            terms.append(self.unary())
        return _join(And, terms)

    def unary(self) -> Expr:
        negated = False
        while self.peek("!") and not self.peek("!="):
            self.pos += 1
            negated = not negated
        expr = self.operation()
        return Not(expr) if negated else expr

    def operation(self) -> Expr:
        self.skip_ws()
        if self.pos >= len(self.text):
            raise self.fail("an expression")
        if self.take("("):
            expr = self.or_()
            self.expect(")", "')'")
            return expr
        start = self.pos
        if self.take("all("):
            self.expect(")", "')' after 'all('")
            return All()
        if self.take("global("):  # Calico: every non-namespaced resource; nodes and peers are all that
            self.expect(")", "')' after 'global('")
            return All()
        if self.take("has("):
            key = self.label()
            self.expect(")", "')' after the label in has(...)")
            return Has(key)
        self.pos = start
        key = self.label()
        if self.take("=="):
            return Eq(key, self.string())
        if self.take("!="):
            return Ne(key, self.string())
        if self.keyword("contains"):
            return Contains(key, self.string())
        if self.keyword("starts"):
            if not self.keyword("with"):
                raise self.fail("'with' after 'starts'")
            return StartsWith(key, self.string())
        if self.keyword("ends"):
            if not self.keyword("with"):
                raise self.fail("'with' after 'ends'")
            return EndsWith(key, self.string())
        if self.keyword("not"):
            if not self.keyword("in"):
                raise self.fail("'in' after 'not'")
            return NotIn(key, self.set_literal())
        if self.keyword("in"):
            return In(key, self.set_literal())
        raise self.fail(f"an operator after label {key!r} (==, !=, in, not in, contains, starts with, ends with)")

    def set_literal(self) -> tuple[str, ...]:
        self.expect("{", "'{' to start a set")
        values: list[str] = []
        if self.take("}"):
            return ()
        while True:
            values.append(self.string())
            if self.take("}"):
                return tuple(values)
            self.expect(",", "',' or '}' in the set")


def parse(text: str | Selector | None) -> Selector:
    """Parse a selector; None and "" mean all(). A Selector is returned unchanged."""
    if isinstance(text, Selector):
        return text
    if text is None:
        return ALL
    if not isinstance(text, str):
        raise SelectorError(repr(text), 0, "a selector string")
    return _Parser(text).parse()
