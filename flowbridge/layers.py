"""Every layer type's math, written once over the neutral IR (:mod:`flowbridge.ir`).

Each definition turns one spec layer and its input event shape into a :class:`Plan`:
the generated class's paper name and docstring, its constructor's literal arguments,
each parameter's shape and initialisation (:class:`Param`), the output event shape, and
``forward`` and ``inverse`` as functions of a parameter view ``p`` whose attributes are
symbolic (``p.dense_kernel(0)`` stands for ``self.kernels[0]`` in every backend). Both return
``(output, log_det)``; ``inverse`` returns the log-det of the inverse map, so
``inverse log-det = -forward log-det`` at matching points. Shapes: ``x`` is
``(*batch, *event_shape)``, log-dets ``(*batch,)``; :func:`plan_flow` hands each layer
the previous layer's ``output_shape``.

A coupling is three parts (as distrax's ``SplitCoupling``, zuko's
``GeneralCouplingTransform``): a *partition* of the event (``x_a`` passed through,
``x_b`` transformed), a *conditioner* reading ``x_a``, and an *elementwise map* of
``x_b`` given the conditioner's output. NICE and RealNVP differ in the map alone
(:class:`Shift`, :class:`Affine`); a new mask, conditioner or map is one more part.

Adding a layer type = one definition here and its entry in :data:`REGISTRY` (plus its
spec model); no backend changes.
"""

from __future__ import annotations

import dataclasses
import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import ir, splines
from . import spec as S
from .ir import Value, ops, source


@dataclass(frozen=True)
class Init:
    """How one parameter starts: ``zeros``, or uniform in ``+-bound``.

    A fan-in rule (``Init.fan_in_uniform(fan_in)``, torch's ``nn.Linear`` kernel rule)
    records its ``fan_in``; ``bound = fan_in ** -0.5``. ``Init.uniform(bound)`` makes a
    plain uniform rule, and ``draw(rng, shape)`` a float64 array of ``shape`` from a
    ``numpy.random.Generator`` (zeros use no randomness).

    Attributes:
        rule: ``"zeros"`` (every entry 0) or ``"uniform"`` (uniform in
            ``[-bound, bound]``).
        bound: the half-width of the uniform range; ``0.0`` (the default) for zeros.
        fan_in: the fan-in a fan-in rule was made from (``bound = fan_in ** -0.5``);
            ``None`` (the default) for any other rule.

    Example:
        >>> import numpy as np
        >>> from flowbridge.layers import Init
        >>> rule = Init.fan_in_uniform(4)
        >>> rule.rule, rule.bound, rule.fan_in
        ('uniform', 0.5, 4)
        >>> draw = rule.draw(np.random.default_rng(0), (3, 2))
        >>> draw.shape, draw.dtype.name, bool(np.all(np.abs(draw) <= 0.5))
        ((3, 2), 'float64', True)
        >>> Init("zeros").draw(np.random.default_rng(0), (2,))
        array([0., 0.])
    """

    rule: Literal["zeros", "uniform"]
    bound: float = 0.0
    fan_in: int | None = None

    @classmethod
    def fan_in_uniform(cls, fan_in: int) -> Init:
        """Uniform in ``+-1/sqrt(fan_in)``: torch's ``nn.Linear`` kernel rule."""
        return cls("uniform", fan_in**-0.5, fan_in)

    @classmethod
    def uniform(cls, bound: float) -> Init:
        return cls("uniform", bound)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """A float64 draw (zeros use no randomness)."""
        if self.rule == "zeros":
            return np.zeros(shape)
        return rng.uniform(-self.bound, self.bound, size=shape)


ZEROS = Init("zeros")


@dataclass(frozen=True)
class Param:
    """One learned tensor of a layer: its shape and how it starts.

    A plan states, per parameter, how training starts (``init``: the flow is the identity
    at init) and a non-identity draw for tests (``random_init``). Both
    :func:`flowbridge.init_params` and the generated modules' own initialisers (their
    ``PARAM_INIT`` table) read these; nothing else states an initialisation.

    Attributes:
        shape: the tensor's shape: ``(in, out)`` for a dense kernel, ``(out,)`` for a
            bias, ``(D,)`` for a scaling's ``log_scale``.
        init: the :class:`Init` training starts from (``init_params(init="identity")``
            and the generated modules).
        random_init: the :class:`Init` of a non-identity draw for tests and conformance
            checks (``init_params(init="random")``).

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.layers import plan_flow
        >>> plan = plan_flow(fb.nice(2, num_couplings=2, hidden=(4,)))[0]
        >>> param = plan.params["conditioner.1.kernel"]  # the conditioner's last layer
        >>> param.shape, param.init.rule, param.random_init.rule, param.random_init.fan_in
        ((4, 1), 'zeros', 'uniform', 4)
    """

    shape: tuple[int, ...]
    init: Init
    random_init: Init


@dataclass(frozen=True)
class Field:
    """One attribute of a generated layer class, built from a constructor argument.

    ``kind``: ``"dense"`` (a stack of dense layers from the constructor's ``sizes``:
    ``self.kernels[j]`` of shape ``(sizes[j], sizes[j+1])`` and ``self.biases[j]``,
    neutral names ``conditioner.{j}.kernel`` and ``.bias``), ``"conv"`` (a stack of
    convolutions from ``sizes`` and ``kernel_size``: neutral kernels ``(k, k, in, out)``,
    each backend storing them in its own layout), ``"vector"`` (a learned tensor of the
    layer's event shape, ``self.{name}``), ``"channel"`` (a learned tensor of the
    layer's first event dimension: one entry per channel of an image),
    ``"constant"`` (a float buffer from a constructor list, nested for more than one
    dimension: a checkerboard's row and column parities), ``"index"`` (an integer buffer) or ``"int"`` (a plain Python int). A layer acting on the active
    channels of an image (after a factor-out) has an ``active_shape`` argument, which
    gives its ``"vector"`` and ``"channel"`` fields their shapes. ``"state"`` is a
    ``"channel"`` tensor the layer updates itself (a running average), not trained: a
    buffer in Pyro, a non-trainable variable in TFP.
    """

    kind: str
    name: str
    #: a ``"vector"`` field of a shape other than the event's: the name of the constructor
    #: argument (a list of ints) that gives it (an unconditional spline's raw widths
    #: ``(D, bins)``); ``None`` (the default): the event's shape
    shape: str | None = None


@dataclass(frozen=True)
class Plan:
    """A spec layer resolved against its input event shape.

    A layer type's definition (:func:`definition`) returns one; :func:`plan_flow` makes
    one per layer of a flow. Layers share a generated class exactly when the class's
    emitted text is the same (the code generator behind :func:`flowbridge.generate`
    compares it): the docstring, the fields and both traced bodies, so no hand-kept key
    can let two different layers share a class. Shapes: ``x`` is
    ``(*batch, *event_shape)``, log-dets ``(*batch,)``.

    Attributes:
        class_name: the paper name of the generated class (``"AffineCoupling"``).
        variant: what sets this configuration apart, as ``(short, detailed)`` identifier
            words per aspect (``("Clamp", "ClampM5To3")``); class names are the paper name
            plus the words that tell the flow's configurations apart.
        config: the static configuration, in words, for the docstring.
        doc: the generated class's docstring (its formulas).
        fields (tuple): the generated class's attributes, each built from a constructor
            argument (``flowbridge.layers.Field`` objects, of kind ``"dense"``, ``"conv"``,
            ``"vector"``, ``"channel"``, ``"constant"``, ``"index"``, ``"int"`` or
            ``"state"``).
        args: the constructor's literal arguments: ints and lists of ints
            (``{"sizes": [1, 4, 1], "split": 1}``).
        params: neutral local names (``"conditioner.0.kernel"``, ``"log_scale"``) ->
            :class:`Param`, each parameter's shape and initialisation.
        constant_jacobian: whether the log-det does not depend on the input (an additive
            coupling, a scaling).
        event_shape: the input's event shape, ``(D,)`` or ``(C, H, W)``.
        output_shape: the output's event shape (a squeeze's differs from its input's).
        forward: ``(p, x[, context]) -> (y, log_det)`` over the IR, ``p`` a parameter view
            whose attributes are symbolic (``p.dense_kernel(0)`` stands for
            ``self.kernels[0]`` in every backend).
        inverse: ``(p, y[, context]) -> (x, log_det)``, the log-det of the inverse map
            (``-`` the forward log-det at matching points).
        context: the size of the context vector the layer reads; ``0`` (the default):
            none.
        buffers: constant tensors' shapes, name -> shape (a checkerboard's row and
            column parities); default none.
        domain: the values the input takes: ``"real"`` (the default), or
            ``"unit_interval"`` (data in [0, 1]).
        training_forward: a layer with a training mode (batch normalization): its
            forward in that mode, ``(p, x) -> (y, log_det, effects)``, the effects being
            state updates (``ops.assign``); ``None`` (the default) otherwise.
        whole_tensor: acts on the whole event tensor, channels factored out before it
            included (a factor-out, an identity there): never wrapped to act on the
            active channels only. Default ``False``.
        data_init: a data-dependent initialisation (Glow's ActNorm):
            ``(h, eps) -> {local name: value}`` for the layer's input batch ``h``
            ``(n, *event_shape)``, in float64 NumPy; ``None`` (the default) otherwise.
        tolerances: a conformance tolerance the layer states, dtype name -> figure, where
            :data:`flowbridge.TOLERANCES` cannot be met (a spline's float32 inverse:
            :data:`flowbridge.splines.FLOAT32_TOLERANCE`); :func:`flowbridge.check` gives
            a flow's rows the loosest its layers state. Default none.

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.layers import plan_flow
        >>> plan = plan_flow(fb.nice(2, num_couplings=2, hidden=(4,)))[0]
        >>> plan.class_name, plan.args, plan.event_shape, plan.context
        ('AdditiveCoupling', {'sizes': [1, 4, 1], 'split': 1}, (2,), 0)
        >>> [(field.kind, field.name) for field in plan.fields]
        [('dense', 'sizes'), ('int', 'split')]
    """

    class_name: str  # paper name of the generated class
    variant: tuple[tuple[str, str], ...]  # (short, detailed) words, one pair per aspect
    config: str  # the static configuration, in words, for the docstring
    doc: str  # the class docstring (formulas)
    fields: tuple[Field, ...]
    args: dict[str, Any]  # constructor literals: ints and lists of ints
    params: dict[str, Param]  # neutral local names -> shape and initialisation
    constant_jacobian: bool
    event_shape: tuple[int, ...]  # the input's event shape
    output_shape: tuple[int, ...]  # the output's event shape
    forward: Callable = field(compare=False)  # (p, x[, context]) -> (y, log_det)
    inverse: Callable = field(compare=False)  # (p, y[, context]) -> (x, log_det)
    context: int = 0  # the size of the context vector the layer reads (0: none)
    buffers: dict[str, tuple[int, ...]] = field(default_factory=dict)  # constant tensors' shapes
    domain: str = "real"  # the values it takes: "real", or "unit_interval" (data in [0, 1])
    # a layer with a training mode (batch normalization): its forward in that mode,
    # (p, x) -> (y, log_det, effects), the effects being state updates (ops.assign)
    training_forward: Callable | None = field(default=None, compare=False)
    # acts on the whole event tensor, channels factored out before it included (a
    # factor-out, an identity there): never wrapped to act on the active channels only
    whole_tensor: bool = False
    # a data-dependent initialisation (Glow's ActNorm): (h, eps) -> {local name: value}
    # for the layer's input batch h (n, *event_shape), in float64 NumPy
    data_init: Callable | None = field(default=None, compare=False)
    # a conformance tolerance the layer states, by dtype, looser than flowbridge.TOLERANCES
    # (a spline's float32 inverse); flowbridge.check gives a flow's rows the loosest
    tolerances: dict[str, float] = field(default_factory=dict)


