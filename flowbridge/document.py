"""Spec documents (JSON or YAML text) read into plain JSON data, safely.

Everything that comes out is a ``dict`` with ``str`` keys, a ``list``, a ``str``, an
``int`` (at most 2**63 - 1 in magnitude), a finite ``float``, a ``bool`` or ``None``.
Anything else is refused with a :class:`~flowbridge.SpecError` naming where it is:
YAML-only types (sets, timestamps, binary, merge keys, Python tags), non-string keys,
duplicate keys, non-finite numbers, documents nested too deeply, too large or that expand
(through YAML aliases) to too many values. YAML is composed with PyYAML's safe loader and
turned into data here, node by node, so an alias bomb is stopped after
``Limits.document_values`` values rather than expanded.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from typing import Any

import numpy as np
import yaml

from .errors import SpecError
from .limits import MAX_INT, current

#: The deepest nesting a spec needs is 5 (layer -> conditioner -> hidden -> value).
MAX_DEPTH = 32

_SHORT = reprlib.Repr()
_SHORT.maxstring = 40
_SHORT.maxother = 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8
_SHORT.maxlevel = 3
_SHORT.maxlong = 40


def show(value: Any, limit: int = 60) -> str:
    """A short repr of ``value``: bounded work whatever its size or nesting."""
    try:
        text = _SHORT.repr(value)
    except (ValueError, RecursionError):  # e.g. an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def path_of(path: tuple) -> str:
    out = ""
    for item in path:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
    return out or "spec"


class _Pairs(list):
    """A JSON object's (key, value) pairs, before duplicate keys are checked."""


class _Walk:
    """Convert parsed data to plain JSON data, counting values and checking each."""

    def __init__(self):
        self.values = 0
        self.limit = current().document_values
        self.done: dict[int, tuple[Any, int]] = {}  # YAML node id -> (data, values in it)

    def count(self, path: tuple) -> None:
        self.values += 1
        if self.values > self.limit:
            raise SpecError(
                f"{path_of(path)}: the document holds more than {self.limit} values "
                "(YAML aliases expanded); raise flowbridge.limits(document_values=...) "
                "if it is meant to"
            )

    def depth(self, path: tuple) -> None:
        if len(path) > MAX_DEPTH:
            raise SpecError(f"{path_of(path)}: nested deeper than {MAX_DEPTH} levels")

    def scalar(self, value: Any, path: tuple) -> Any:
        if isinstance(value, _Unreadable):
            raise SpecError(f"{path_of(path)}: {value.message}")
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            if abs(value) > MAX_INT:
                raise SpecError(f"{path_of(path)}: expected an integer of magnitude at most "
                                f"2**63 - 1, got a {value.bit_length()}-bit integer")  # fmt: skip
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise SpecError(f"{path_of(path)}: expected a finite number, got {value!r}")
            return value
        raise SpecError(f"{path_of(path)}: expected a JSON value (mapping, list, string, "
                        f"number, boolean or null), got {type(value).__name__}")  # fmt: skip

    # ------------------------------------------------------------------------ JSON
    def json(self, value: Any, path: tuple = ()) -> Any:
        """Parsed JSON (objects as :class:`_Pairs`) or data built in Python (dicts,
        lists, tuples, NumPy scalars) as plain JSON data."""
        self.count(path)
        self.depth(path)
        if isinstance(value, (_Pairs, dict)):
            out: dict[str, Any] = {}
            for key, item in value if isinstance(value, _Pairs) else value.items():
                if not isinstance(key, str):
                    raise SpecError(f"{path_of(path)}: expected string keys, got {show(key)}")
                if key in out:
                    raise SpecError(f"{path_of((*path, key))}: duplicate key {show(key)}")
                out[key] = self.json(item, (*path, key))
            return out
        if isinstance(value, (list, tuple)):
            return [self.json(item, (*path, i)) for i, item in enumerate(value)]
        if isinstance(value, np.generic):  # NumPy scalars count as the Python ones
            value = value.item()
        return self.scalar(value, path)

    # ------------------------------------------------------------------------ YAML
    def yaml(self, loader: yaml.SafeLoader, node: yaml.Node, path: tuple = ()) -> Any:
        """A YAML node as data. An aliased node is converted once: each further use
        counts its values at once (so an alias bomb fails at the first use past the
        limit, in time linear in the file) and shares the data already built."""
        if id(node) in self.done:
            data, size = self.done[id(node)]
            self.values += size - 1
            self.count(path)
            return data
        before = self.values
        data = self._yaml(loader, node, path)
        self.done[id(node)] = (data, self.values - before)
        return data

    def _yaml(self, loader: yaml.SafeLoader, node: yaml.Node, path: tuple) -> Any:
        self.count(path)
        self.depth(path)
        tag = node.tag
        if isinstance(node, yaml.MappingNode):
            if tag != "tag:yaml.org,2002:map":
                raise SpecError(f"{path_of(path)}: expected a mapping, got YAML {_tag(tag)}")
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise SpecError(f"{path_of(path)}: YAML merge keys (<<) are not supported")
                if not (isinstance(key_node, yaml.ScalarNode)
                        and key_node.tag == "tag:yaml.org,2002:str"):  # fmt: skip
                    got = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                    raise SpecError(f"{path_of(path)}: expected string keys, got {show(got)} "
                                    f"({_tag(key_node.tag)})")  # fmt: skip
                key = key_node.value
                if key in out:
                    raise SpecError(f"{path_of((*path, key))}: duplicate key {show(key)}")
                out[key] = self.yaml(loader, value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            if tag != "tag:yaml.org,2002:seq":
                raise SpecError(f"{path_of(path)}: expected a list, got YAML {_tag(tag)}")
            return [self.yaml(loader, item, (*path, i)) for i, item in enumerate(node.value)]
        if tag not in _YAML_SCALARS:
            raise SpecError(f"{path_of(path)}: expected a JSON value, got YAML {_tag(tag)} "
                            f"{show(node.value)}")  # fmt: skip
        if tag == "tag:yaml.org,2002:int" and len(node.value.lstrip("+-")) > 19:
            return self.scalar(_json_int(node.value.lstrip("+")), path)
        try:
            value = loader.construct_object(node, deep=True)
        except (ValueError, yaml.YAMLError) as exc:  # e.g. an integer of 5000 digits
            raise SpecError(f"{path_of(path)}: cannot read {show(node.value)} ({exc})") from None
        return self.scalar(value, path)


_YAML_SCALARS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}


