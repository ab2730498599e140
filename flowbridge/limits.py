"""Ceilings on what a spec may ask for, checked before anything is allocated.

A spec is data from anywhere, so its size is bounded like any untrusted input: the
document (bytes and values after YAML aliases are expanded), the event size, conditioner
width and depth, the number of layers and the total parameter count. The defaults hold
every published NICE/RealNVP vector model with room to spare; raise them explicitly::

    with flowbridge.limits(params=2**31, width=2**17):
        spec = flowbridge.load_spec("big.yaml")

or on the command line, ``flowbridge --max-params N --max-width N ... COMMAND``.
Numeric constants in a spec are bounded separately (see :mod:`flowbridge.spec`): each
must be finite and representable in float32 without underflowing to a subnormal.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np

#: float32's largest finite value and smallest normal magnitude: every constant written
#: into generated code must lie in [F32_TINY, F32_MAX] in magnitude (or be 0), so that
#: no backend or dtype flushes it to zero, rounds it to infinity or treats it as subnormal.
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)

#: Integers in a spec that are not sizes (seeds) stay below this.
MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    """The ceilings on what a spec may ask for; every field is a positive integer.

    A spec is data from anywhere, so its size is bounded like any untrusted input, and
    checked before anything is allocated: a spec over a ceiling is a
    :exc:`flowbridge.SpecError` naming the field and the ceiling to raise. The defaults
    hold every published NICE/RealNVP vector model with room to spare. The object is
    frozen; the ceilings in force are changed with :func:`flowbridge.limits` (on the
    command line: ``flowbridge --max-params N --max-width N ... COMMAND``).

    Attributes:
        event_size: entries in one event (``D``), also the most a ``context_dim`` or a
            context embedding's ``features`` may be; default ``2**20``.
        width: units in one hidden layer (channels of a ResNet conditioner); default
            ``2**16``.
        depth: hidden layers in one conditioner (blocks of a ResNet conditioner); default
            64.
        layers: layers in one flow; default 1024.
        params: weights in one flow; default ``2**28`` (2 GiB as float64).
        document_bytes: size of a spec file or text; default ``2**24`` (16 MiB).
        document_values: values in a spec document, YAML aliases expanded; default
            ``2**21``.

    Raises:
        ValueError: a field is not a positive integer (a bool is refused).

    Example:
        >>> import flowbridge as fb
        >>> fb.Limits().width, fb.Limits().depth
        (65536, 64)
        >>> fb.Limits(width=2**17).width
        131072
        >>> fb.Limits(depth=0)
        Traceback (most recent call last):
        ...
        ValueError: limits.depth: expected a positive integer, got 0
    """

    event_size: int = 2**20  # entries in one event (D)
    width: int = 2**16  # units in one hidden layer
    depth: int = 64  # hidden layers in one conditioner
    layers: int = 1024  # layers in one flow
    params: int = 2**28  # weights in one flow (2 GiB as float64)
    document_bytes: int = 2**24  # size of a spec file or text (16 MiB)
    document_values: int = 2**21  # values in a document, YAML aliases expanded

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"limits.{f.name}: expected a positive integer, got {value!r}")


_CURRENT: contextvars.ContextVar[Limits] = contextvars.ContextVar(
    "flowbridge_limits", default=Limits()  # noqa: B039 (frozen, so immutable)
)


def current() -> Limits:
    """The ceilings in force (the defaults unless :func:`limits` raised them)."""
    return _CURRENT.get()


@contextlib.contextmanager
def limits(**overrides: int) -> Iterator[Limits]:
    """Raise (or lower) ceilings inside a ``with`` block: ``limits(params=2**31)``.

    The named ceilings replace those in force (the defaults of :class:`flowbridge.Limits`
    unless an enclosing block changed them); the others stay as they are. On leaving the
    block the previous ceilings are back. The ceilings are held in a context variable,
    so a block affects only its own thread or task.

    Args:
        **overrides: ceilings by name (the fields of :class:`flowbridge.Limits`:
            ``event_size``, ``width``, ``depth``, ``layers``, ``params``,
            ``document_bytes``, ``document_values``), each a positive integer.

    Yields:
        Limits: the :class:`flowbridge.Limits` in force inside the block.

    Raises:
        TypeError: an override is not the name of a ceiling (raised on entering the
            block).
        ValueError: an override is not a positive integer.

    Example:
        >>> import flowbridge as fb
        >>> with fb.limits(width=2**17) as ceilings:
        ...     spec = fb.realnvp(4, num_couplings=2, hidden=(70000,))
        >>> ceilings.width, spec.layers[0].conditioner.hidden
        (131072, (70000,))
        >>> fb.realnvp(4, num_couplings=2, hidden=(70000,))  # the default ceiling again
        Traceback (most recent call last):
        ...
        flowbridge.errors.SpecError: ...expected at most 65536 units, got 70000...
    """
    unknown = sorted(set(overrides) - {f.name for f in fields(Limits)})
    if unknown:
        names = ", ".join(f.name for f in fields(Limits))
        raise TypeError(f"limits: unknown ceiling {unknown[0]!r}; expected one of {names}")
    token = _CURRENT.set(replace(_CURRENT.get(), **overrides))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def memory(count: int) -> str:
    """``count`` float64 values as a human-readable size."""
    size = count * 8.0
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