class View:
    """Symbolic ``self.<attr>`` references used while tracing a layer, each with its
    static shape: parameters from ``params``, index buffers and ints from ``args``. A
    name the plan does not declare is an AttributeError at trace time."""

    def __init__(
        self,
        params: dict[str, Param],
        args: dict[str, Any],
        dense: str = "conditioner.",
        buffers: dict[str, tuple[int, ...]] | None = None,
    ):
        taken = sorted({"dense_kernel", "dense_bias"} & {*params, *args, *(buffers or {})})
        if taken:
            raise AttributeError(f"a layer's parameter, buffer or argument may not be named "
                                 f"{taken[0]!r}: View.{taken[0]}(j) is the j-th dense "
                                 f"layer's")  # fmt: skip
        self._params, self._args, self._dense = params, args, dense
        self._buffers = buffers or {}

    def __getattr__(self, name: str) -> Value:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._params:
            return source(f"self.{name}", self._params[name].shape)
        if name in self._buffers:  # a constant: what only it feeds is built once
            value = source(f"self.{name}", self._buffers[name])
            value.node.attrs["constant"] = True
            return value
        if isinstance(self._args.get(name), (int, list)):
            return source(f"self.{name}", value=self._args[name])
        raise AttributeError(f"the layer declares no parameter or argument {name!r}")

    def dense_kernel(self, j: int) -> Value:
        """The kernel of the conditioner's ``j``-th dense (or convolution) layer."""
        return source(f"self.kernels[{j}]", self._declared(f"{self._dense}{j}.kernel").shape)

    def dense_bias(self, j: int) -> Value:
        """The bias of the conditioner's ``j``-th dense (or convolution) layer."""
        return source(f"self.biases[{j}]", self._declared(f"{self._dense}{j}.bias").shape)

    def _declared(self, name: str) -> Param:
        if name not in self._params:
            raise AttributeError(f"the layer declares no parameter {name!r}")
        return self._params[name]


# ------------------------------------------------------------------ layer types
def _tag(model: type) -> str:
    """A layer model's tag, its ``type`` field's one value (``"affine_coupling"``)."""
    return typing.get_args(model.model_fields["type"].annotation)[0]


@dataclass(frozen=True)
class LayerType:
    """One layer type, registered once: its spec model and its neutral definition.

    The spec model (in ``flowbridge.spec``) holds the tag, the fields, the rules it states
    against the event and its weight count; the neutral definition is the ``plan``
    function that makes its :class:`Plan` (shapes, parameters and their initialisation,
    forward and inverse over the IR, and hooks: a training mode, acting on the whole
    tensor, a data-dependent initialisation). Everything else (the ``Layer`` union and the
    schema's tags, the registry the code generator plans from, ``check``'s training rows,
    ``actnorm_init``) derives from these registrations and the plans. :func:`definition`
    registers them in ``flowbridge.layers.LAYER_TYPES`` (tag -> :class:`LayerType`, in
    registration order); the ``tag`` property is the model's ``type`` value.

    Attributes:
        model: the spec layer model, a pydantic model class whose ``type`` field has
            one value, the tag (:class:`flowbridge.AffineCoupling`, say).
        plan: the definition, ``plan(layer, event_shape, context) -> Plan``: the spec
            layer, its input event shape and the flow's context size (0: none; a layer
            that reads no context ignores it).

    Example:
        >>> from flowbridge.layers import LAYER_TYPES
        >>> kind = LAYER_TYPES["affine_coupling"]
        >>> kind.tag, kind.model.__name__, kind.plan.__name__
        ('affine_coupling', 'AffineCoupling', 'plan_coupling')
        >>> list(LAYER_TYPES)[:3]
        ['additive_coupling', 'affine_coupling', 'spline_coupling']
    """

    model: type
    plan: Callable[[Any, tuple[int, ...], int], Plan]

    @property
    def tag(self) -> str:
        return _tag(self.model)


#: tag -> :class:`LayerType`, in the order the definitions register.
LAYER_TYPES: dict[str, LayerType] = {}


def definition(*models: type) -> Callable:
    """Register the decorated plan function as the definition of each of ``models``.

    Adding a layer type is one such definition (plus its spec model); no backend
    changes. The decorator adds a :class:`LayerType` per model to
    ``flowbridge.layers.LAYER_TYPES``, from which the code generator's registry derives.
    A spec layer model left without a definition is refused when ``flowbridge.layers`` is
    imported (an ``ImportError`` naming it).

    Args:
        *models: the spec layer model classes the plan function defines (pydantic models
            with a one-value ``type`` field, as :class:`flowbridge.Scaling`); one function
            may define several (NICE's and RealNVP's couplings share one).

    Returns:
        ``Callable``: the decorator. It registers the plan function, which takes
        ``(layer, event_shape, context=0)`` and returns a :class:`Plan`, and returns it
        unchanged.

    Raises:
        ValueError: on decorating, a model's tag already has a definition.

    Example:
        >>> from flowbridge import Scaling
        >>> from flowbridge.layers import LAYER_TYPES, definition
        >>> LAYER_TYPES["scaling"].plan.__name__
        'plan_scaling'
        >>> definition(Scaling)(lambda layer, event_shape, context=0: None)
        Traceback (most recent call last):
        ...
        ValueError: layer type 'scaling' is defined twice
    """

    def register(plan: Callable) -> Callable:
        for model in models:
            kind = LayerType(model, plan)
            if kind.tag in LAYER_TYPES:
                raise ValueError(f"layer type {kind.tag!r} is defined twice")
            LAYER_TYPES[kind.tag] = kind
        return plan

    return register


