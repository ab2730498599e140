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
``(*batch, *event)``, log-dets ``(*batch,)``. Every :class:`Value` carries its static
shape: ``shape`` (the trailing dimensions, all known) and ``batched`` (whether
``*batch`` precedes them); an input ``x`` is ``batched`` with ``shape == event``, a
parameter is not batched. Structural ops take an explicit ``axis`` (negative, counted
from the last), reductions over the event an ``event_ndims``, as distrax's
``split_axis`` and ``sum_last(x, event_ndims)``. Each op checks its arguments' shapes
while tracing, so a layer definition whose shapes do not fit fails when it is traced,
with the op and the shapes in the message, before any code is emitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Ops whose node is an effect (a statement), not a value the outputs use.
EFFECTS = ("assign",)

#: Every dtype a traced value may have. ``"float"`` is floating point (the flow's dtype,
#: float32 or float64 as the backend computes), ``"int"`` an index (an index buffer, a
#: bucket search's result) and ``"bool"`` a comparison's result, read by ``where``.
DTYPES = ("float", "int", "bool")


@dataclass(frozen=True)
class Op:
    """One IR op, stated once: how it is called, what it takes and what it gives.

    Every rule an op has lives in its entry of :data:`OPS`: adding an op is this entry,
    one template per emitter (``Emitter.OPS``) and a test in ``tests/test_ir.py`` against
    NumPy, nothing else (``docs/architecture.md``, "Adding an op").

    Attributes:
        arity: the number of tensor arguments; ``-1``: any number (``call``).
        attrs: the names of its static attributes (``("axis",)``).
        shape: the shape rule, ``rule(node) -> (shape, batched)``: it checks the
            arguments' shapes (raising :class:`ShapeError` through ``_fail``) and gives the
            result's static trailing shape and whether ``*batch`` precedes it.
        inputs: each tensor argument's dtype (``"float"``, ``"int"``, ``"bool"``, or
            ``"any"``), one per argument; an op of any arity gives one for all.
        dtype: the result's dtype (:data:`DTYPES`), or a rule ``rule(node) -> dtype``
            (``call``: its function's output's).
        numbers: whether a plain Python number may stand for a tensor argument
            (arithmetic, comparisons, ``where``'s branches); it broadcasts as a scalar.
        doc: what the op computes, in one line, for the op table in the docs.

    Example:
        >>> from flowbridge.ir import OPS
        >>> op = OPS["bucket"]
        >>> op.arity, op.attrs, op.inputs, op.dtype
        (2, (), ('float', 'float'), 'int')
    """

    arity: int
    attrs: tuple[str, ...]
    shape: Callable[[Node], tuple[tuple[int, ...], bool]]
    inputs: tuple[str, ...] = ("float",)
    dtype: str | Callable[[Node], str] = "float"
    numbers: bool = False
    doc: str = ""


@dataclass(eq=False)
class Function:
    """A traced sub-function (:func:`call`): its parameters' names, in order, and its
    output; the sources of its body are the parameters and the layer's attributes."""

    params: tuple[str, ...]
    output: Value
    #: ``"call"`` (a sub-function every direction may call) or ``"loop"`` (a loop's step)
    kind: str = "call"


class ShapeError(TypeError):
    """A traced op's arguments do not fit (a bug in a layer definition, not in a spec).

    Each op checks its arguments' shapes while tracing, so a layer definition whose
    shapes do not fit fails when it is traced, with the op and the shapes in the message
    (``*batch`` for a batched value), before any code is emitted. The code generator
    raises it too when a traced output's shape is not the plan's. A subclass of
    ``TypeError``.

    Example:
        >>> from flowbridge.ir import ShapeError, ops, source
        >>> x = source("x", (4,), batched=True)
        >>> try:
        ...     ops.concat(x, source("self.log_scale", (4,)), axis=-1)
        ... except ShapeError as error:
        ...     print(error)
        op 'concat' on (*batch, 4), (4,): shapes must agree except along axis -1
    """


class DefinitionError(ValueError):
    """A layer definition the code generator cannot write as one class (a bug in the
    definition, not in a spec): its directions call one sub-function with bodies that
    differ, or hoist different constants. Shapes that do not fit are a
    :class:`ShapeError` instead. A subclass of ``ValueError``.

    Example:
        >>> from flowbridge.ir import DefinitionError
        >>> issubclass(DefinitionError, ValueError)
        True
    """


