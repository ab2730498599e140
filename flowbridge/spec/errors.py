"""Pydantic's validation errors as one :class:`~flowbridge.SpecError` in flowbridge's words.

Every message names the field by its path in the spec (``layers[3].conditioner.hidden[1]``)
and says what was expected and what was found: ``expected a positive integer, got -4``.
A discriminated union's branch name (``affine_coupling``, ``clamp``, ``mlp``), which
pydantic puts in its error locations, is left out of the path; the caller passes the
branch names (:data:`flowbridge.spec.models.TAGS`), so this module knows no model.
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import ValidationError

from ..document import show
from ..errors import SpecError


def path(loc: tuple, tags: Collection[str]) -> str:
    """A pydantic error location as a spec path: ``layers[0].mask.size``."""
    out = ""
    prev_index = False
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
            prev_index = True
            continue
        if item in tags and (prev_index or out.endswith(("mask", "scale", "conditioner", "spline"))):
            prev_index = False  # the discriminator's branch name, not a field
            continue
        out += f".{item}" if out else str(item)
        prev_index = False
    return out or "spec"


def expected(err: dict) -> str:
    """What a pydantic error says was expected, as ``expected ...``."""
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "constant":  # flowbridge's own rule, with its own message
        return err["msg"].rsplit(", got", 1)[0]
    if kind == "less_than_equal":
        return f"expected a number <= {ctx.get('le')}"
    if kind == "greater_than" and ctx.get("gt") == 0 and type(ctx.get("gt")) is int:
        return "expected a positive integer"
    if kind == "greater_than_equal" and ctx.get("ge") == 0:
        return "expected a non-negative number"
    if kind == "greater_than":
        return f"expected a number > {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"expected a number >= {ctx.get('ge')}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "expected an integer"
    if kind in ("float_type", "float_parsing"):
        return "expected a number"
    if kind == "finite_number":
        return "expected a finite number"
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false"
    if kind in ("literal_error", "union_tag_invalid"):
        choices = ctx.get("expected") or ctx.get("expected_tags")
        return f"expected one of {choices}"
    if kind == "union_tag_not_found":
        return f"expected a {ctx.get('discriminator')} field"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("tuple_type", "list_type"):
        return "expected a list"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a mapping"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s)"
    if kind == "string_pattern_mismatch":
        return f"expected a string matching {ctx.get('pattern')}"
    return "expected " + err["msg"][0].lower() + err["msg"][1:]


def translate(exc: ValidationError, tags: Collection[str]) -> SpecError:
    """Every error in ``exc`` as ``(path, message)``, in one :class:`SpecError`."""
    errors = []
    for err in exc.errors():
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, SpecError):  # a nested model's own __init__ already failed
            here = path(err["loc"], tags)
            for where, message in inner.errors:
                sep = "" if where.startswith("[") else "."
                errors.append((where if here == "spec" else f"{here}{sep}{where}", message))
            continue
        message, where, got = expected(err), path(err["loc"], tags), err.get("input")
        if err["type"] == "union_tag_invalid":  # name the discriminator field itself
            field = err["ctx"]["discriminator"].strip("'")
            field = "kind" if field.endswith("()") else field  # a callable reads ``kind``
            where = field if where == "spec" else f"{where}.{field}"
            got = err["ctx"]["tag"]
        if err["type"] != "missing":
            message += f", got {show(got)}"
        errors.append((where, message))
    return from_errors(errors)


def from_errors(errors: list[tuple[str, str]]) -> SpecError:
    """One :class:`SpecError` for ``(path, message)`` pairs: the message is the one
    error, or ``N errors:`` and each on its own line."""
    lines = [f"{where}: {msg}" for where, msg in errors]
    head = lines[0] if len(lines) == 1 else f"{len(lines)} errors:\n  " + "\n  ".join(lines)
    return SpecError(head, errors)