# --------------------------------------------------------------- coupling parts
class Partition:
    """Which event entries a coupling passes through (``x_a``) and which it transforms
    (``x_b``). Vector events: a contiguous split of the last axis when the mask allows
    one (no gather), else index buffers. Images: a channel mask splits the channel axis;
    a checkerboard is *masked*: ``x_a = b * x`` (the transformed entries zeroed, ``b``
    the mask), ``x_b = x``, and the map's shift and log-scale are multiplied by
    ``1 - b`` (:meth:`restrict`), so the passed entries come out unchanged (RealNVP's
    own formulation)."""

    legend = "x_a: the entries the mask passes through; x_b: the others"
    masked = False
    axis = -1  # the axis the split runs along, and the conditioner's parameters stack on
    buffers: dict[str, tuple[int, ...]] = {}  # a masked partition's mask

    def __init__(self, mask: Any, event_shape: tuple[int, ...]):
        if len(event_shape) == 3:
            self._image(mask, event_shape)
            return
        if len(event_shape) != 1:
            raise ValueError(f"mask partitions take (D,) or (C, H, W) events, got {event_shape}")
        (dim,) = event_shape
        passed, trans = S.mask_indices(mask, dim)
        self.n_pass, self.n_trans = len(passed), len(trans)
        if passed == list(range(len(passed))):
            self.mode, self.args = "first", {"split": len(passed)}
        elif passed == list(range(dim - len(passed), dim)):
            self.mode, self.args = "last", {"split": dim - len(passed)}
        else:
            merge = sorted(range(dim), key=(passed + trans).__getitem__)
            self.mode = "gather"
            self.args = {"pass_idx": passed, "trans_idx": trans, "merge_idx": merge}
        kind = "int" if self.mode != "gather" else "index"
        self.fields = tuple(Field(kind, name) for name in self.args)
        if self.mode == "gather":
            self.words = ("Gather", "Gather")
            self.text = f"{mask.kind} mask, entries gathered by index"
        else:
            word = "SplitFirst" if self.mode == "first" else "SplitLast"
            self.words, self.text = (word, word), (
                f"the {self.mode} entries pass through (a split, no gather)")

    def _image(self, mask: Any, event_shape: tuple[int, ...]) -> None:
        c, h, w = event_shape
        self.axis = -3  # channels
        if mask.kind == "checkerboard":
            self.masked, self.mode = True, "masked"
            self.n_pass = self.n_trans = c  # the conditioner reads and writes every channel
            # the mask b is traced from two constant vectors, row and column parities:
            # b[h, w] = 1 where (h + parity) % 2 == w % 2, that is (h + w) % 2 == parity;
            # both are constructor arguments, so both parities share one class
            parity = 0 if mask.parity == "even" else 1
            self.args = {"rows": [[float((i + parity) % 2)] for i in range(h)],
                         "cols": [float(j % 2) for j in range(w)]}  # fmt: skip
            self.fields = (Field("constant", "rows"), Field("constant", "cols"))
            self.buffers = {"rows": (h, 1), "cols": (w,)}
            self.words = ("Checkerboard", "Checkerboard")
            self.text = ("checkerboard mask: entries with (h + w) % 2 == parity pass through "
                         "(rows and cols, constructor arguments, hold the parities)")  # fmt: skip
            self.legend = ("x_a = b * x: the entries the checkerboard b passes, the others "
                           "zeroed; x_b = x; shift and log_scale are zero where b is 1")  # fmt: skip
            return
        self.n_pass = c // 2
        self.n_trans = c - self.n_pass
        self.mode = "first" if mask.part == "first" else "last"
        self.args = {"split": self.n_pass if self.mode == "first" else self.n_trans}
        self.fields = (Field("int", "split"),)
        word = f"Channel{mask.part.capitalize()}"
        self.words, self.text = (word, word), (
            f"channel mask: the {mask.part} {self.n_pass} of {c} channels pass through")
        self.legend = "x_a: the channels the mask passes through; x_b: the others"

    def split(self, p: View, x: Value, var: str) -> tuple[Value, Value]:
        """``(passed, transformed)`` parts of ``x``, named ``{var}_a`` and ``{var}_b``."""
        axis = self.axis
        if self.masked:
            return ops.name(x * self._masks(p)[0], f"{var}_a"), x
        if self.mode == "first":
            a = ops.slice(x, axis=axis, start=None, stop=p.split)
            b = ops.slice(x, axis=axis, start=p.split, stop=None)
        elif self.mode == "last":
            b = ops.slice(x, axis=axis, start=None, stop=p.split)
            a = ops.slice(x, axis=axis, start=p.split, stop=None)
        else:
            a, b = ops.take(x, p.pass_idx, axis=axis), ops.take(x, p.trans_idx, axis=axis)
        return ops.name(a, f"{var}_a"), ops.name(b, f"{var}_b")

    def merge(self, p: View, a: Value, b: Value) -> Value:
        """Inverse of :meth:`split`."""
        if self.masked:
            return b  # the passed entries of b are unchanged (see restrict)
        if self.mode == "first":
            return ops.concat(a, b, axis=self.axis)
        if self.mode == "last":
            return ops.concat(b, a, axis=self.axis)
        return ops.take(ops.concat(a, b, axis=self.axis), p.merge_idx, axis=self.axis)

    def restrict(self, p: View, value: Value, name: str) -> Value:
        """``value`` (a shift or log-scale over x_b) zeroed at the passed entries of a
        masked partition, named ``name``; the value itself for a split."""
        if not self.masked:
            return value
        return ops.name(value * self._masks(p)[1], name)

    def _masks(self, p: View) -> tuple[Value, Value]:
        """A masked partition's ``(b, 1 - b)``, each ``(H, W)``: traced once per body
        (kept on that body's view) from the row and column parities."""
        if "_masks" not in p.__dict__:
            diff = ops.name(p.rows - p.cols, "parity_diff")  # 0 where the parities agree
            trans = ops.name(diff * diff, "trans_mask")
            p.__dict__["_masks"] = (ops.name(1.0 - trans, "mask"), trans)
        return p.__dict__["_masks"]


class MLP:
    """The conditioner MLP ``m``: dense layers ``n_in -> *hidden -> n_out`` with the
    spec's activation between them. Kernels ``(in, out)`` start uniform in
    ``+-1/sqrt(fan_in)`` (torch's ``nn.Linear`` rule), biases at zero, and the last
    layer at zero so the coupling starts as the identity (``zero_last=False``: uniform
    too, for the context embedding). Parameters are ``{prefix}{j}.kernel``/``.bias``."""

    def __init__(
        self,
        cond: S.Conditioner,
        n_in: int,
        n_out: int,
        context: int = 0,
        *,
        prefix: str = "conditioner.",
        zero_last: bool = True,
    ):
        self.cond, self.context, self.prefix = cond, context, prefix
        self.sizes = [n_in + context, *cond.hidden, n_out]
        self.legend = "m: the conditioner MLP" + (", reading [x_a | context]" if context else "")
        self.fields = (Field("dense", "sizes"),)
        self.args = {"sizes": self.sizes}
        self.params: dict[str, Param] = {}
        last = len(self.sizes) - 2 if zero_last else -1
        for j, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            kernel = Init.fan_in_uniform(a)
            self.params[f"{prefix}{j}.kernel"] = Param((a, b), ZEROS if j == last else kernel,
                                                       kernel)  # fmt: skip
            self.params[f"{prefix}{j}.bias"] = Param((b,), ZEROS, Init.uniform(0.1))
        act = "".join(w.capitalize() for w in cond.activation.split("_"))
        leaky = cond.activation == "leaky_relu"
        depth = len(cond.hidden)
        self.words = [(f"Depth{depth}", f"Depth{depth}"),
                      (act, act + (_word(cond.negative_slope) if leaky else ""))]  # fmt: skip
        slope = f" (negative slope {cond.negative_slope!r})" if leaky else ""
        self.text = (f"conditioner with {depth} hidden layer{'s' * (depth != 1)}, "
                     f"{cond.activation}{slope}")  # fmt: skip
        if context:
            self.text += f", reading a context of {context} after x_a"

    def __call__(self, p: View, h: Value, context: Value | None = None) -> Value:
        """``m(h)``, or ``m([h | context])`` with the context broadcast to h's batch."""
        if self.context:
            wide = ops.broadcast_batch(context, h, event_ndims=len(h.shape))
            h = ops.name(ops.concat(h, ops.name(wide, "context_b"), axis=-1), "h_in")
        n = len(self.sizes) - 1
        for j in range(n):
            h = ops.linear(h, p.dense_kernel(j), p.dense_bias(j))
            h = ops.name(h, "h" if j < n - 1 else "out")
            if j < n - 1:
                h = ops.name(_activate(h, self.cond), "h")
        return h


class ResNet:
    """RealNVP's convolutional residual conditioner for image couplings (see
    :class:`flowbridge.spec.ResNetConditioner`): convolutions ``conditioner.{j}``,
    kernels ``(k, k, in, out)`` started as torch's ``nn.Conv2d`` does (uniform in
    ``+-1/sqrt(in * k * k)``), biases at zero, the last convolution at zero."""

    legend = "m: the residual conditioner network"

    def __init__(self, cond: S.ResNetConditioner, n_in: int, n_out: int, context: int = 0):
        self.cond = cond
        self.sizes = cond.sizes(n_in, n_out)
        k = cond.kernel_size
        self.fields = (Field("conv", "sizes"),)
        self.args = {"sizes": self.sizes, "kernel_size": k}
        self.params: dict[str, Param] = {}
        last = len(self.sizes) - 2
        for j, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            kernel = Init.fan_in_uniform(a * k * k)
            self.params[f"conditioner.{j}.kernel"] = Param((k, k, a, b), ZEROS if j == last else kernel,
                                                           kernel)  # fmt: skip
            self.params[f"conditioner.{j}.bias"] = Param((b,), ZEROS, Init.uniform(0.1))
        act = "".join(w.capitalize() for w in cond.activation.split("_"))
        leaky = cond.activation == "leaky_relu"
        self.words = [(f"Blocks{cond.blocks}", f"Blocks{cond.blocks}"),
                      (f"Channels{cond.channels}", f"Channels{cond.channels}K{k}"),
                      (act, act + (_word(cond.negative_slope) if leaky else ""))]  # fmt: skip
        slope = f" (negative slope {cond.negative_slope!r})" if leaky else ""
        self.text = (f"resnet conditioner: {cond.blocks} residual block"
                     f"{'s' * (cond.blocks != 1)} of {cond.channels} channels, {k}x{k} "
                     f"convolutions, {cond.activation}{slope}")  # fmt: skip

    def __call__(self, p: View, h: Value, context: Value | None = None) -> Value:
        """``conv_out(act(blocks(conv_in(h))))``, each block ``r + conv(act(conv(act(r))))``."""
        n = len(self.sizes) - 1
        h = ops.name(ops.conv2d(h, p.dense_kernel(0), p.dense_bias(0)), "h")
        for block in range(self.cond.blocks):
            r = h
            for j in (2 * block + 1, 2 * block + 2):
                r = ops.name(ops.conv2d(ops.name(_activate(r, self.cond), "r"), p.dense_kernel(j),
                                        p.dense_bias(j)), "r")  # fmt: skip
            h = ops.name(h + r, "h")
        return ops.name(ops.conv2d(ops.name(_activate(h, self.cond), "h"), p.dense_kernel(n - 1),
                                   p.dense_bias(n - 1)), "out")  # fmt: skip


