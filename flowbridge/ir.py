"""The neutral expression IR that every layer's math is written in.

A layer's forward and inverse are ordinary Python functions over :data:`ops` and
:class:`Value` objects (``+``, ``-``, ``*``, unary ``-``). Running such a function with
symbolic inputs *traces* it: every operation appends a :class:`Node` to a graph, and
Python-level branching on the layer's static configuration (scale map, activation,
mask kind) is resolved at trace time, so the traced graph is straight-line code. Each
backend's emitter then prints one line per node from a table that maps an op name to
that framework's call (``exp`` -> ``torch.exp``, ``tf.exp``, ``np.exp``). The
emitters translate operations; the formulas live only in :mod:`flowbridge.layers`.

Shape convention (stated once, used everywhere): a tensor ``x`` has shape
``(*batch, *event)``; for vector events ``event = (D,)``. Every structural op acts on
the last axis; reductions over the event return ``(*batch,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Every op the IR knows, with its arity (number of tensor arguments) and the names of
#: its static attributes. Emitters must cover exactly this table (a test asserts it).
OPS: dict[str, tuple[int, tuple[str, ...]]] = {
    # arithmetic
    "add": (2, ()),
    "sub": (2, ()),
    "mul": (2, ()),
    "neg": (1, ()),
    # elementwise functions
    "exp": (1, ()),
    "tanh": (1, ()),
    "sigmoid": (1, ()),
    "log_sigmoid": (1, ()),
    "clamp_st": (1, ("low", "high")),  # clamp, gradient passed straight through
    # activations
    "relu": (1, ()),
    "leaky_relu": (1, ("negative_slope",)),
    "elu": (1, ()),
    "erf": (1, ()),  # the error function (GELU is built from it in flowbridge.layers)
    # dense layer: x @ kernel + bias, kernel (in, out)
    "linear": (3, ()),
    # structure on the last (event) axis
    "slice_last": (1, ("start", "stop")),
    "take_last": (2, ()),  # gather along the last axis with an index buffer
    "concat_last": (2, ()),
    # reductions and batch-shaped constants
    "sum_last": (1, ()),  # (*batch, D) -> (*batch,)
    "sum_all": (1, ()),  # a parameter vector -> scalar
    "batch_fill": (2, ()),  # (scalar, like x) -> (*batch,) filled with the scalar
    "batch_zeros": (1, ()),  # like x -> zeros of shape (*batch,)
}


@dataclass(eq=False)
class Node:
    """One operation in a traced graph."""

    op: str
    args: tuple[Any, ...]  # Values or Python numbers
    attrs: dict[str, Any] = field(default_factory=dict)
    hint: str | None = None  # preferred variable name in emitted code

    @property
    def inputs(self) -> list[Node]:
        return [a.node for a in self.args if isinstance(a, Value)]


class Value:
    """A symbolic tensor produced while tracing."""

    __slots__ = ("node",)

    def __init__(self, node: Node):
        self.node = node

    def __add__(self, other):
        return _apply("add", self, other)

    def __radd__(self, other):
        return _apply("add", other, self)

    def __sub__(self, other):
        return _apply("sub", self, other)

    def __rsub__(self, other):
        return _apply("sub", other, self)

    def __mul__(self, other):
        return _apply("mul", self, other)

    def __rmul__(self, other):
        return _apply("mul", other, self)

    def __neg__(self):
        return _apply("neg", self)

    def __bool__(self):
        raise TypeError("a traced Value has no truth value: branch on static config only")


def _check_arg(a):
    if isinstance(a, Value):
        return a
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        raise TypeError(f"IR arguments are Values or numbers, got {type(a).__name__}")
    return float(a)


def _apply(op: str, *args, **attrs) -> Value:
    arity, attr_names = OPS[op]
    if len(args) != arity:
        raise TypeError(f"op {op!r} takes {arity} tensor arguments, got {len(args)}")
    if set(attrs) != set(attr_names):
        raise TypeError(f"op {op!r} takes attributes {attr_names}, got {tuple(attrs)}")
    return Value(Node(op, tuple(_check_arg(a) for a in args), dict(attrs)))


class _Ops:
    """The neutral ops namespace that layer definitions are written against."""

    def __getattr__(self, op: str):
        if op not in OPS:
            raise AttributeError(f"the IR has no op {op!r}")
        return lambda *args, **attrs: _apply(op, *args, **attrs)

    @staticmethod
    def name(value: Value, hint: str) -> Value:
        """Name ``value`` in emitted code (``shift``, ``log_scale``...)."""
        value.node.hint = hint
        return value


ops = _Ops()


def source(expr: str, hint: str | None = None) -> Value:
    """An input of a traced function: an argument (``x``) or an attribute (``self.w``).

    ``expr`` is written verbatim into every backend's code, so it comes only from
    flowbridge's own layer definitions, never from a spec.
    """
    return Value(Node("source", (), {"expr": expr}, hint))


def topo_order(outputs: list[Value]) -> list[Node]:
    """Nodes reachable from ``outputs``, each after its inputs, in first-use order.

    Iterative (an explicit stack), so a graph of any depth, a conditioner of hundreds of
    layers say, never meets Python's recursion limit."""
    order: list[Node] = []
    seen: set[int] = set()
    for out in outputs:
        stack: list[tuple[Node, int]] = [(out.node, 0)]
        while stack:
            node, next_child = stack.pop()
            if next_child == 0:
                if id(node) in seen:
                    continue
                seen.add(id(node))
            children = node.inputs
            if next_child < len(children):
                stack.append((node, next_child + 1))
                child = children[next_child]
                if id(child) not in seen:
                    stack.append((child, 0))
            else:
                order.append(node)
    return order
