"""The shared pieces of every layer definition: how a parameter starts (:class:`Init`,
:class:`Param`), a generated class's fields (:class:`Field`), the plan a definition
returns (:class:`Plan`), the symbolic parameter view it is traced with (:class:`View`), and
the registry of layer types (:func:`definition`, :data:`LAYER_TYPES`)."""

from __future__ import annotations

import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..ir import Value, source


@dataclass(frozen=True)
class Init:
    """How one parameter starts: ``zeros``, uniform in ``+-bound``, or (a square matrix,
    an LU factorisation's packed factors) the ``identity`` plus uniform in ``+-bound``.

    A fan-in rule (``Init.fan_in_uniform(fan_in)``, torch's ``nn.Linear`` kernel rule)
    records its ``fan_in``; ``bound = fan_in ** -0.5``. ``Init.uniform(bound)`` makes a
    plain uniform rule, and ``draw(rng, shape)`` a float64 array of ``shape`` from a
    ``numpy.random.Generator`` (zeros use no randomness).

    Attributes:
        rule: ``"zeros"`` (every entry 0), ``"uniform"`` (uniform in
            ``[-bound, bound]``) or ``"identity"`` (a square matrix: the identity, plus
            uniform in ``[-bound, bound]`` where ``bound > 0``).
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

    rule: Literal["zeros", "uniform", "identity"]
    bound: float = 0.0
    fan_in: int | None = None

    @classmethod
    def fan_in_uniform(cls, fan_in: int) -> Init:
        """Uniform in ``+-1/sqrt(fan_in)``: torch's ``nn.Linear`` kernel rule."""
        return cls("uniform", fan_in**-0.5, fan_in)

    @classmethod
    def uniform(cls, bound: float) -> Init:
        return cls("uniform", bound)

    @classmethod
    def identity(cls, bound: float = 0.0) -> Init:
        """A square matrix: the identity, plus uniform in ``+-bound`` where ``bound > 0``."""
        return cls("identity", bound)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """A float64 draw (zeros, and the identity with bound 0, use no randomness)."""
        if self.rule == "identity":
            start = np.eye(shape[0])
            return start if self.bound == 0.0 else start + rng.uniform(-self.bound, self.bound, shape)
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


#: The field kinds that hold weights (learned, or a running average): a layer's
#: ``neutral_params`` names them, and a module draws their starts from ``PARAM_INIT``.
WEIGHT_KINDS: tuple[str, ...] = ("dense", "conv", "vector", "channel", "state", "matrix")


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
    ``"matrix"`` (a learned square matrix, ``self.{name}``, of the shape the
    constructor argument ``shape`` names, starting at the identity: an LU factorisation's
    packed factors), ``"constant"`` (a float buffer from a constructor list, nested for
    more than one dimension: a checkerboard's row and column parities), ``"index"`` (an
    integer buffer) or ``"int"`` (a plain Python int). A layer acting on the active
    channels of an image (after a factor-out) has an ``active_shape`` argument, which
    gives its ``"vector"`` and ``"channel"`` fields their shapes. ``"state"`` is a
    ``"channel"`` tensor the layer updates itself (a running average), not trained: a
    buffer in Pyro, a non-trainable variable in TFP.
    """

    kind: str
    name: str
    #: a ``"vector"`` (or ``"matrix"``) field of a shape other than the event's: the name of the constructor
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
        identity_at_arange: whether the layer is the identity map (log-det 0) when every
            ``"index"`` field holds ``0, 1, ..., n-1`` (a permutation's). A backend may
            then pad a loop over repeated blocks of layers with such a copy: the JAX
            prelude scans a flow's last coupling with the couplings before it, as flowjax
            does. Default ``False``.

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
    # the identity map (log-det 0) when every "index" field holds 0..n-1 (a permutation)
    identity_at_arange: bool = False


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