def _activate(h: Value, cond: S.Conditioner | S.ResNetConditioner) -> Value:
    if cond.activation == "leaky_relu":
        return ops.leaky_relu(h, negative_slope=cond.negative_slope)
    if cond.activation == "gelu":  # exact GELU, x * Phi(x) (torch's default, TF's approximate=False)
        erf = ops.name(ops.erf(ops.name(h * 0.7071067811865476, "h_over_sqrt2")), "erf_h")
        return ops.name(0.5 * h, "half_h") * ops.name(1.0 + erf, "one_plus_erf_h")
    return getattr(ops, cond.activation)(h)


class Shift:
    """NICE's additive map: ``y_b = x_b + shift``, log-det 0 (one conditioner output
    per transformed entry)."""

    class_name, per_entry, constant_jacobian = "AdditiveCoupling", 1, True
    tolerances: dict[str, float] = {}

    @staticmethod
    def passed_parts() -> None:  # the passed entries pass unchanged
        return None
    fields: tuple[Field, ...] = ()
    words: tuple[tuple[str, str], ...] = ()
    text = ""
    doc = """NICE additive coupling (Dinh et al. 2015, arXiv:1410.8516).

    shift = m(x_a)
    forward:  y_a = x_a,  y_b = x_b + shift,   log|det J| = 0
    inverse:  x_a = y_a,  x_b = y_b - shift,   log|det J^-1| = 0"""

    args: dict[str, Any] = {}

    def __init__(self, part: Partition):
        self.part = part

    def forward(self, p: View, out: Value, x_b: Value, x: Value):
        y_b = ops.name(x_b + self.part.restrict(p, ops.name(out, "shift"), "shift"), "y_b")
        return y_b, ops.batch_zeros(x, event_ndims=len(x.shape))

    def inverse(self, p: View, out: Value, y_b: Value, y: Value):
        x_b = ops.name(y_b - self.part.restrict(p, ops.name(out, "shift"), "shift"), "x_b")
        return x_b, ops.batch_zeros(y, event_ndims=len(y.shape))


_SCALE_FORMULA = {
    "exp": "s",
    "clamp": "clamp(s, low, high)\n    (the clamp's gradient is passed straight through)",
    "soft_clamp": "bound * tanh(s / bound)",
    "sigmoid": "log(sigmoid(s + offset)) (Glow)",
}


class Affine:
    """RealNVP's affine map: ``y_b = x_b * scale + shift`` with ``scale`` from the raw
    output ``s`` under the spec's scale map; log-det ``sum(log_scale)`` (two conditioner
    outputs per transformed entry, ordered ``[shift | s]``)."""

    class_name, per_entry, constant_jacobian = "AffineCoupling", 2, False
    tolerances: dict[str, float] = {}

    @staticmethod
    def passed_parts() -> None:  # the passed entries pass unchanged
        return None
    fields = (Field("int", "n_trans"),)
    doc = """RealNVP affine coupling (Dinh et al. 2017, arXiv:1605.08803).

    [shift, s] = m(x_a);  scale = exp(log_scale),  log_scale = {formula}
    forward:  y_a = x_a,  y_b = x_b * scale + shift,   log|det J| = sum(log_scale)
    inverse:  x_a = y_a,  x_b = (y_b - shift) * exp(-log_scale),
              log|det J^-1| = -sum(log_scale)"""

    def __init__(self, part: Partition, scale: Any):
        self.scale, self.part = scale, part
        self.args = {"n_trans": part.n_trans}
        self.doc = Affine.doc.format(formula=_SCALE_FORMULA[scale.kind])
        word = "".join(w.capitalize() for w in scale.kind.split("_"))
        if scale.kind == "clamp":
            detail = f"Clamp{_word(scale.low)}To{_word(scale.high)}"
            self.text = f"scale map clamp to [{scale.low!r}, {scale.high!r}]"
        elif scale.kind == "soft_clamp":
            detail, self.text = f"SoftClamp{_word(scale.bound)}", (
                f"scale map soft_clamp, bound {scale.bound!r}")
        elif scale.kind == "sigmoid":
            detail, self.text = f"Sigmoid{_word(scale.offset)}", (
                f"scale map sigmoid, offset {scale.offset!r}")
        else:
            detail, self.text = word, "scale map exp"
        self.words = ((word, detail),)

    def _unpack(self, p: View, out: Value) -> tuple[Value, Value, Value]:
        """``(shift, log_scale, scale)`` from the conditioner's output (stacked along the
        partition's axis: the last for vectors, channels for images); a masked
        partition's are zero at the passed entries, so its scale is 1 there."""
        axis, part = self.part.axis, self.part
        shift = ops.name(ops.slice(out, axis=axis, start=None, stop=p.n_trans), "shift")
        raw = ops.name(ops.slice(out, axis=axis, start=p.n_trans, stop=None), "s")
        log_scale, scale = self._log_scale(raw)
        if not part.masked:
            return shift, log_scale, scale
        shift = part.restrict(p, ops.name(shift, "shift_all"), "shift")
        log_scale = part.restrict(p, ops.name(log_scale, "log_scale_all"), "log_scale")
        return shift, log_scale, ops.name(ops.exp(log_scale), "scale")

    def _log_scale(self, raw: Value) -> tuple[Value, Value]:
        """``(log_scale, scale)`` of the raw output under the scale map."""
        scale = self.scale
        if scale.kind == "sigmoid":  # Glow
            z = ops.name(raw + scale.offset, "s_offset")
            return ops.name(ops.log_sigmoid(z), "log_scale"), ops.name(ops.sigmoid(z), "scale")
        if scale.kind == "exp":
            log_scale = raw
        elif scale.kind == "clamp":  # Pyro's clamp_preserve_gradients
            log_scale = ops.clamp_st(raw, low=scale.low, high=scale.high)
        else:  # soft clamp c * tanh(s / c)
            tanh = ops.name(ops.tanh(ops.name(raw * (1.0 / scale.bound), "s_over_bound")), "tanh_s")
            log_scale = scale.bound * tanh
        log_scale = ops.name(log_scale, "log_scale")
        return log_scale, ops.name(ops.exp(log_scale), "scale")

    # an unconditional elementwise affine map: shift and s are learned vectors
    def learned(self, dim: int) -> tuple[tuple[Field, ...], dict[str, Any], dict[str, Param]]:
        """``(fields, args, params)`` of the learned ``shift`` and ``s`` of ``dim`` entries."""
        learned = Param((dim,), ZEROS, Init.uniform(0.3))
        return (Field("vector", "shift"), Field("vector", "s")), {}, {"shift": learned,
                                                                      "s": learned}  # fmt: skip

    def forward_learned(self, p: View, x: Value):
        log_scale, scale = self._log_scale(p.s)
        total = ops.name(ops.sum_all(log_scale), "sum_log_scale")
        y = ops.name(ops.name(x * scale, "x_scaled") + p.shift, "y")
        return y, ops.batch_fill(total, x, event_ndims=1)

    def inverse_learned(self, p: View, y: Value):
        log_scale, _ = self._log_scale(p.s)
        inv_scale = ops.name(ops.exp(ops.name(-log_scale, "neg_log_scale")), "inv_scale")
        total = ops.name(ops.sum_all(log_scale), "sum_log_scale")
        x = ops.name(ops.name(y - p.shift, "y_unshifted") * inv_scale, "x")
        return x, ops.batch_fill(ops.name(-total, "neg_sum_log_scale"), y, event_ndims=1)

    def forward(self, p: View, out: Value, x_b: Value, x: Value):
        shift, log_scale, scale = self._unpack(p, out)
        y_b = ops.name(ops.name(x_b * scale, "x_b_scaled") + shift, "y_b")
        return y_b, ops.sum_event(log_scale, event_ndims=len(x.shape))

    def inverse(self, p: View, out: Value, y_b: Value, y: Value):
        shift, log_scale, _ = self._unpack(p, out)
        unshifted = ops.name(y_b - shift, "y_b_unshifted")
        inv_scale = ops.name(ops.exp(ops.name(-log_scale, "neg_log_scale")), "inv_scale")
        x_b = ops.name(unshifted * inv_scale, "x_b")
        log_det = ops.name(ops.sum_event(log_scale, event_ndims=len(y.shape)), "sum_log_scale")
        return x_b, -log_det


def _wrap(text: str) -> str:
    """A docstring paragraph, wrapped to the code's width."""
    return textwrap.fill(text, 95, subsequent_indent="    ")


def _configuration(text: str) -> str:
    """The docstring's "Configuration: ..." paragraph."""
    return _wrap(f"Configuration: {text}.")


def _word(value: float) -> str:
    """A number as identifier text: -5.0 -> M5, 0.25 -> 0p25, 1e-05 -> 1em05."""
    text = repr(float(value)).removesuffix(".0").replace("e+", "e").replace("e-", "em")
    return text.replace("-", "M").replace(".", "p")