@dataclass(eq=False)
class Node:
    """One operation in a traced graph, with its result's static shape."""

    op: str
    args: tuple[Any, ...]  # Values or Python numbers
    attrs: dict[str, Any] = field(default_factory=dict)
    hint: str | None = None  # preferred variable name in emitted code
    shape: tuple[int, ...] = ()  # the trailing, static dimensions
    batched: bool = False  # whether (*batch,) precedes ``shape``
    value: Any = None  # what a static source stands for: an int, or an index list
    dtype: str = "float"  # "float", "int" or "bool" (see DTYPES)

    @property
    def inputs(self) -> list[Node]:
        return [a.node for a in self.args if isinstance(a, Value)]

    def describe(self) -> str:
        dims = ", ".join(["*batch"] * self.batched + [str(n) for n in self.shape])
        return f"({dims},)" if len(self.shape) + self.batched == 1 else f"({dims})"


class Value:
    """A symbolic tensor produced while tracing.

    Made by :func:`source`, :func:`call` and the ops, never directly. Layer definitions
    combine Values with the ops of :data:`OPS` and with ``+``, ``-``, ``*`` and unary
    ``-`` (a number may stand on either side); each operation appends a node to the
    traced graph and checks its arguments' shapes (:class:`ShapeError`). A Value has no
    truth value: Python-level branching is on the layer's static configuration only.

    Attributes:
        node: the graph node that computes it: its op, arguments, static attributes and
            shape.
        shape: the trailing, static dimensions, all known: ``event`` for an input ``x``
            of shape ``(*batch, *event)``, a parameter's whole shape.
        batched: whether ``*batch`` precedes ``shape`` (an input ``x``, and what is
            computed from it); a parameter is not batched.

    Example:
        >>> from flowbridge.ir import ops, source
        >>> x = source("x", (4,), batched=True)
        >>> y = x * ops.exp(source("self.log_scale", (4,)))
        >>> y.shape, y.batched, y.node.op
        ((4,), True, 'mul')
        >>> bool(y)
        Traceback (most recent call last):
        ...
        TypeError: a traced Value has no truth value: branch on static config only
    """

    __slots__ = ("node",)

    def __init__(self, node: Node):
        self.node = node

    @property
    def shape(self) -> tuple[int, ...]:
        return self.node.shape

    @property
    def batched(self) -> bool:
        return self.node.batched

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

    def __truediv__(self, other):
        return _apply("div", self, other)

    def __rtruediv__(self, other):
        return _apply("div", other, self)

    def __neg__(self):
        return _apply("neg", self)

    def __bool__(self):
        raise TypeError("a traced Value has no truth value: branch on static config only")


def _check_arg(node: Node, i: int, a: Any, op: Op) -> Any:
    """Argument ``i`` of ``node``, checked against the op's dtypes (a number only where
    the op takes numbers, and only for a float)."""
    want = op.inputs[i] if len(op.inputs) > 1 else op.inputs[0]
    if isinstance(a, Value):
        if a.node.value is not None and not isinstance(a.node.value, list):
            raise TypeError(f"{a.node.attrs['expr']} is a static int, not a tensor")
        if want != "any" and a.node.dtype != want:
            raise _fail(node, f"argument {i + 1} must be a {want} tensor, got {a.node.dtype}")
        return a
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        raise TypeError(f"IR arguments are Values or numbers, got {type(a).__name__}")
    if not op.numbers or want != "float":
        raise _fail(node, "expected tensors (traced Values), not numbers")
    return float(a)


def _apply(op: str, *args, **attrs) -> Value:
    spec = OPS[op]
    if spec.arity >= 0 and len(args) != spec.arity:
        raise TypeError(f"op {op!r} takes {spec.arity} tensor arguments, got {len(args)}")
    if set(attrs) != set(spec.attrs):
        raise TypeError(f"op {op!r} takes attributes {spec.attrs}, got {tuple(attrs)}")
    node = Node(op, tuple(args), dict(attrs))
    node.args = tuple(_check_arg(node, i, a, spec) for i, a in enumerate(args))
    node.shape, node.batched = spec.shape(node)
    node.dtype = spec.dtype(node) if callable(spec.dtype) else spec.dtype
    return Value(node)


# ------------------------------------------------------------------ shape rules
def _bound(node: Node, name: str) -> int | None:
    """A slice bound: None, an int, or a static-int source (``p.split``)."""
    v = node.attrs[name]
    v = v.node.value if isinstance(v, Value) and isinstance(v.node.value, int) else v
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise _fail(node, f"{name} must be None, an int or a static int, got {v!r}")
    return v


def _fail(node: Node, why: str) -> ShapeError:
    shapes = ", ".join(a.node.describe() if isinstance(a, Value) else repr(a) for a in node.args)
    return ShapeError(f"op {node.op!r} on {shapes}: {why}")