def _tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _check_size(text: str | bytes) -> str:
    limit = current().document_bytes
    if len(text) > limit:
        raise SpecError(f"spec: the document is {len(text)} bytes, over the limit of {limit}; "
                        "raise flowbridge.limits(document_bytes=...) if it is meant to")  # fmt: skip
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"spec: expected UTF-8 text, got byte 0x{text[exc.start]:02x} at "
                            f"position {exc.start}") from None  # fmt: skip
    return text


class _Unreadable:
    """A JSON number Python would read as something unsafe, reported with its path."""

    def __init__(self, message: str):
        self.message = message


def _json_int(text: str) -> Any:
    digits = len(text.lstrip("-"))
    if digits > 19:
        return _Unreadable(f"expected an integer of magnitude at most 2**63 - 1, got one of "
                           f"{digits} digits")  # fmt: skip
    return int(text)


def _json_constant(name: str) -> Any:
    return _Unreadable(f"expected a finite number, got {name}")


def read_json(text: str | bytes) -> Any:
    """Plain data from JSON text."""
    text = _check_size(text)
    try:
        raw = json.loads(text, object_pairs_hook=_Pairs, parse_constant=_json_constant,
                         parse_int=_json_int)  # fmt: skip
    except json.JSONDecodeError as exc:
        raise SpecError(f"spec: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise SpecError(f"spec: nested deeper than {MAX_DEPTH} levels") from None
    return _Walk().json(raw)


def _flow_depth(text: str) -> int:
    """The deepest nesting of YAML flow collections (``[``, ``{``) in ``text``, counting
    brackets inside strings too: a spec's strings hold none, so this only errs on
    documents that are refused anyway. Checked before parsing, which would otherwise scan
    a 100000-bracket document in pure Python before failing."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


_BRACKETS = re.compile(r"[\[\]{}]")


def read_yaml(text: str | bytes) -> Any:
    """Plain data from YAML text (one document, JSON-compatible types only)."""
    text = _check_size(text)
    if _flow_depth(text) > MAX_DEPTH:
        raise SpecError(f"spec: nested deeper than {MAX_DEPTH} levels")
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses some characters up front
        raise SpecError(f"spec: invalid YAML: {show(str(exc), 300)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _Walk().yaml(loader, node)
    except yaml.YAMLError as exc:
        raise SpecError(f"spec: invalid YAML: {show(str(exc), 300)}") from None
    except RecursionError:
        raise SpecError(f"spec: nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def plain(data: Any) -> Any:
    """Check data built in Python (``FlowSpec.from_dict``) the same way as a document."""
    return _Walk().json(data)