class SplineMap:
    """The neural spline map: ``y_b = spline(x_b)`` per transformed entry, its raw
    parameters from the conditioner (``3K - 1`` per entry, parameter-major: see
    :class:`flowbridge.RationalQuadraticSpline`); log-det the sum of the spline's
    log-derivatives. Its math is :func:`flowbridge.splines.spline`."""

    class_name, constant_jacobian = "SplineCoupling", False
    tolerances = {"float32": splines.FLOAT32_TOLERANCE}
    fields: tuple[Field, ...] = ()
    args: dict[str, Any] = {}

    def __init__(self, part: Any, spline: Any, transform_passed: bool = False):
        self.part, self.spline, self.transform_passed = part, spline, transform_passed
        self.per_entry = spline.per_entry
        linear = spline.kind == "rational_linear"
        self.formula = splines.LINEAR_DOC if linear else splines.DOC
        self.doc = f"""Neural spline coupling (Durkan et al. 2019, arXiv:1906.04032).

    raw = m(x_a);  y_a = x_a,  y_b = spline(x_b; raw),  log|det J| = sum(log spline'(x_b))
    inverse:  x_b = spline^-1(y_b; raw),  log|det J^-1| = -sum(log spline'(x_b))
    {self.formula}"""
        order = f"Linear{_word(spline.min_lambda)}" if linear else ""
        detail = (f"{order}Bins{spline.bins}B{_word(spline.bound)}W{_word(spline.min_bin_width)}"
                  f"H{_word(spline.min_bin_height)}D{_word(spline.min_derivative)}"
                  f"Edge{spline.edge_derivative.capitalize()}Eps{_word(spline.eps)}")  # fmt: skip
        self.words = ((f"{'Linear' if linear else ''}Bins{spline.bins}", detail),)
        edge = "1" if spline.edge_derivative == "one" else "1 - min_derivative (Pyro's)"
        kind = f"rational-linear (min_lambda {spline.min_lambda!r}), " if linear else ""
        self.text = (f"{kind}{spline.bins} bins on [-{spline.bound!r}, {spline.bound!r}], minimum "
                     f"bin width {spline.min_bin_width!r}, height {spline.min_bin_height!r}, "
                     f"derivative {spline.min_derivative!r}, edge derivative {edge}, bin "
                     f"search eps {spline.eps!r}; "
                     + splines.layout(part.n_trans, spline))  # fmt: skip

    def _apply(self, raw: tuple[Value, ...], v: Value, whole: Value, inverse: bool,
               p: View | None = None):  # fmt: skip
        """The spline of ``v`` and the log-det over ``whole``'s event; a masked (checkerboard)
        partition's passed entries kept as they are (``v + (1 - b) * (spline(v) - v)``,
        their log-derivatives zeroed)."""
        out, log_deriv = splines.spline(v, raw, self.spline, inverse)
        if p is not None and self.part.masked:
            out = ops.name(v + self.part.restrict(p, ops.name(out - v, "spline_step"),
                                                  "spline_step_b"), "x_b" if inverse else "y_b")
            log_deriv = self.part.restrict(p, log_deriv, "log_derivative_b")
        log_det = ops.name(ops.sum_event(log_deriv, event_ndims=len(whole.shape)), "log_det_b")
        return out, log_det

    def _raw(self, out: Value) -> tuple[Value, ...]:
        return splines.unpack(out, self.part.n_trans, self.spline, self.part.axis)

    def forward(self, p: View, out: Value, x_b: Value, x: Value):
        return self._apply(self._raw(out), x_b, x, False, p)

    def inverse(self, p: View, out: Value, y_b: Value, y: Value):
        return self._apply(self._raw(out), y_b, y, True, p)

    # an unconditional elementwise spline: the raw parameters are learned tensors
    def learned(self, dim: int, prefix: str = "") -> tuple[tuple[Field, ...], dict[str, Any],
                                                          dict[str, Param]]:  # fmt: skip
        """``(fields, args, params)`` of the learned raw parameters of ``dim`` entries, each
        name starting with ``prefix``."""
        shapes = splines.raw_shapes(dim, self.spline)
        k = self.spline.bins
        args = {f"{prefix}bins_shape": [dim, k], f"{prefix}inner_shape": [dim, k - 1]}
        fields = tuple(Field("vector", f"{prefix}{name}", f"{prefix}inner_shape"
                             if name == "derivatives" else f"{prefix}bins_shape")
                       for name in shapes)  # fmt: skip
        params = {f"{prefix}{name}": Param(shape, ZEROS, Init.uniform(1.0))
                  for name, shape in shapes.items()}  # fmt: skip
        return fields, args, params

    def _learned_raw(self, p: View, prefix: str = "") -> tuple[Value, ...]:
        names = splines.raw_shapes(1, self.spline)
        return tuple(getattr(p, f"{prefix}{name}") for name in names)

    def forward_learned(self, p: View, x: Value):
        return self._apply(self._learned_raw(p), x, x, False)

    def inverse_learned(self, p: View, y: Value):
        return self._apply(self._learned_raw(p), y, y, True)

    # Pyro's identity=False: the passed entries through a learned spline of their own
    def passed_parts(self) -> tuple[tuple[Field, ...], dict[str, Any], dict[str, Param]] | None:
        """``(fields, args, params)`` of the passed entries' own spline, or ``None``."""
        return self.learned(self.part.n_pass, "a_") if self.transform_passed else None

    def passed(self, p: View, v: Value, whole: Value, inverse: bool):
        """The passed entries' own spline (``inverse``: its inverse) and its log-det."""
        out, log_deriv = splines.spline(v, self._learned_raw(p, "a_"), self.spline,
                                        inverse, "x_a_spline" if inverse else "y_a")  # fmt: skip
        return out, ops.name(ops.sum_event(log_deriv, event_ndims=len(whole.shape)), "log_det_a")


def _shift_map(part: Any, layer: Any) -> Shift:
    return Shift(part)


def _affine_map(part: Any, layer: Any) -> Affine:
    return Affine(part, layer.scale)


def _spline_map(part: Any, layer: Any) -> SplineMap:
    return SplineMap(part, layer.spline, getattr(layer, "passed_spline", False))


#: The elementwise maps, by the layer type that applies them: tag -> ``make(partition,
#: layer)``. A coupling (the partition its mask's), an elementwise layer (every entry)
#: and, later, an autoregressive layer all draw their map from here: a new map is one
#: class (``forward(p, raw, v, whole)``, ``inverse``, ``per_entry`` raw outputs per entry)
#: and its entries.
MAPS: dict[str, Callable[[Any, Any], Any]] = {
    "additive_coupling": _shift_map,
    "affine_coupling": _affine_map,
    "spline_coupling": _spline_map,
    "elementwise_affine": _affine_map,
    "elementwise_spline": _spline_map,
}


# ------------------------------------------------------------------ coupling layers
@definition(S.AdditiveCoupling, S.AffineCoupling, S.SplineCoupling)
def plan_coupling(
    layer: S.AdditiveCoupling | S.AffineCoupling | S.SplineCoupling, shape: tuple[int, ...],
    context: int = 0,
) -> Plan:
    """A coupling from its three parts: the mask's partition, the MLP conditioner (which
    also reads the context when the flow has one) and the elementwise map from
    :data:`MAPS` (:class:`Shift` for NICE, :class:`Affine` for RealNVP, :class:`SplineMap`
    for a neural spline flow)."""
    part = Partition(layer.mask, shape)
    emap = MAPS[layer.type](part, layer)
    net = ResNet if isinstance(layer.conditioner, S.ResNetConditioner) else MLP
    cond = net(layer.conditioner, part.n_pass, emap.per_entry * part.n_trans, context)

    def conditioner(p: View, a: Value, c: Value | None) -> Value:
        """m(x_a) (with the context: m([x_a | c])), one method every direction calls;
        its parameter is x_a, which the inverse passes as y_a (the same entries)."""
        given = (a,) if c is None else (a, c)
        params = ("x_a",) if c is None else ("x_a", "context")
        return ir.call("conditioner", lambda *v: cond(p, *v), params, *given)

    passed = emap.passed_parts()  # the passed entries' own map (Pyro's identity=False)

    def forward(p: View, x: Value, c: Value | None = None):
        x_a, x_b = part.split(p, x, "x")
        y_b, log_det = emap.forward(p, conditioner(p, x_a, c), x_b, x)
        if passed is None:
            return part.merge(p, x_a, y_b), log_det
        y_a, log_det_a = emap.passed(p, x_a, x, False)
        return part.merge(p, y_a, y_b), ops.name(log_det + log_det_a, "log_det")

    def inverse(p: View, y: Value, c: Value | None = None):
        y_a, y_b = part.split(p, y, "y")
        x_a, log_det_a = (y_a, None) if passed is None else emap.passed(p, y_a, y, True)
        x_b, log_det = emap.inverse(p, conditioner(p, x_a, c), y_b, y)
        if log_det_a is not None:
            log_det = ops.name(log_det + log_det_a, "log_det")
        return part.merge(p, x_a, x_b), log_det

    config = "; ".join(t for t in (part.text, cond.text, emap.text) if t)
    return Plan(
        class_name=emap.class_name,
        variant=(part.words, *cond.words, *emap.words),
        config=config,
        doc=f"{emap.doc}\n    {_wrap(f'{part.legend}; {cond.legend}.')}\n    {_configuration(config)}",
        fields=(*cond.fields, *emap.fields, *part.fields, *(passed[0] if passed else ())),
        args={**cond.args, **emap.args, **part.args, **(passed[1] if passed else {})},
        params={**cond.params, **(passed[2] if passed else {})},
        constant_jacobian=emap.constant_jacobian,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        context=context,
        buffers=part.buffers,
        tolerances=emap.tolerances,
    )