def _axis(node: Node, shape: tuple[int, ...]) -> int:
    axis = node.attrs["axis"]
    if not isinstance(axis, int) or not -len(shape) <= axis < 0:
        raise _fail(node, f"axis must be negative and within the {len(shape)} static dims, "
                    f"got {axis!r}")  # fmt: skip
    return axis


def _joint(node: Node, parts: list[tuple[tuple[int, ...], bool]]) -> tuple[tuple[int, ...], bool]:
    """Shapes combined elementwise: batched operands must agree exactly (the batch never
    broadcasts against event dims); an unbatched operand broadcasts into a batched one's
    event."""
    batched = {shape for shape, b in parts if b}
    if len(batched) > 1:
        raise _fail(node, "batched operands must have the same event shape")
    try:
        out = tuple(np.broadcast_shapes(*(shape for shape, _ in parts)))
    except ValueError:
        raise _fail(node, "shapes do not broadcast") from None
    if batched and out != next(iter(batched)):
        raise _fail(node, "an unbatched operand must broadcast into the batched operand's "
                    "event shape")  # fmt: skip
    return out, bool(batched)


def _part(a: Any) -> tuple[tuple[int, ...], bool]:
    return (a.node.shape, a.node.batched) if isinstance(a, Value) else ((), False)


def _elementwise(node: Node) -> tuple[tuple[int, ...], bool]:
    """Elementwise over its operands (numbers are scalars): see :func:`_joint`."""
    return _joint(node, [_part(a) for a in node.args])


def _last_axis(node: Node) -> tuple[tuple[int, ...], bool]:
    """Along the last axis (softmax, cumulative sum): the shape is kept."""
    first = node.args[0].node
    if not first.shape:
        raise _fail(node, "expected at least one static dim (the op works along the last)")
    return first.shape, first.batched


