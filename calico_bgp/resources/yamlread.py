"""YAML text -> plain values, read as calicoctl reads it, with hostile input refused before it is built (pure).

calicoctl decodes with projectcalico/go-yaml-wrapper (a ghodss/yaml fork over gopkg.in/yaml.v2, then
`UnmarshalStrict` into the typed resource: calicoctl/calicoctl/resourcemgr/resourcemgr.go,
createResourcesFromBytes). What that means for a Calico user's text, and what this reader does:

- yaml.v2 scalars: `yes`/`no`/`on`/`off`/`y`/`n` (any of its spellings) are booleans, integers take
  Go's prefixes (0x, 0o, 0b, a leading 0 is octal), and there is no base 60: `5663:12` stays the text
  `5663:12` (a YAML 1.1 loader such as PyYAML's reads it as 339792). Timestamps stay text.
- ghodss/yaml turns a number or boolean into its text where the Go field is a string (labels and
  annotations are map[string]string): an unquoted `yes` label is `"true"`, `5` is `"5"`. That
  coercion is `scalar_text` (in fields.py, re-exported here); model.py applies it to labels and annotations.
- `UnmarshalStrict` refuses a key given twice in one mapping; so does this reader, naming the key and
  both lines.
- A file may hold several documents, and a document may be one resource or a YAML list of them.

Hostile input is bounded before anything is built: the text is at most MAX_INPUT_BYTES, and its
parser events are measured first (_measure): more than MAX_VALUES values with aliases expanded (a
"billion laughs" of a few hundred bytes), a list longer than MAX_LIST_ITEMS, or nesting deeper than
MAX_DEPTH is refused at the event that passes the limit, so the cost is bounded by the limits, not
by what the text would expand to.
"""
from __future__ import annotations

import math
import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from calico_bgp.resources.fields import scalar_text  # noqa: F401 (defined there: decoding stored values needs no YAML)

MAX_INPUT_BYTES = 4 * 1024 * 1024  # a file of resources is kilobytes; etcd takes at most 1.5 MiB a request
MAX_VALUES = 50_000                # values in one input, aliases expanded: a big file of resources is ~10,000
MAX_LIST_ITEMS = 1000              # rules of one BGPFilter list, prefixes, communities...: far more is a mistake
MAX_DEPTH = 64                     # resources are a few levels deep

_BOOL = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
# yaml.v2 resolve.go: ints through strconv.ParseInt(s, 0, 64) (with '_' allowed), floats by its own
# regexp plus .inf/.nan; no sexagesimal forms
_INT = re.compile(r"^[-+]?(?:0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|0[0-7_]*|[1-9][0-9_]*)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")


class YAMLRefused(ValueError):
    """The text is not YAML calicoctl would read, or is too large to read; one line, naming where."""


class _GoResolver(Resolver):
    """Tags plain scalars as gopkg.in/yaml.v2 does (no YAML 1.1 base 60, no timestamps)."""


_GoResolver.yaml_implicit_resolvers = {}
_GoResolver.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("yYnNtTfFoO"))
_GoResolver.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_GoResolver.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_GoResolver.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
_GoResolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


class _GoConstructor(SafeConstructor):
    def construct_yaml_bool(self, node: ScalarNode) -> bool:
        return self.construct_scalar(node) in _TRUE

    def construct_yaml_int(self, node: ScalarNode) -> int:
        raw = self.construct_scalar(node)
        text = raw.replace("_", "")
        sign, body = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
        try:
            if body.startswith(("0b", "0o", "0x")):
                return sign * int(body, 0)
            if len(body) > 1 and body.startswith("0"):
                return sign * int(body, 8)
            return sign * int(body)
        except ValueError:  # `0x_`: no digits; yaml.v2's ParseInt fails and the scalar stays a string
            return raw  # type: ignore[return-value]

    def construct_yaml_float(self, node: ScalarNode) -> float:
        text = self.construct_scalar(node).lower()
        if text.endswith("inf"):
            return -math.inf if text.startswith("-") else math.inf
        if text == ".nan":
            return math.nan
        return float(text)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        # keys equal in Python are one key of the dict built (1 and true): refused, not merged silently
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise YAMLRefused(f"YAML at line {line}: key {show(key)} given twice in one mapping "
                                      f"(first at line {seen[key]})")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


for _tag, _fn in (("bool", _GoConstructor.construct_yaml_bool), ("int", _GoConstructor.construct_yaml_int),
                  ("float", _GoConstructor.construct_yaml_float)):
    _GoConstructor.add_constructor(f"tag:yaml.org,2002:{_tag}", _fn)
_GoConstructor.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)