class _Whole:
    """The partition of an elementwise layer: every entry transformed, none passed."""

    axis, masked = -1, False

    def __init__(self, dim: int):
        self.n_pass, self.n_trans = 0, dim

    def restrict(self, p: View, value: Value, name: str) -> Value:
        return value


_ELEMENTWISE_AFFINE_DOC = """Elementwise affine map of every entry (a conditional Gaussian on a
    one-dimensional event; flowbridge's layer where no coupling can split the entries).

    {given}
    scale = exp(log_scale),  log_scale = {formula}
    forward:  y = x * scale + shift,   log|det J| = sum(log_scale)
    inverse:  x = (y - shift) * exp(-log_scale),  log|det J^-1| = -sum(log_scale)"""

_ELEMENTWISE_SPLINE_DOC = """Elementwise rational-quadratic spline of every entry (Pyro's Spline and
    ConditionalSpline).

    {given}
    forward:  y = spline(x),  log|det J| = sum(log spline'(x))
    inverse:  x = spline^-1(y),  log|det J^-1| = -sum(log spline'(x))
    {spline}"""


@definition(S.ElementwiseAffine, S.ElementwiseSpline)
def plan_elementwise(layer: S.ElementwiseAffine | S.ElementwiseSpline, shape: tuple[int, ...],
                     context: int = 0) -> Plan:  # fmt: skip
    """An elementwise map of every entry, drawn from :data:`MAPS`. With a context, its raw
    parameters are ``m(context)`` (the MLP reads the context alone, its last layer
    starting at zero); without one, they are learned tensors starting at zero (an affine
    map's ``shift`` and ``s``, test draws uniform in +-0.3; a spline's ``widths``,
    ``heights``, ``derivatives``, test draws in +-1). Either way the map starts as the
    identity (under the exp, clamp and soft-clamp scale maps for an affine one)."""
    (dim,) = shape
    emap = MAPS[layer.type](_Whole(dim), layer)
    spline = layer.type == "elementwise_spline"
    if context:
        cond = MLP(layer.conditioner, context, emap.per_entry * dim)

        def conditioner(p: View, like: Value, c: Value) -> Value:
            wide = ops.name(ops.broadcast_batch(c, like, event_ndims=1), "context_b")
            return ir.call("conditioner", lambda v: cond(p, v), ("context",), wide)

        def forward(p: View, x: Value, c: Value):
            return emap.forward(p, conditioner(p, x, c), x, x)

        def inverse(p: View, y: Value, c: Value):
            return emap.inverse(p, conditioner(p, y, c), y, y)

        given = ("raw = m(context): the conditioner reads the context alone" if spline else
                 "[shift, s] = m(context): the conditioner reads the context alone")  # fmt: skip
        legend = "m: the conditioner MLP, reading the context"
        parts = dict(fields=(*cond.fields, *emap.fields), args={**cond.args, **emap.args},
                     params=cond.params, variant=("Conditional", *cond.words, *emap.words))  # fmt: skip
        config = f"{cond.text}; {emap.text}"
    else:
        forward, inverse = emap.forward_learned, emap.inverse_learned
        fields, args, params = emap.learned(dim)
        given = ("widths, heights (D, K), derivatives (D, K - 1) (and lambdas (D, K)): the "
                 "learned raw parameters" if spline else
                 "shift, s: learned vectors of the event size")  # fmt: skip
        legend = "the flow has no context, so no conditioner: the map's raw parameters are the weights"
        parts = dict(fields=fields, args=args, params=params, variant=emap.words)
        config = emap.text
    if spline:
        doc = _ELEMENTWISE_SPLINE_DOC.format(given=given, spline=emap.formula)
        name = "ElementwiseSpline"
    else:
        formula = _SCALE_FORMULA[layer.scale.kind]
        doc, name = _ELEMENTWISE_AFFINE_DOC.format(given=given, formula=formula), "ElementwiseAffine"
    return Plan(
        class_name=name,
        config=config,
        doc=f"{doc}\n    {_wrap(legend + '.')}\n    {_configuration(config)}",
        constant_jacobian=not context and not spline,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        context=context,
        tolerances=emap.tolerances,
        **parts,
    )


# -------------------------------------------------------------------- other layers
_SCALING_DOC = """NICE diagonal scaling layer (Dinh et al. 2015, arXiv:1410.8516, sec. 3.3).

    forward:  y = x * exp(log_scale),   log|det J| = sum(log_scale)
    inverse:  x = y * exp(-log_scale),  log|det J^-1| = -sum(log_scale)
    log_scale: a learned vector of the event size.
    Configuration: none besides the event shape."""

_PERMUTATION_DOC = """A fixed permutation of the event entries.

    forward:  y[..., i] = x[..., indices[i]],   log|det J| = 0
    inverse:  x = y[..., inverse_indices],      log|det J^-1| = 0
    Configuration: the indices, a constructor argument."""


@definition(S.Scaling)
def plan_scaling(layer: S.Scaling, shape: tuple[int, ...], context: int = 0) -> Plan:
    """``log_scale`` starts at zero (the identity); its test draw is uniform in +-0.3."""
    n = len(shape)

    def forward(p: View, x: Value):
        scale = ops.name(ops.exp(p.log_scale), "scale")
        total = ops.name(ops.sum_all(p.log_scale), "sum_log_scale")
        return x * scale, ops.batch_fill(total, x, event_ndims=n)

    def inverse(p: View, y: Value):
        neg = ops.name(-p.log_scale, "neg_log_scale")
        inv_scale = ops.name(ops.exp(neg), "inv_scale")
        total = ops.name(ops.sum_all(neg), "sum_neg_log_scale")
        return y * inv_scale, ops.batch_fill(total, y, event_ndims=n)

    return Plan(
        class_name="Scaling",
        variant=(),
        config="none",
        doc=_SCALING_DOC,
        fields=(Field("vector", "log_scale"),),
        args={},
        params={"log_scale": Param(shape, ZEROS, Init.uniform(0.3))},
        constant_jacobian=True,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
    )


@definition(S.Permutation)
def plan_permutation(layer: S.Permutation, shape: tuple[int, ...], context: int = 0) -> Plan:
    if len(shape) != 1:
        raise ValueError(f"permutations take vector events (D,), got {shape}")
    indices = S.permutation_indices(layer, shape[0])
    inverse_indices = sorted(range(shape[0]), key=indices.__getitem__)

    def forward(p: View, x: Value):
        return ops.take(x, p.indices, axis=-1), ops.batch_zeros(x, event_ndims=1)

    def inverse(p: View, y: Value):
        return ops.take(y, p.inverse_indices, axis=-1), ops.batch_zeros(y, event_ndims=1)

    return Plan(
        class_name="Permutation",
        variant=(),
        config="none",
        doc=_PERMUTATION_DOC,
        fields=(Field("index", "indices"), Field("index", "inverse_indices")),
        args={"indices": indices, "inverse_indices": inverse_indices},
        params={},
        constant_jacobian=True,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
    )


# ------------------------------------------------------------------ context embedding
@dataclass(frozen=True)
class EmbeddingPlan:
    """The flow's context embedding (:class:`flowbridge.spec.ContextEmbedding`) resolved:
    one generated class, applied once to the context before the couplings. Its
    parameters' local names are ``{j}.kernel``/``{j}.bias`` (neutral names under
    ``context_embedding.``); ``embed(p, context)`` returns the features."""

    doc: str
    args: dict[str, Any]  # {"sizes": [context_dim, *hidden, features]}
    params: dict[str, Param]
    context_dim: int
    features: int
    embed: Callable = field(compare=False)  # (p, context) -> features


def plan_embedding(spec: S.FlowSpec) -> EmbeddingPlan | None:
    """The embedding of ``spec``'s context, or None when it has none: the conditioner's
    MLP part (:class:`MLP`) on the context, every kernel started fan-in uniform."""
    emb = spec.context_embedding
    if emb is None:
        return None
    mlp = MLP(emb, spec.context_dim, emb.features, prefix="", zero_last=False)
    depth = len(emb.hidden)
    slope = f" (negative slope {emb.negative_slope!r})" if emb.activation == "leaky_relu" else ""
    acts = f"{emb.activation}{slope} after each hidden layer" if depth else "no hidden layer"
    config = f"dense layers {' -> '.join(map(str, mlp.sizes))}, {acts}, none after the last"
    doc = f"""The context embedding: features = e(context), applied once before the couplings.

    Every coupling's conditioner reads [x_a | features].
    {_configuration(config)}"""
    return EmbeddingPlan(
        doc=doc,
        args=mlp.args,
        params=mlp.params,
        context_dim=spec.context_dim,
        features=emb.features,
        embed=lambda p, context: mlp(p, context),
    )


_SQUEEZE_DOC = """RealNVP's squeeze: 2x2 space-to-depth (Dinh et al. 2017, sec. 3.6).

    forward:  (C, H, W) -> (4C, H/2, W/2),  y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j],
              log|det J| = 0
    inverse:  the same entries moved back,  log|det J^-1| = 0
    Configuration: none besides the event shape."""