def _clamp(node: Node) -> tuple[tuple[int, ...], bool]:
    low, high = node.attrs["low"], node.attrs["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) \
            or not low < high:  # fmt: skip
        raise _fail(node, f"expected numbers low < high, got {low!r}, {high!r}")
    return node.args[0].node.shape, node.args[0].node.batched


def _linear(node: Node) -> tuple[tuple[int, ...], bool]:
    first, kernel, bias = (a.node for a in node.args)
    if (len(kernel.shape) != 2 or kernel.batched or bias.shape != kernel.shape[1:]
            or not first.shape or first.shape[-1] != kernel.shape[0]):  # fmt: skip
        raise _fail(node, "expected x (..., n_in), kernel (n_in, n_out), bias (n_out,)")
    return first.shape[:-1] + kernel.shape[1:], first.batched


def _conv2d(node: Node) -> tuple[tuple[int, ...], bool]:
    first, kernel, bias = (a.node for a in node.args)
    if (len(first.shape) < 3 or len(kernel.shape) != 4 or kernel.batched
            or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 != 1
            or kernel.shape[2] != first.shape[-3] or bias.shape != kernel.shape[3:]):  # fmt: skip
        raise _fail(node, "expected x (..., C_in, H, W), kernel (k, k, C_in, C_out) with k "
                    "odd, bias (C_out,)")  # fmt: skip
    return (*first.shape[:-3], kernel.shape[3], *first.shape[-2:]), first.batched


def _matrix(node: Node, value: Node, what: str) -> None:
    if value.batched or len(value.shape) != 2:
        raise _fail(node, f"expected {what} an unbatched matrix (n, m)")


def _matmul(node: Node) -> tuple[tuple[int, ...], bool]:
    first, other = (a.node for a in node.args)
    _matrix(node, first, "a")
    _matrix(node, other, "b")
    if first.shape[1] != other.shape[0]:
        raise _fail(node, "expected a (n, k) and b (k, m)")
    return (first.shape[0], other.shape[1]), False


def _solve_triangular(node: Node) -> tuple[tuple[int, ...], bool]:
    first, rhs = (a.node for a in node.args)
    _matrix(node, first, "a")
    _matrix(node, rhs, "b")
    if not isinstance(node.attrs["lower"], bool):
        raise _fail(node, f"lower must be True or False, got {node.attrs['lower']!r}")
    if first.shape[0] != first.shape[1] or rhs.shape[0] != first.shape[0]:
        raise _fail(node, "expected a square a (n, n) and b (n, m)")
    return rhs.shape, False


def _matvec(node: Node) -> tuple[tuple[int, ...], bool]:
    matrix, x = (a.node for a in node.args)
    _matrix(node, matrix, "the first argument")
    axis = _axis(node, x.shape)
    if matrix.shape[1] != x.shape[axis]:
        raise _fail(node, f"expected a matrix (m, {x.shape[axis]}) for axis {axis}")
    return _replace(x.shape, axis, matrix.shape[0]), x.batched


def _batch_mean(node: Node) -> tuple[tuple[int, ...], bool]:
    first, n = node.args[0].node, node.attrs["event_ndims"]
    if not first.batched or n not in (1, 3) or len(first.shape) != n:
        raise _fail(node, "expected a batched vector (D,) or image (C, H, W)")
    return first.shape[:1], False


def _assign(node: Node) -> tuple[tuple[int, ...], bool]:
    state, value = (a.node for a in node.args)
    if state.op != "source" or state.batched or value.batched or state.shape != value.shape:
        raise _fail(node, "expected a layer's state and an unbatched value of its shape")
    return value.shape, False


def _per_channel(node: Node) -> tuple[tuple[int, ...], bool]:
    first = node.args[0].node
    if first.batched or len(first.shape) != 1:
        raise _fail(node, "expected an unbatched vector (C,)")
    return (first.shape[0], 1, 1), False


def _image(node: Node) -> tuple[int, ...]:
    first = node.args[0].node
    if len(first.shape) < 3:
        raise _fail(node, "expected an image (..., C, H, W)")
    return first.shape


def _squeeze2x2(node: Node) -> tuple[tuple[int, ...], bool]:
    shape = _image(node)
    c, h, w = shape[-3:]
    if h % 2 or w % 2:
        raise _fail(node, "expected an even height and width")
    return (*shape[:-3], 4 * c, h // 2, w // 2), node.args[0].node.batched


def _unsqueeze2x2(node: Node) -> tuple[tuple[int, ...], bool]:
    shape = _image(node)
    c, h, w = shape[-3:]
    if c % 4:
        raise _fail(node, "expected a multiple of 4 channels")
    return (*shape[:-3], c // 4, 2 * h, 2 * w), node.args[0].node.batched


def _slice(node: Node) -> tuple[tuple[int, ...], bool]:
    first = node.args[0].node
    axis = _axis(node, first.shape)
    start, stop = _bound(node, "start"), _bound(node, "stop")
    size = len(range(first.shape[axis])[start:stop])
    if size == 0:
        raise _fail(node, f"the slice {start}:{stop} of axis {axis} is empty")
    return _replace(first.shape, axis, size), first.batched


def _take(node: Node) -> tuple[tuple[int, ...], bool]:
    first, index = (a.node for a in node.args)
    axis = _axis(node, first.shape)
    if not isinstance(index.value, list) or index.shape != (len(index.value),):
        raise _fail(node, "expected an index buffer as the second argument")
    if not all(0 <= i < first.shape[axis] for i in index.value):
        raise _fail(node, f"an index is outside axis {axis} of size {first.shape[axis]}")
    return _replace(first.shape, axis, len(index.value)), first.batched


def _concat(node: Node) -> tuple[tuple[int, ...], bool]:
    first, other = (a.node for a in node.args)
    axis = _axis(node, first.shape)
    if (first.batched != other.batched or len(first.shape) != len(other.shape)
            or _replace(first.shape, axis, 0) != _replace(other.shape, axis, 0)):  # fmt: skip
        raise _fail(node, f"shapes must agree except along axis {axis}")
    return _replace(first.shape, axis, first.shape[axis] + other.shape[axis]), first.batched


def _pad(node: Node) -> tuple[tuple[int, ...], bool]:
    first = node.args[0].node
    before, after, value = (node.attrs[k] for k in ("before", "after", "value"))
    counts = (before, after)
    if not first.shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 0
                              for n in counts):  # fmt: skip
        raise _fail(node, f"expected a tensor with a last axis and counts >= 0, got {counts}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(node, f"the pad value must be a number, got {value!r}")
    return (*first.shape[:-1], first.shape[-1] + before + after), first.batched


def _reshape(node: Node) -> tuple[tuple[int, ...], bool]:
    first, shape = node.args[0].node, node.attrs["shape"]
    if (not isinstance(shape, tuple) or not shape
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
            or int(np.prod(shape)) != int(np.prod(first.shape))):  # fmt: skip
        raise _fail(node, f"expected a tuple of positive ints with {int(np.prod(first.shape))} "
                    f"entries in all, got {shape!r}")  # fmt: skip
    return shape, first.batched


def _transpose(node: Node) -> tuple[tuple[int, ...], bool]:
    first, perm = node.args[0].node, node.attrs["perm"]
    if not isinstance(perm, tuple) or sorted(perm) != list(range(len(first.shape))):
        raise _fail(node, f"expected a permutation of the {len(first.shape)} static dims, "
                    f"got {perm!r}")  # fmt: skip
    return tuple(first.shape[i] for i in perm), first.batched


def _bucket(node: Node) -> tuple[tuple[int, ...], bool]:
    edges, x = (a.node for a in node.args)
    if len(edges.shape) < 1 or edges.shape[-1] < 2:
        raise _fail(node, "expected edges (..., K + 1) with K >= 1 buckets")
    return _joint(node, [(edges.shape[:-1], edges.batched), (x.shape, x.batched)])


def _gather(node: Node) -> tuple[tuple[int, ...], bool]:
    values, index = (a.node for a in node.args)
    if not values.shape:
        raise _fail(node, "expected values (..., K) to gather from along the last axis")
    return _joint(node, [(values.shape[:-1], values.batched), (index.shape, index.batched)])


def _broadcast_batch(node: Node) -> tuple[tuple[int, ...], bool]:
    first, like = (a.node for a in node.args)
    n = node.attrs["event_ndims"]
    if not (first.batched and like.batched and len(first.shape) == 1
            and isinstance(n, int) and 1 <= n <= len(like.shape)):  # fmt: skip
        raise _fail(node, f"expected a batched vector and a batched tensor with {n!r} event dims")
    return first.shape, True


def _sum_all(node: Node) -> tuple[tuple[int, ...], bool]:
    if node.args[0].node.batched:
        raise _fail(node, "sum_all reduces an unbatched tensor (a parameter)")
    return (), False


def _per_example(node: Node) -> tuple[tuple[int, ...], bool]:
    """``sum_event``, ``batch_fill``, ``batch_zeros``: (*batch, *event) -> (*batch,)."""
    like, n = node.args[-1].node, node.attrs["event_ndims"]
    if not like.batched or not isinstance(n, int) or not 1 <= n <= len(like.shape):
        raise _fail(node, f"expected a batched tensor with at least {n!r} event dims")
    if node.op == "batch_fill" and (node.args[0].node.batched or node.args[0].node.shape != ()):
        raise _fail(node, "the fill value must be an unbatched scalar")
    return like.shape[:-n], True


def _call(node: Node) -> tuple[tuple[int, ...], bool]:
    out = node.attrs["function"].output
    return out.shape, out.batched


def _loop(node: Node) -> tuple[tuple[int, ...], bool]:
    """``state <- body(state, *args)``, ``count`` times: the body keeps the state's shape."""
    state, out = node.args[0].node, node.attrs["function"].output.node
    count = _bound(node, "count")
    if count is None or count < 0:
        raise _fail(node, f"count must be an int >= 0 or a static int, got {count!r}")
    if (out.shape, out.batched, out.dtype) != (state.shape, state.batched, state.dtype):
        raise _fail(node, f"the body must give a value like the state, {state.describe()}, "
                    f"got {out.describe()}")  # fmt: skip
    return state.shape, state.batched


def _same(node: Node) -> tuple[tuple[int, ...], bool]:
    """Elementwise functions and activations: the argument's shape."""
    return node.args[0].node.shape, node.args[0].node.batched


def _replace(shape: tuple[int, ...], axis: int, size: int) -> tuple[int, ...]:
    dims = list(shape)
    dims[axis] = size
    return tuple(dims)


def _unary(doc: str, attrs: tuple[str, ...] = ()) -> Op:
    return Op(1, attrs, _same, doc=doc)


def _binary(doc: str, dtype: str = "float") -> Op:
    return Op(2, (), _elementwise, ("float", "float"), dtype, numbers=True, doc=doc)


#: Every op the IR knows, each an :class:`Op` stating its arity, static attributes,
#: shape rule, argument and result dtypes: op name -> :class:`Op`. Layer definitions
#: reach each op as ``ops.<name>(*tensors, **attributes)``
#: (``ops.slice(x, axis=-1, start=None, stop=2)``). Emitters must cover exactly this table
#: (a test asserts it; :func:`flowbridge.backends.contract.check_emitter` names an op
#: left out). Ops "along the last axis" work on the last static dimension.
OPS: dict[str, Op] = {
    # arithmetic
    "add": _binary("x + y"),
    "sub": _binary("x - y"),
    "mul": _binary("x * y"),
    "div": _binary("x / y"),
    "neg": _unary("-x"),
    # elementwise functions
    "exp": _unary("exp(x)"),
    "log": _unary("log(x)"),
    "sqrt": _unary("sqrt(x)"),
    "abs": _unary("|x|"),
    "tanh": _unary("tanh(x)"),
    "sigmoid": _unary("1 / (1 + exp(-x))"),
    "log_sigmoid": _unary("log(sigmoid(x))"),
    "softplus": _unary("log(1 + exp(x)), computed without overflow"),
    "clamp": Op(1, ("low", "high"), _clamp, doc="min(max(x, low), high), its gradient 0 outside"),
    "clamp_st": Op(1, ("low", "high"), _clamp,
                   doc="clamp(x, low, high), its gradient passed straight through"),  # fmt: skip
    # activations
    "relu": _unary("max(x, 0)"),
    "leaky_relu": _unary("x if x > 0 else negative_slope * x", ("negative_slope",)),
    "elu": _unary("x if x > 0 else exp(x) - 1"),
    "erf": _unary("the error function (GELU is built from it in flowbridge.layers)"),
    # comparisons and selection
    "less": _binary("x < y, a boolean", "bool"),
    "less_equal": _binary("x <= y, a boolean", "bool"),
    "where": Op(3, (), _elementwise, ("bool", "float", "float"), numbers=True,
                doc="x where the condition holds, else y (elementwise)"),  # fmt: skip
    # along the last axis
    "softmax": Op(1, (), _last_axis, doc="exp(x) / sum(exp(x)) along the last axis"),
    "cumsum": Op(1, (), _last_axis, doc="the running sum along the last axis"),
    "pad": Op(1, ("before", "after", "value"), _pad,
              doc="the last axis with `before` and `after` entries of `value` added"),
    # bucket search and a gather with data-dependent indices: bucket(edges, x) is the
    # bin i of x with edges[i] <= x < edges[i + 1], counted as sum(x >= edges) - 1 and
    # clamped into [0, K - 1] (edges (..., K + 1) increasing, broadcast against x);
    # gather(values, index) is values[..., index] along the last axis (values (..., K),
    # index (...) of integers, the leading dims broadcast)
    "bucket": Op(2, (), _bucket, ("float", "float"), "int",
                 doc="the bin of x among edges (..., K + 1): sum(x >= edges) - 1 in [0, K - 1]"),
    "gather": Op(2, (), _gather, ("float", "int"),
                 doc="values[..., index] along the last axis, index data-dependent"),
    # dense layer: x @ kernel + bias, kernel (in, out)
    "linear": Op(3, (), _linear, ("float",) * 3, doc="x @ kernel + bias, kernel (in, out)"),
    # images (*batch, C, H, W), channels first: a stride-1 "same" convolution with kernel
    # (k, k, C_in, C_out) and bias (C_out,) (cross-correlation, as torch's and TF's), and
    # 2x2 space-to-depth and back: y[..., 4c + 2i + j, h, w] = x[..., c, 2h + i, 2w + j]
    "conv2d": Op(3, (), _conv2d, ("float",) * 3,
                 doc="stride-1 'same' convolution, kernel (k, k, C_in, C_out)"),  # fmt: skip
    "per_channel": Op(1, (), _per_channel, doc="a parameter (C,) as (C, 1, 1)"),
    "squeeze2x2": Op(1, (), _squeeze2x2, doc="2x2 space-to-depth"),
    "unsqueeze2x2": Op(1, (), _unsqueeze2x2, doc="2x2 depth-to-space"),
    # matrices (unbatched parameters and constants, (n, m)): a product, a triangular solve
    # reading only the lower (or upper) triangle of a, and a matrix applied along one axis
    # of x (a 1x1 convolution's channel mixing at axis -3, a linear map at axis -1)
    "matmul": Op(2, (), _matmul, ("float", "float"), doc="a @ b, two matrices"),
    "solve_triangular": Op(2, ("lower",), _solve_triangular, ("float", "float"),
                           doc="x with a @ x = b, a's lower (upper) triangle read"),
    "matvec": Op(2, ("axis",), _matvec, ("float", "float"),
                 doc="y[..., i, ...] = sum_j m[i, j] x[..., j, ...] along axis"),
    # structure along one axis (negative: counted from the last)
    "slice": Op(1, ("axis", "start", "stop"), _slice, doc="x[..., start:stop] along axis"),
    "take": Op(2, ("axis",), _take, ("float", "int"),
               doc="a gather along an axis with a static index buffer"),  # fmt: skip
    "concat": Op(2, ("axis",), _concat, ("float", "float"), doc="two tensors joined along axis"),
    "reshape": Op(1, ("shape",), _reshape, doc="the static dims reshaped to `shape`"),
    "transpose": Op(1, ("perm",), _transpose,
                    doc="the static dims permuted: result dim i is dim perm[i]"),  # fmt: skip
    "broadcast_batch": Op(2, ("event_ndims",), _broadcast_batch, ("float", "float"),
                          doc="c (*b, C) broadcast to like's batch: (*batch, C)"),  # fmt: skip
    # batch statistics and state: the per-channel (per-entry) mean over every batch
    # dimension (and H, W of an image): (*batch, C[, H, W]) -> (C,); and an update of a
    # layer's state (a running average) to a value, emitted as a statement (an effect)
    "batch_mean": Op(1, ("event_ndims",), _batch_mean, doc="the per-channel batch mean"),
    "assign": Op(2, (), _assign, ("float", "float"), doc="state <- value (an effect)"),
    # reductions and batch-shaped constants
    "sum_event": Op(1, ("event_ndims",), _per_example, doc="(*batch, *event) -> (*batch,)"),
    "sum_all": Op(1, (), _sum_all, doc="an unbatched tensor (a parameter) -> scalar"),
    "batch_fill": Op(2, ("event_ndims",), _per_example, ("float", "float"),
                     doc="(scalar, like x) -> (*batch,) filled with it"),  # fmt: skip
    "batch_zeros": Op(1, ("event_ndims",), _per_example, doc="like x -> zeros (*batch,)"),
    # a sub-function traced once and emitted once per layer class, as a method every
    # direction calls (``self.conditioner(x_a, context)``): any number of tensor
    # arguments (arity -1), the method's name and the traced :class:`Function`
    "call": Op(-1, ("method", "function"), _call, ("any",),
               lambda node: node.attrs["function"].output.node.dtype,
               doc="self.method(*args): a traced sub-function, written once per class"),
    # a bounded loop over a traced body (:func:`loop`): the state starts at the first
    # argument and becomes ``self.method(state, *rest)``, ``count`` times (an int or a
    # static int); the body is a method written once, so the emitted code's size does not
    # depend on the count (an autoregressive layer's D-pass direction)
    "loop": Op(-1, ("method", "function", "count"), _loop, ("any",),
               lambda node: node.args[0].node.dtype,
               doc="state <- self.method(state, *args), count times (a compiled loop)"),
}


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


def source(
    expr: str,
    shape: tuple[int, ...] = (),
    *,
    batched: bool = False,
    value: Any = None,
    hint: str | None = None,
    dtype: str = "float",
) -> Value:
    """An input of a traced function, as a :class:`Value`.

    An input is an argument (``x``, batched, of the event's shape), an attribute
    (``self.log_scale``, a parameter of ``shape``), an index buffer (``value`` its list
    of indices) or a static int (``value`` the int, usable only as an op's attribute, as
    a slice bound say).

    ``expr`` is written verbatim into every backend's code, so it comes only from
    flowbridge's own layer definitions, never from a spec.

    Args:
        expr: the Python expression the input stands for in emitted code (``"x"``,
            ``"self.log_scale"``).
        shape: its static, trailing dimensions (the event's for an argument); an index
            buffer's is ``(len(value),)`` whatever is given. Default ``()``.
        batched: whether ``*batch`` precedes ``shape`` (``True`` for an argument such as
            ``x``). Default ``False``.
        value: an index buffer's list of indices, or a static int; ``None`` (the
            default) for a tensor.
        hint: a preferred variable name in emitted code; default ``None``.
        dtype: a tensor's dtype (:data:`DTYPES`): ``"float"`` (the default) or ``"int"``
            (an index computed elsewhere); an index buffer's is ``"int"`` whatever is
            given.

    Returns:
        :class:`Value`: the symbolic input, a ``source`` node.

    Raises:
        TypeError: ``shape`` is not a sequence of ints. Nothing else is checked here: the
            ops that use the value check its shape (:class:`ShapeError`) and that a
            static int is not used as a tensor.

    Example:
        >>> from flowbridge.ir import ops, source
        >>> x = source("x", (3,), batched=True)
        >>> index = source("self.trans_idx", value=[2, 0])  # an index buffer, shape (2,)
        >>> split = source("self.split", value=1)  # a static int
        >>> ops.take(x, index, axis=-1).shape, ops.slice(x, axis=-1, start=split, stop=None).shape
        ((2,), (2,))
    """
    if isinstance(value, list):
        shape = (len(value),)
    node = Node("source", (), {"expr": expr}, hint, tuple(shape), batched, value)
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    node.dtype = "int" if isinstance(value, list) else dtype
    return Value(node)


def call(method: str, fn, params: tuple[str, ...], *args: Value) -> Value:
    """Trace ``fn(*args)`` as a sub-function that the emitted code calls as a method.

    ``fn`` is traced once over fresh sources named ``params`` (shaped as ``args``) into
    a ``Function``, and recorded as one ``call`` node: the emitted code calls
    ``self.{method}(...)``, whose body is the function's, written once per class however
    many directions call it (a coupling's conditioner, say).

    Args:
        method: the method's name in the generated class (``"conditioner"``).
        fn: a function of ``len(params)`` :class:`Value` arguments, written over the ops,
            returning one :class:`Value`.
        params: the method's parameter names, one per argument (``("x_a",)``).
        *args: the :class:`Value` arguments of this call.

    Returns:
        :class:`Value`: the call's result, of ``fn``'s output shape and batching, named
        as ``fn``'s output.

    Raises:
        TypeError: ``params`` and ``args`` differ in number.
        ShapeError: ``fn``'s ops do not fit the arguments' shapes.

    Example:
        >>> from flowbridge.ir import call, ops, source
        >>> x_a = source("x_a", (2,), batched=True)
        >>> out = call("conditioner", lambda h: ops.tanh(h), ("x_a",), x_a)
        >>> out.node.op, out.node.attrs["method"], out.shape, out.batched
        ('call', 'conditioner', (2,), True)
        >>> out.node.attrs["function"].params
        ('x_a',)
    """
    if len(params) != len(args):
        raise TypeError(f"call {method!r}: {len(params)} parameter names for {len(args)} arguments")
    inputs = [source(name, a.shape, batched=a.batched) for name, a in zip(params, args, strict=True)]
    function = Function(tuple(params), fn(*inputs))
    value = _apply("call", *args, method=method, function=function)
    value.node.hint = function.output.node.hint
    return value


def loop(method: str, fn, params: tuple[str, ...], count: Any, init: Value,
         *args: Value) -> Value:  # fmt: skip
    """A bounded loop: ``state = init``, then ``state = fn(state, *args)``, ``count`` times.

    ``fn`` is traced once over fresh sources named ``params`` into a ``Function``, as
    :func:`call` does, and recorded as one ``loop`` node: the emitted code loops over a
    method ``self.{method}(state, *args)`` whose body is written once, in each framework's
    own loop (a Python loop for torch and NumPy, ``tf.while_loop``,
    ``jax.lax.fori_loop``), so the code's size does not depend on ``count``.

    Args:
        method: the body's method name in the generated class (``"step"``).
        fn: a function of ``len(params)`` :class:`Value` arguments (the state first)
            returning the next state, shaped as the state.
        params: the method's parameter names, the state's first (``("x", "y")``).
        count: how many times the body runs: an int ``>= 0`` or a static int source
            (``p.passes``, so one class serves every count).
        init: the state's starting value.
        *args: the other arguments, passed unchanged to every step.

    Returns:
        :class:`Value`: the state after ``count`` steps.

    Raises:
        TypeError: ``params`` and the arguments differ in number.
        ShapeError: the body's output is not shaped as the state, or ``count`` is not a
            non-negative int.

    Example:
        >>> from flowbridge.ir import loop, ops, source
        >>> x = source("x", (3,), batched=True)
        >>> out = loop("step", lambda s, v: ops.tanh(s) + v, ("state", "x"), 4, x, x)
        >>> out.node.op, out.node.attrs["count"], out.shape
        ('loop', 4, (3,))
    """
    if len(params) != 1 + len(args):
        raise TypeError(f"loop {method!r}: {len(params)} parameter names for "
                        f"{1 + len(args)} arguments")  # fmt: skip
    given = (init, *args)
    inputs = [source(name, a.shape, batched=a.batched) for name, a in zip(params, given, strict=True)]
    function = Function(tuple(params), fn(*inputs), "loop")
    value = _apply("loop", *given, method=method, function=function, count=count)
    value.node.hint = function.output.node.hint
    return value


def functions(nodes: list[Node]) -> dict[str, list[Function]]:
    """{method: [Function, ...]} of the ``call`` and ``loop`` nodes among ``nodes``."""
    out: dict[str, list[Function]] = {}
    for node in nodes:
        if node.op in ("call", "loop"):
            out.setdefault(node.attrs["method"], []).append(node.attrs["function"])
    return out


def reachable(outputs: list[Value]) -> list[Node]:
    """Every node ``outputs`` depend on, the bodies of called functions included."""
    seen, todo, out = set(), list(outputs), []
    while todo:
        for node in topo_order(todo):
            if id(node) not in seen:
                seen.add(id(node))
                out.append(node)
        todo = [f.output for fs in functions(out).values() for f in fs
                if id(f.output.node) not in seen]  # fmt: skip
    return out


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