class _PyLoader(Reader, Scanner, Parser, Composer, _GoConstructor, _GoResolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _GoConstructor.__init__(self)
        _GoResolver.__init__(self)


if yaml.__with_libyaml__:  # libyaml scans and composes in C: megabytes in well under a second
    from yaml.cyaml import CParser

    class _CLoader(CParser, _GoConstructor, _GoResolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _GoConstructor.__init__(self)
            _GoResolver.__init__(self)

    _Loader: Any = _CLoader
    _Parser: Any = CParser
else:
    _Loader = _PyLoader
    _Parser = _PyLoader


def show(value: Any, limit: int = 60) -> str:
    """A value for an error line, cut to about `limit` characters (a 5 MB value is not echoed)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class _Open:
    """A mapping or sequence being measured: its path, values so far, and items (or keys) so far."""
    __slots__ = ("path", "anchor", "size", "items", "is_map", "key")

    def __init__(self, path: str, anchor: str | None, is_map: bool) -> None:
        self.path, self.anchor, self.is_map = path, anchor, is_map
        self.size, self.items, self.key = 1, 0, ""


def _measure(text: str) -> None:
    """Walk the parser's events, before any node is built, and refuse (YAMLRefused) a document that
    nests deeper than MAX_DEPTH, a list longer than MAX_LIST_ITEMS, or input holding more than
    MAX_VALUES values with its aliases expanded: an alias counts the values of what it names, so a
    "billion laughs" stops at the first alias past the limit, whatever it would have expanded to."""
    parser = _Parser(text)
    sizes: dict[str, int] = {}
    stack: list[_Open] = []
    total, index = 0, 0

    def add(n: int, where: str) -> None:
        nonlocal total
        total += n
        if total > MAX_VALUES:
            raise YAMLRefused(f"document {index}: more than {MAX_VALUES:,} values once its YAML aliases are "
                              f"expanded (at {where or 'its top'})")
        if stack:
            top = stack[-1]
            top.size += n

    def child_path() -> str:
        if not stack:
            return ""
        top = stack[-1]
        if top.is_map:
            return f"{top.path}.{top.key}" if top.path else top.key
        return f"{top.path}[{top.items}]"

    def count_item() -> None:
        if stack:
            top = stack[-1]
            top.items += 1
            if not top.is_map and top.items > MAX_LIST_ITEMS:
                raise YAMLRefused(f"document {index}: {top.path or 'the document'}: more than {MAX_LIST_ITEMS:,} "
                                  "items in one list")

    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                index += 1
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                path = child_path()
                if len(stack) >= MAX_DEPTH:
                    raise YAMLRefused(f"document {index}: nested deeper than {MAX_DEPTH} levels")
                add(1, path)
                stack.append(_Open(path, event.anchor, isinstance(event, yaml.MappingStartEvent)))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done = stack.pop()
                if done.anchor:
                    sizes[done.anchor] = done.size
                if stack:
                    stack[-1].size += done.size - 1  # its first value was counted when it opened
                    _after_value(stack[-1], count_item)
            elif isinstance(event, yaml.ScalarEvent):
                add(1, child_path())
                if event.anchor:
                    sizes[event.anchor] = 1
                if stack and stack[-1].is_map and stack[-1].items % 2 == 0:
                    key = event.value
                    stack[-1].key = key if len(key) <= 40 else f"{key[:40]}..."
                    stack[-1].items += 1
                elif stack:
                    _after_value(stack[-1], count_item)
            elif isinstance(event, yaml.AliasEvent):
                if any(o.anchor == event.anchor for o in stack):
                    raise YAMLRefused(f"document {index}: {child_path()} holds itself through a YAML alias")
                if event.anchor in sizes:  # an unknown anchor is refused when composed
                    add(sizes[event.anchor], child_path())
                if stack:
                    _after_value(stack[-1], count_item)
    finally:
        parser.dispose()


def _after_value(top: _Open, count_item: Any) -> None:
    if top.is_map:
        top.items += 1  # keys and values alternate
    else:
        count_item()


def read_documents(text: str) -> list[Any]:
    """The documents of `text` as plain values (empty documents left out); YAMLRefused for text that is
    too large, not YAML, a key twice in a mapping, or a document too large once its aliases expand."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_INPUT_BYTES:
        raise YAMLRefused(f"input is {size:,} bytes; at most {MAX_INPUT_BYTES:,} are read")
    loader = _Loader(text)
    docs: list[Any] = []
    try:
        _measure(text)
        while loader.check_node():
            node = loader.get_node()
            value = loader.construct_document(node)
            if value is not None:
                docs.append(value)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YAMLRefused(f"YAML{where}: {problem[:200]}") from None
    except RecursionError:  # the parser recurses once per level
        raise YAMLRefused(f"YAML: nested deeper than the parser goes (at most {MAX_DEPTH} levels are taken)") from None
    finally:
        loader.dispose()
    return docs


class _Dumper(yaml.SafeDumper):
    """Quotes every string that either reader would take for something else: yaml.v2 (`y`, `n`, `0o17`)
    or a YAML 1.1 one such as PyYAML's (`5663:12`, `2026-12-07`), so the text reads back as written."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        tag = super().resolve(kind, value, implicit)
        if kind is ScalarNode and implicit[0] and tag == "tag:yaml.org,2002:str":
            return _GoResolver().resolve(kind, value, implicit)
        return tag


def dump_yaml(data: Any, *, documents: bool = False) -> str:
    """`data` (or, `documents`, each item of it as one document) as YAML text that reads back the same."""
    if documents:
        return yaml.dump_all(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