@definition(S.Squeeze)
def plan_squeeze(layer: S.Squeeze, shape: tuple[int, ...], context: int = 0) -> Plan:
    """A squeeze: the plan whose output shape differs from its input shape."""

    def forward(p: View, x: Value):
        return ops.squeeze2x2(x), ops.batch_zeros(x, event_ndims=3)

    def inverse(p: View, y: Value):
        return ops.unsqueeze2x2(y), ops.batch_zeros(y, event_ndims=3)

    return Plan(
        class_name="Squeeze",
        variant=(),
        config="none",
        doc=_SQUEEZE_DOC,
        fields=(),
        args={},
        params={},
        constant_jacobian=True,
        event_shape=shape,
        output_shape=layer.output_shape(shape),  # (4C, H/2, W/2), as the spec says
        forward=forward,
        inverse=inverse,
    )


_ACTNORM_DOC = """Glow's activation normalization (Kingma & Dhariwal 2018, arXiv:1807.03039).

    forward:  y = x * exp(log_scale) + shift,      log|det J| = {count} * sum(log_scale)
    inverse:  x = (y - shift) * exp(-log_scale),   log|det J^-1| = -{count} * sum(log_scale)
    log_scale, shift: one entry per {unit}.
    Both start at zero (the identity); flowbridge.actnorm_init sets them from data
    (Glow's data-dependent initialisation).
    Configuration: none besides the event shape."""


@definition(S.ActNorm)
def plan_actnorm(layer: S.ActNorm, shape: tuple[int, ...], context: int = 0) -> Plan:
    """Per channel of an image (the parameters broadcast over H and W), per entry of a
    vector; the test draw of both parameters is uniform in +-0.3."""
    n, image = len(shape), len(shape) == 3
    count = shape[1] * shape[2] if image else 1  # entries each parameter scales

    def spread(v: Value) -> Value:
        return ops.per_channel(v) if image else v

    def forward(p: View, x: Value):
        scale = ops.name(spread(ops.exp(p.log_scale)), "scale")
        total = ops.name(ops.sum_all(p.log_scale) * float(count), "log_det_one")
        y = ops.name(x * scale, "x_scaled") + ops.name(spread(p.shift), "shift")
        return y, ops.batch_fill(total, x, event_ndims=n)

    def inverse(p: View, y: Value):
        inv_scale = ops.name(spread(ops.exp(-p.log_scale)), "inv_scale")
        total = ops.name(ops.sum_all(p.log_scale) * float(-count), "log_det_one")
        x = ops.name(y - ops.name(spread(p.shift), "shift"), "y_unshifted") * inv_scale
        return x, ops.batch_fill(total, y, event_ndims=n)

    c = shape[0]
    unit = "channel, broadcast over H and W" if image else "entry"
    return Plan(
        class_name="ActNorm",
        variant=(),
        config="none",
        doc=_ACTNORM_DOC.format(count="H * W" if image else "1", unit=unit),
        fields=(Field("channel", "log_scale"), Field("channel", "shift")),
        args={},
        params={"log_scale": Param((c,), ZEROS, Init.uniform(0.3)),
                "shift": Param((c,), ZEROS, Init.uniform(0.3))},  # fmt: skip
        constant_jacobian=True,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        data_init=_actnorm_data_init,
    )


def _actnorm_data_init(h: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """Glow's initialisation: the log-scale and shift that give the batch ``h`` zero mean
    and unit variance per channel (per entry of a vector) after the layer."""
    axes = (0, 2, 3) if h.ndim == 4 else (0,)
    log_scale = -np.log(h.std(axis=axes) + eps)
    return {"log_scale": log_scale, "shift": -h.mean(axis=axes) * np.exp(log_scale)}


_BATCH_NORM_DOC = """Batch normalization as a flow layer (Dinh et al. 2017, arXiv:1605.08803, sec. 3.7).

    forward:  y = (x - mean) * exp(log_gamma - log(var + eps) / 2) + beta,
              log|det J| = {count} * sum(log_gamma - log(var + eps) / 2)
    inverse:  x = (y - beta) * exp(log(var + eps) / 2 - log_gamma) + mean (running averages)
    Training mode (self.training): mean and var (biased) of the batch per {unit},
    and running_mean, running_log_var <- (1 - momentum) * running + momentum * batch
    (the variance averaged, its log stored). Evaluation mode and the inverse: the running
    averages, mean = running_mean and var = exp(running_log_var).
    {config}"""


@definition(S.BatchNorm)
def plan_batch_norm(layer: S.BatchNorm, shape: tuple[int, ...], context: int = 0) -> Plan:
    """The evaluation-mode forward and the inverse use the running averages; the
    training-mode forward measures the batch and updates them (two ``assign`` effects).
    ``log_gamma``, ``beta`` and both running averages start at zero; their test draws
    are uniform in +-0.3."""
    n, image = len(shape), len(shape) == 3
    count = shape[1] * shape[2] if image else 1
    eps, momentum = float(layer.eps), float(layer.momentum)

    def spread(v: Value) -> Value:
        return ops.per_channel(v) if image else v

    def normalise(p: View, x: Value, centred: Value, var: Value):
        log_std = ops.name(0.5 * ops.log(ops.name(var + eps, "var_eps")), "log_std")
        log_scale = ops.name(p.log_gamma - log_std, "log_scale")
        y = ops.name(centred * ops.name(spread(ops.exp(log_scale)), "scale"), "scaled")
        total = ops.name(ops.sum_all(log_scale) * float(count), "log_det_one")
        return y + ops.name(spread(p.beta), "beta_b"), ops.batch_fill(total, x, event_ndims=n)

    def forward(p: View, x: Value):
        centred = ops.name(x - ops.name(spread(p.running_mean), "mean_b"), "centred")
        return normalise(p, x, centred, ops.name(ops.exp(p.running_log_var), "var"))

    def training_forward(p: View, x: Value):
        mean = ops.name(ops.batch_mean(x, event_ndims=n), "mean")
        centred = ops.name(x - ops.name(spread(mean), "mean_b"), "centred")
        var = ops.name(ops.batch_mean(ops.name(centred * centred, "sq"), event_ndims=n), "var")
        y, log_det = normalise(p, x, centred, var)
        keep = 1.0 - momentum
        new_mean = ops.name(keep * p.running_mean + momentum * mean, "new_mean")
        running_var = ops.name(ops.exp(p.running_log_var), "running_var")
        new_var = ops.name(keep * running_var + momentum * var, "new_var")
        effects = [ops.assign(p.running_mean, new_mean),
                   ops.assign(p.running_log_var, ops.name(ops.log(new_var), "new_log_var"))]  # fmt: skip
        return y, log_det, effects

    def inverse(p: View, y: Value):
        var = ops.name(ops.exp(p.running_log_var), "var")
        log_std = ops.name(0.5 * ops.log(ops.name(var + eps, "var_eps")), "log_std")
        log_scale = ops.name(p.log_gamma - log_std, "log_scale")
        unshifted = ops.name(y - ops.name(spread(p.beta), "beta_b"), "unshifted")
        inv_scale = ops.name(spread(ops.exp(ops.name(-log_scale, "neg_log_scale"))), "inv_scale")
        x = ops.name(unshifted * inv_scale, "x_centred") + spread(p.running_mean)
        total = ops.name(ops.sum_all(log_scale) * float(-count), "log_det_one")
        return x, ops.batch_fill(total, y, event_ndims=n)

    c = shape[0]
    config = f"momentum {momentum!r}, eps {eps!r}"
    unit = "channel" if image else "entry"
    return Plan(
        class_name="BatchNorm",
        variant=(("", f"M{_word(momentum)}Eps{_word(eps)}"),),
        config=config,
        doc=_BATCH_NORM_DOC.format(count="H * W" if image else "1", unit=unit,
                                   config=_configuration(config)),  # fmt: skip
        fields=(Field("channel", "log_gamma"), Field("channel", "beta"),
                Field("state", "running_mean"), Field("state", "running_log_var")),  # fmt: skip
        args={},
        params={name: Param((c,), ZEROS, Init.uniform(0.3))
                for name in ("log_gamma", "beta", "running_mean", "running_log_var")},  # fmt: skip
        constant_jacobian=False,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        training_forward=training_forward,
    )


_LOGIT_DOC = """RealNVP's logit preprocessing (Dinh et al. 2017, arXiv:1605.08803, sec. 4.1).

    forward:  p = alpha + (1 - 2 alpha) x,  y = log(p) - log(1 - p),
              log|det J| = sum(log(1 - 2 alpha) - log(p) - log(1 - p))
    inverse:  x = (sigmoid(y) - alpha) / (1 - 2 alpha),
              log|det J^-1| = sum(log_sigmoid(y) + log_sigmoid(-y) - log(1 - 2 alpha))
    Its input is data in [0, 1]: dequantized pixels (flowbridge.dequantize).
    {config}"""


@definition(S.Logit)
def plan_logit(layer: S.Logit, shape: tuple[int, ...], context: int = 0) -> Plan:
    """The constants (``alpha``, ``1 - 2 alpha`` and its log and reciprocal) are
    computed here once, in float64, and written into the code as literals."""
    n, alpha = len(shape), float(layer.alpha)
    width = 1.0 - 2.0 * alpha
    log_width = float(np.log(width))

    def forward(p: View, x: Value):
        prob = ops.name(alpha + ops.name(width * x, "x_scaled"), "p")
        log_p = ops.name(ops.log(prob), "log_p")
        log_q = ops.name(ops.log(ops.name(1.0 - prob, "q")), "log_q")
        log_dydx = ops.name(log_width - log_p - log_q, "log_dydx")
        return log_p - log_q, ops.sum_event(log_dydx, event_ndims=n)

    def inverse(p: View, y: Value):
        log_p = ops.name(ops.log_sigmoid(y), "log_p")
        log_q = ops.name(ops.log_sigmoid(ops.name(-y, "neg_y")), "log_q")
        x = ops.name(ops.sigmoid(y) - alpha, "p_shifted") * (1.0 / width)
        log_dxdy = ops.name(log_p + log_q - log_width, "log_dxdy")
        return x, ops.sum_event(log_dxdy, event_ndims=n)

    config = _configuration(f"alpha {alpha!r}")
    return Plan(
        class_name="Logit",
        variant=(("", f"Alpha{_word(alpha)}"),),
        config=f"alpha {alpha!r}",
        doc=_LOGIT_DOC.format(config=config),
        fields=(),
        args={},
        params={},
        constant_jacobian=False,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        domain="unit_interval",
    )


_FACTOR_OUT_DOC = """RealNVP's multi-scale factor-out (Dinh et al. 2017, sec. 3.6).

    forward:  y = x,  log|det J| = 0;  inverse:  x = y,  log|det J^-1| = 0
    Of the channels still active, the first `kept` stay active and the other `factored`
    leave the flow: every later layer but a squeeze acts on the first `kept` channels and
    passes the others to the output unchanged.
    Configuration: kept and factored, constructor arguments."""


@definition(S.FactorOut)
def plan_factor_out(layer: S.FactorOut, shape: tuple[int, ...], context: int = 0) -> Plan:
    """The factor-out marks a scale's end; the layers after it are planned on the
    channels it keeps (:func:`plan_flow`). ``shape`` is the active channels'."""
    active = shape[0]

    def forward(p: View, x: Value):
        return x, ops.batch_zeros(x, event_ndims=3)

    def inverse(p: View, y: Value):
        return y, ops.batch_zeros(y, event_ndims=3)

    return Plan(
        class_name="FactorOut",
        variant=(),
        config="none",
        doc=_FACTOR_OUT_DOC,
        fields=(Field("int", "kept"), Field("int", "factored")),
        args={"kept": active // 2, "factored": active - active // 2},
        params={},
        constant_jacobian=True,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        whole_tensor=True,
    )


def _on_active_channels(plan: Plan, shape: tuple[int, ...]) -> Plan:
    """``plan`` (planned on the first ``A`` channels) on events of ``shape`` (``C > A``
    channels): the channels factored out before it pass through unchanged."""
    active, channels = plan.event_shape[0], shape[0]

    def wrap(fn: Callable | None, var: str) -> Callable | None:
        if fn is None:
            return None

        def on_active(p: View, v: Value, *context: Value):
            head = ops.name(ops.slice(v, axis=-3, start=None, stop=active), f"{var}_active")
            rest = ops.name(ops.slice(v, axis=-3, start=active, stop=None), f"{var}_factored")
            out, log_det, *effects = fn(p, head, *context)
            return ops.concat(out, rest, axis=-3), log_det, *effects

        return on_active

    note = (f"Acts on the first {active} of the {channels} channels; the other {channels - active} "
            "were factored out before it and pass through unchanged.")  # fmt: skip
    return dataclasses.replace(
        plan,
        args={**plan.args, "active_shape": plan.event_shape},  # a "vector" field's shape
        variant=(*plan.variant, (f"Active{active}", f"Active{active}")),
        doc=f"{plan.doc}\n    {_wrap(note)}",
        event_shape=shape,
        output_shape=shape,
        forward=wrap(plan.forward, "x"),
        inverse=wrap(plan.inverse, "y"),
        training_forward=wrap(plan.training_forward, "x"),
        data_init=None if plan.data_init is None else (
            lambda h, eps, init=plan.data_init: init(h[:, :active], eps)),
    )


#: Layer type (the spec's ``type`` field) -> its neutral definition, a function of the
#: spec layer, its input event shape and the flow's context size (0: none; a layer that
#: reads no context ignores it). Derived from the registrations (:func:`definition`).
REGISTRY: dict[str, Callable[[Any, tuple[int, ...], int], Plan]] = {
    t.tag: t.plan for t in LAYER_TYPES.values()
}


def check_definitions(models: list[type], defined: dict[str, LayerType]) -> None:
    """Raise ImportError naming each layer model that has no definition."""
    undefined = [m.__name__ for m in models if _tag(m) not in defined]
    if undefined:
        raise ImportError(f"layer types without a definition in flowbridge.layers: "
                          f"{', '.join(undefined)}")  # fmt: skip


check_definitions(S.LAYER_MODELS, LAYER_TYPES)  # a model without its definition: refused now


def plan_flow(spec: S.FlowSpec) -> list[Plan]:
    """Plan every layer of ``spec``: one :class:`Plan` per spec layer, in application order.

    Each layer is planned against the event shape the layers before it give (as zuko's
    transforms carry ``forward_shape``): its ``event_shape`` is the previous plan's
    ``output_shape``. A layer acting on the active channels of an image (after a
    factor-out) is planned on those and wrapped to act on the whole tensor. The code
    generator (:func:`flowbridge.generate`), :func:`flowbridge.param_shapes` and
    :func:`flowbridge.init_params` all read these plans.

    Args:
        spec: the flow, a validated :class:`flowbridge.FlowSpec`.

    Returns:
        ``list[Plan]``: one :class:`Plan` per entry of ``spec.layers``, in order.

    Raises:
        AttributeError: ``spec`` is not a :class:`flowbridge.FlowSpec` (a plain dict, say:
            validate it first with ``FlowSpec.from_dict``).

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.layers import plan_flow
        >>> plans = plan_flow(fb.nice(2, num_couplings=2, hidden=(4,)))
        >>> [plan.class_name for plan in plans]
        ['AdditiveCoupling', 'AdditiveCoupling', 'Scaling']
        >>> plans[0].event_shape, plans[0].output_shape, plans[0].constant_jacobian
        ((2,), (2,), True)
        >>> list(plans[-1].params)
        ['log_scale']
    """
    plans = []
    image = len(spec.event_shape) == 3
    for layer, (shape, acted) in zip(spec.layers, S.layer_scopes(spec), strict=True):
        plan = REGISTRY[layer.type](layer, acted, spec.context_features)
        if plan.whole_tensor:  # on the whole tensor, no slicing
            plan = dataclasses.replace(plan, event_shape=shape, output_shape=shape)
        elif acted != shape:
            plan = _on_active_channels(plan, shape)
        elif image and not layer.whole:  # the same aspects as the layers acting on fewer
            plan = dataclasses.replace(plan, variant=(*plan.variant, ("", "")))
        plans.append(plan)
    return plans


def param_specs(spec: S.FlowSpec, plans: list[Plan] | None = None) -> dict[str, Param]:
    """Every parameter of ``spec``'s flow: ``context_embedding.{local name}`` (when the
    flow has one) then ``layers.{i}.{local name}`` -> :class:`Param`, in order of
    application (the neutral layout; see :func:`param_shapes`). ``plans``: the flow's
    plans where the caller has made them already (else planned here)."""
    plans = plan_flow(spec) if plans is None else plans
    embedding = plan_embedding(spec)
    own = embedding.params if embedding is not None else {}
    return {
        **{f"context_embedding.{name}": param for name, param in own.items()},
        **{f"layers.{i}.{name}": param
           for i, plan in enumerate(plans)
           for name, param in plan.params.items()},
    }  # fmt: skip


def param_shapes(spec: S.FlowSpec) -> dict[str, tuple[int, ...]]:
    """The neutral parameter layout of ``spec``: ``layers.{i}.{local name}`` -> shape.

    Couplings: ``layers.{i}.conditioner.{j}.kernel`` ``(in, out)`` and ``.bias``
    ``(out,)``, ``j`` counting dense layers from the input; the last layer's output is
    ``[shift | raw log-scale]`` for affine couplings. Scaling: ``layers.{i}.log_scale``
    ``(D,)``. Permutations have none. A context embedding's dense layers come first, as
    ``context_embedding.{j}.kernel`` ``(in, out)`` and ``.bias``. Every backend's
    parameters travel in this layout (:func:`flowbridge.init_params`,
    :func:`flowbridge.check_params`, :func:`flowbridge.save_params`).

    Args:
        spec: the flow, a :class:`flowbridge.FlowSpec`.

    Returns:
        ``dict[str, tuple[int, ...]]``: neutral name -> shape, in order of application
        (the context embedding's first, then layer by layer).

    Raises:
        AttributeError: ``spec`` is not a :class:`flowbridge.FlowSpec` (a plain dict, say:
            validate it first with ``FlowSpec.from_dict``).

    Example:
        >>> import flowbridge as fb
        >>> fb.param_shapes(fb.nice(2, num_couplings=2, hidden=(4,)))
        {'layers.0.conditioner.0.kernel': (1, 4), 'layers.0.conditioner.0.bias': (4,),
         'layers.0.conditioner.1.kernel': (4, 1), 'layers.0.conditioner.1.bias': (1,),
         'layers.1.conditioner.0.kernel': (1, 4), 'layers.1.conditioner.0.bias': (4,),
         'layers.1.conditioner.1.kernel': (4, 1), 'layers.1.conditioner.1.bias': (1,),
         'layers.2.log_scale': (2,)}
    """
    return {name: param.shape for name, param in param_specs(spec).items()}
