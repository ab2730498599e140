"""Paper architectures as specs: :func:`nice`, :func:`realnvp`, :func:`nsf`, :func:`maf`
and :func:`realnvp_image`.

Every preset argument fills a spec field and is validated as that field's type, the
models' own (``PosInt``, :data:`~flowbridge.spec.models.Activation`, the type of
``Conditioner.hidden``, ...), through a pydantic ``TypeAdapter``; an error names the
argument and says what it takes (``hidden: expected a list of positive integers, got
64``).
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, StrictBool, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from .. import document
from ..document import show as _show
from ..errors import SpecError
from .errors import expected, from_errors, path, translate
from .flow import FlowSpec
from .models import (
    MADE,
    TAGS,
    Activation,
    ActNorm,
    AdditiveCoupling,
    AffineAutoregressive,
    AffineCoupling,
    ChannelMask,
    CheckerboardMask,
    Conditioner,
    Conv1x1,
    ElementwiseAffine,
    ElementwiseSpline,
    ExpScale,
    FactorOut,
    HalfMask,
    Logit,
    NonNegInt,
    ParityMask,
    Permutation,
    PosInt,
    RationalQuadraticSpline,
    ResNetConditioner,
    ScaleMap,
    Scaling,
    SigmoidScale,
    SplineAutoregressive,
    SplineCoupling,
    SplineMap,
    Squeeze,
)

#: The masks :func:`realnvp` alternates between, and the permutations it can put between
#: its couplings.
MaskKind = Literal["half", "parity"]
PermutationKind = Literal["reverse", "random"]

#: What ``scale`` and ``event_shape`` take, in words (their types have none of their own).
_SCALE_WORDS = "a scale map or its dict"
_IMAGE_WORDS = "(C, H, W), three positive integers"


def nice(
    dim: int,
    *,
    num_couplings: int = 4,
    hidden: tuple[int, ...] = (256, 256),
    activation: Activation = "relu",
    scaling: bool = True,
    context_dim: int = 0,
    context_embedding: Any = None,
    name: str = "nice",
) -> FlowSpec:
    """NICE (Dinh et al. 2015, arXiv:1410.8516) for vector events ``(D,)``.

    Additive couplings (:class:`flowbridge.AdditiveCoupling`) whose masks alternate
    between the even and odd entries (:class:`flowbridge.ParityMask`, even first), then
    a diagonal scaling layer (:class:`flowbridge.Scaling`). For ``dim=1``, where no
    coupling can split the entries, it is one :class:`flowbridge.ElementwiseAffine`
    layer instead (with a context: a conditional Gaussian whose mean and scale an MLP of
    the context gives; ``num_couplings`` is not used).

    The paper's MNIST model used 4 couplings of 5 hidden layers with 1000 units; pass
    ``hidden=(1000,) * 5`` for that size. The default is smaller for vector problems.
    ``context_dim > 0`` makes it conditional (see :class:`flowbridge.FlowSpec`), and
    ``context_embedding`` (a :class:`flowbridge.ContextEmbedding` or its dict,
    ``{"features": 8}``) maps the context first. Every argument is validated like the
    spec field it fills, and an error names the argument (``hidden: expected a list of
    positive integers, got 64``).

    Args:
        dim: the event size ``D``, a positive integer.
        num_couplings: the number of couplings, a positive integer; default 4.
        hidden: every conditioner's hidden-layer widths, positive integers; default
            ``(256, 256)``.
        activation: the conditioners' activation, ``"relu"`` (default), ``"tanh"``,
            ``"leaky_relu"``, ``"elu"`` or ``"gelu"``.
        scaling: whether to end with the scaling layer (a ``bool``); default ``True``.
        context_dim: the size of the context vector, a non-negative integer; default 0
            (unconditional).
        context_embedding: a :class:`flowbridge.ContextEmbedding`, its dict or ``None``
            (default: the couplings read the context itself); needs ``context_dim > 0``.
        name: the spec's name (up to 64 letters, digits, ``_``, ``.``, spaces or ``-``);
            default ``"nice"``.

    Returns:
        FlowSpec: ``num_couplings`` additive couplings, then a scaling layer if
        ``scaling``; for ``dim=1`` one :class:`flowbridge.ElementwiseAffine`.

    Raises:
        SpecError: an argument is not of the type of the field it fills or breaks its
            rule (the message names the argument), or the flow breaks a rule of
            :class:`flowbridge.FlowSpec` (an embedding without a context, a size over a
            ceiling of :func:`flowbridge.limits`).

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.nice(2, hidden=(8,))
        >>> [layer.type for layer in spec.layers][-2:], spec.layers[1].mask.parity
        (['additive_coupling', 'scaling'], 'odd')
        >>> fb.nice(4, hidden=64)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: hidden: expected a list of positive integers, got 64
    """
    dim, count = _argument("dim", PosInt, dim), _argument("num_couplings", PosInt, num_couplings)
    cond = _fill(Conditioner, hidden=hidden, activation=activation)
    scaling = _argument("scaling", StrictBool, scaling)
    context = _context(context_dim, context_embedding)
    if dim == 1:  # no coupling splits one entry
        if not scaling:
            raise SpecError("scaling: a one-dimensional NICE flow is one ElementwiseAffine "
                            "layer, which scales; expected True for dim=1, got False")  # fmt: skip
        layers = [ElementwiseAffine(conditioner=cond)]
        return FlowSpec(name=name, event_shape=(dim,), **context, layers=layers)
    layers: list[Any] = [
        AdditiveCoupling(mask=ParityMask(parity="even" if i % 2 == 0 else "odd"), conditioner=cond)
        for i in range(count)
    ]
    if scaling:
        layers.append(Scaling())
    return FlowSpec(name=name, event_shape=(dim,), **context, layers=layers)


def realnvp(
    dim: int,
    *,
    num_couplings: int = 4,
    hidden: tuple[int, ...] = (256, 256),
    activation: Activation = "relu",
    scale: Any = None,
    mask: MaskKind = "half",
    permutation: PermutationKind | None = None,
    seed: int = 0,
    context_dim: int = 0,
    context_embedding: Any = None,
    name: str = "realnvp",
) -> FlowSpec:
    """RealNVP (Dinh et al. 2017, arXiv:1605.08803) for vector events ``(D,)``.

    Affine couplings (:class:`flowbridge.AffineCoupling`) whose masks alternate which
    part passes through (first/last half, or even/odd), or, with ``permutation``, keep
    one mask and permute between couplings (as Pyro's ``AffineCoupling`` + ``Permute``
    stacks do). For ``dim=1``, where no coupling can split the entries, it is one
    :class:`flowbridge.ElementwiseAffine` layer with the same conditioner and scale map
    (a stack of affine maps is one affine map, so ``num_couplings``, ``mask`` and
    ``permutation`` are not used): with a context, a conditional Gaussian whose mean and
    scale an MLP of the context gives, as sbi's ``nsf`` uses for one-dimensional θ.

    ``scale`` is a scale map or its dict (default ``{"kind": "exp"}``, the paper's
    ``exp(s)``); ``permutation`` optionally puts a ``reverse`` or seeded ``random``
    permutation between couplings (seeds ``seed``, ``seed + 1``, ...); ``context_dim > 0``
    makes it conditional (see :class:`flowbridge.FlowSpec`) and ``context_embedding`` (a
    :class:`flowbridge.ContextEmbedding` or its dict) maps the context first. Every
    argument is validated like the spec field it fills, and an error names the argument.

    Args:
        dim: the event size ``D``, a positive integer.
        num_couplings: the number of couplings, a positive integer; default 4.
        hidden: every conditioner's hidden-layer widths, positive integers; default
            ``(256, 256)``.
        activation: the conditioners' activation, ``"relu"`` (default), ``"tanh"``,
            ``"leaky_relu"``, ``"elu"`` or ``"gelu"``.
        scale: the couplings' scale map (:class:`flowbridge.ExpScale`,
            :class:`flowbridge.ClampScale`, ...), its dict (``{"kind": "clamp"}``) or
            ``None`` (default: ``exp``).
        mask: ``"half"`` (default; :class:`flowbridge.HalfMask`, first half first) or
            ``"parity"`` (:class:`flowbridge.ParityMask`, even first).
        permutation: ``None`` (default: the masks alternate), ``"reverse"`` or
            ``"random"``: a :class:`flowbridge.Permutation` between consecutive
            couplings, and every coupling keeps the first mask.
        seed: the first random permutation's seed, a non-negative integer; default 0
            (read only with ``permutation="random"``).
        context_dim: the size of the context vector, a non-negative integer; default 0
            (unconditional).
        context_embedding: a :class:`flowbridge.ContextEmbedding`, its dict or ``None``
            (default: the couplings read the context itself); needs ``context_dim > 0``.
        name: the spec's name (up to 64 letters, digits, ``_``, ``.``, spaces or ``-``);
            default ``"realnvp"``.

    Returns:
        FlowSpec: ``num_couplings`` affine couplings, with ``num_couplings - 1``
        permutations between them if ``permutation``; for ``dim=1`` one
        :class:`flowbridge.ElementwiseAffine`.

    Raises:
        SpecError: an argument is not of the type of the field it fills or breaks its
            rule (the message names the argument: ``scale.low: ...``), or the flow
            breaks a rule of :class:`flowbridge.FlowSpec` (an embedding without a
            context, a size over a ceiling of :func:`flowbridge.limits`).

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.realnvp(4, num_couplings=3, hidden=(8,), permutation="random", seed=5)
        >>> [layer.type for layer in spec.layers]
        ['affine_coupling', 'permutation', 'affine_coupling', 'permutation', 'affine_coupling']
        >>> [layer.seed for layer in spec.layers if layer.type == "permutation"]
        [5, 6]
        >>> fb.realnvp(4, mask="checkerboard")
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: mask: expected one of 'half', 'parity', got 'checkerboard'
    """
    dim, count = _argument("dim", PosInt, dim), _argument("num_couplings", PosInt, num_couplings)
    cond = _fill(Conditioner, hidden=hidden, activation=activation)
    scale_map = _scale(scale)
    mask = _argument("mask", MaskKind, mask)
    permutation = _argument("permutation", None | PermutationKind, permutation)
    seed = _argument("seed", NonNegInt, seed)
    context = _context(context_dim, context_embedding)
    if dim == 1:  # no coupling splits one entry; a stack of affine maps is one
        layers = [ElementwiseAffine(conditioner=cond, scale=scale_map)]
        return FlowSpec(name=name, event_shape=(dim,), **context, layers=layers)
    layers: list[Any] = []
    for i in range(count):
        # with a permutation between couplings the mask stays put and the permutation
        # mixes: alternating as well would undo a reverse permutation's work
        flip = i % 2 == 1 and not permutation
        if mask == "half":
            m = HalfMask(part="last" if flip else "first")
        else:
            m = ParityMask(parity="odd" if flip else "even")
        layers.append(AffineCoupling(mask=m, conditioner=cond, scale=scale_map))
        if permutation and i < count - 1:
            kind_seed = {"seed": seed + i} if permutation == "random" else {}
            layers.append(Permutation(kind=permutation, **kind_seed))
    return FlowSpec(name=name, event_shape=(dim,), **context, layers=layers)


def nsf(
    dim: int,
    *,
    num_couplings: int = 4,
    hidden: tuple[int, ...] = (64, 64),
    activation: Activation = "relu",
    spline: Any = None,
    permutation: PermutationKind | None = None,
    seed: int = 0,
    context_dim: int = 0,
    context_embedding: Any = None,
    name: str = "nsf",
) -> FlowSpec:
    """A neural spline flow (Durkan et al. 2019, arXiv:1906.04032) for vector events
    ``(D,)``: rational-quadratic spline couplings (:class:`flowbridge.SplineCoupling`).

    The couplings' half masks alternate which half passes through, or, with
    ``permutation``, keep the first and permute between couplings, as :func:`realnvp`.
    ``spline`` configures every coupling's spline (:class:`flowbridge.RationalQuadraticSpline`
    or its dict; default 8 bins on ``[-3, 3]``, identity tails). For ``dim=1`` it is one
    :class:`flowbridge.ElementwiseSpline` (with a context, its raw parameters an MLP of
    the context, as sbi's ``nsf`` for one-dimensional θ). Every argument is validated like
    the spec field it fills, and an error names the argument.

    Args:
        dim: the event size ``D``, a positive integer.
        num_couplings: the number of couplings, a positive integer; default 4.
        hidden: every conditioner's hidden-layer widths; default ``(64, 64)``.
        activation: the conditioners' activation (as :func:`realnvp`'s); default
            ``"relu"``.
        spline: a :class:`flowbridge.RationalQuadraticSpline` or
            :class:`flowbridge.RationalLinearSpline`, its dict (``{"kind":
            "rational_quadratic", "bins": 10}``; ``kind`` may be left out for the
            quadratic one) or ``None`` (default: 8 quadratic bins, bound 3).
        permutation: ``None`` (default: the masks alternate), ``"reverse"`` or
            ``"random"`` (seeds ``seed``, ``seed + 1``, ...) between couplings.
        seed: the first random permutation's seed; default 0.
        context_dim: the size of the context vector; default 0 (unconditional).
        context_embedding: a :class:`flowbridge.ContextEmbedding`, its dict or ``None``.
        name: the spec's name; default ``"nsf"``.

    Returns:
        FlowSpec: ``num_couplings`` spline couplings (with permutations between them if
        ``permutation``); for ``dim=1`` one :class:`flowbridge.ElementwiseSpline`.

    Raises:
        SpecError: an argument is not of the type of the field it fills or breaks its
            rule (the message names the argument), or the flow breaks a rule of
            :class:`flowbridge.FlowSpec`.

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.nsf(4, num_couplings=2, hidden=(16,), spline={"bins": 6})
        >>> [(layer.type, layer.mask.part, layer.spline.bins) for layer in spec.layers]
        [('spline_coupling', 'first', 6), ('spline_coupling', 'last', 6)]
        >>> [layer.type for layer in fb.nsf(1, context_dim=2).layers]
        ['elementwise_spline']
        >>> fb.nsf(4, spline={"bins": 1})
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: spline.bins: expected a number >= 2, got 1
    """
    dim, count = _argument("dim", PosInt, dim), _argument("num_couplings", PosInt, num_couplings)
    cond = _fill(Conditioner, hidden=hidden, activation=activation)
    chosen = _argument("spline", SplineMap | None, spline,
                       "a RationalQuadraticSpline, RationalLinearSpline or its dict")  # fmt: skip
    chosen = RationalQuadraticSpline() if chosen is None else chosen
    permutation = _argument("permutation", None | PermutationKind, permutation)
    seed = _argument("seed", NonNegInt, seed)
    context = _context(context_dim, context_embedding)
    if dim == 1:  # no coupling splits one entry
        layers = [ElementwiseSpline(conditioner=cond, spline=chosen)]
        return FlowSpec(name=name, event_shape=(dim,), **context, layers=layers)
    layers: list[Any] = []
    for i in range(count):
        flip = i % 2 == 1 and not permutation
        layers.append(SplineCoupling(mask=HalfMask(part="last" if flip else "first"),
                                     conditioner=cond, spline=chosen))  # fmt: skip
        if permutation and i < count - 1:
            kind_seed = {"seed": seed + i} if permutation == "random" else {}
            layers.append(Permutation(kind=permutation, **kind_seed))
    return FlowSpec(name=name, event_shape=(dim,), **context, layers=layers)


def maf(
    dim: int,
    *,
    num_layers: int = 5,
    hidden: tuple[int, ...] = (64, 64),
    activation: Activation = "relu",
    direction: Literal["maf", "iaf"] = "maf",
    scale: Any = None,
    spline: Any = None,
    degrees: Any = "equal",
    context_dim: int = 0,
    context_embedding: Any = None,
    name: str | None = None,
) -> FlowSpec:
    """A masked autoregressive flow (MAF, Papamakarios et al. 2017, arXiv:1705.07057) or,
    with ``direction="iaf"``, an inverse autoregressive flow (IAF, Kingma et al. 2016,
    arXiv:1606.04934) for vector events ``(D,)``.

    ``num_layers`` autoregressive layers, each a :class:`flowbridge.MADE` of ``hidden``
    units; their orders alternate left to right and right to left (the reversal nflows,
    sbi and NumPyro's ``AutoIAFNormal`` put between layers, here in the MADE's ``order``,
    so no permutation layer is needed). Affine maps (:class:`flowbridge.AffineAutoregressive`,
    ``scale`` default ``exp``), or with ``spline`` rational spline maps
    (:class:`flowbridge.SplineAutoregressive`). A MAF's density (the inverse) is one pass
    and its sampling ``D``; an IAF's the other way round. Every argument is validated like
    the spec field it fills, and an error names the argument.

    Args:
        dim: the event size ``D``, a positive integer.
        num_layers: the number of autoregressive layers, a positive integer; default 5.
        hidden: every MADE's hidden-layer widths; default ``(64, 64)``.
        activation: the MADEs' activation; default ``"relu"``.
        direction: ``"maf"`` (default: the MADE reads the output) or ``"iaf"`` (it reads
            the input).
        scale: the affine maps' scale map or its dict (default ``exp``;
            :class:`flowbridge.ClampScale` is Pyro's and NumPyro's ``clamp(s, -5, 3)``);
            refused with ``spline``.
        spline: a :class:`flowbridge.RationalQuadraticSpline`,
            :class:`flowbridge.RationalLinearSpline` or its dict for spline maps; ``None``
            (default): affine maps.
        degrees: the hidden units' degrees, ``"equal"`` (default, TFP's rule) or
            ``"pyro"``.
        context_dim: the size of the context vector; default 0 (unconditional).
        context_embedding: a :class:`flowbridge.ContextEmbedding`, its dict or ``None``.
        name: the spec's name; default ``None``: ``"maf"`` or ``"iaf"``, the direction.

    Returns:
        FlowSpec: ``num_layers`` autoregressive layers.

    Raises:
        SpecError: an argument is not of the type of the field it fills or breaks its
            rule (the message names the argument), ``scale`` and ``spline`` are both
            given, or the flow breaks a rule of :class:`flowbridge.FlowSpec`.

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.maf(3, num_layers=2, hidden=(8,))
        >>> [(layer.type, layer.conditioner.order) for layer in spec.layers]
        [('affine_autoregressive', None), ('affine_autoregressive', (2, 1, 0))]
        >>> fb.maf(3, direction="iaf", spline={"bins": 4}).layers[0].type
        'spline_autoregressive'
        >>> fb.maf(3, direction="vae")
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: direction: expected one of 'maf', 'iaf', got 'vae'
    """
    dim, count = _argument("dim", PosInt, dim), _argument("num_layers", PosInt, num_layers)
    direction = _argument("direction", Literal["maf", "iaf"], direction)
    chosen = _argument("spline", SplineMap | None, spline,
                       "a RationalQuadraticSpline, RationalLinearSpline or its dict")  # fmt: skip
    if chosen is not None and scale is not None:
        raise SpecError("scale: expected None with a spline (a spline map has no scale map), "
                        f"got {_show(scale)}")  # fmt: skip
    scale_map = _scale(scale)
    context = _context(context_dim, context_embedding)
    layers: list[Any] = []
    for i in range(count):
        order = tuple(range(dim - 1, -1, -1)) if i % 2 else None
        made = _fill(MADE, hidden=hidden, activation=activation, degrees=degrees, order=order)
        if chosen is None:
            layers.append(AffineAutoregressive(conditioner=made, scale=scale_map,
                                               direction=direction))  # fmt: skip
        else:
            layers.append(SplineAutoregressive(conditioner=made, spline=chosen,
                                               direction=direction))  # fmt: skip
    return FlowSpec(name=name or direction, event_shape=(dim,), **context, layers=layers)


def realnvp_image(
    event_shape: Any,
    *,
    num_scales: int = 2,
    blocks: int = 2,
    channels: int = 64,
    kernel_size: int = 3,
    activation: Activation = "relu",
    scale: Any = None,
    logit: float | None = None,
    actnorm: bool = False,
    name: str = "realnvp_image",
) -> FlowSpec:
    """RealNVP's multi-scale architecture for images ``(C, H, W)`` (Dinh et al. 2017,
    arXiv:1605.08803, sec. 3.6).

    Each of the first ``num_scales - 1`` scales is 3 affine couplings with checkerboard
    masks (parities even, odd, even), a squeeze, 3 with channel masks (first, last,
    first) and a factor-out of half the channels; the last scale is 4 checkerboard
    couplings. Every coupling's conditioner is a ResNet
    (:class:`flowbridge.ResNetConditioner`) of ``blocks`` residual blocks of ``channels``
    feature maps with ``kernel_size`` convolutions (the paper used 8 blocks of 64 for
    CIFAR-10; the default is smaller). ``scale`` is the scale map or its dict (default
    ``exp``). ``logit`` (an ``alpha``, say the paper's 0.05) puts the logit preprocessing
    first, for dequantized data in (0, 1); ``actnorm=True`` puts an ActNorm before every
    coupling (Glow's; initialise it from data with :func:`flowbridge.actnorm_init`).
    ``H`` and ``W`` must halve ``num_scales - 1`` times. Every argument is validated like
    the spec field it fills. Image flows are not conditional.

    Args:
        event_shape: ``(C, H, W)``, three positive integers.
        num_scales: the number of scales, a positive integer; default 2.
        blocks: each conditioner's residual blocks, a non-negative integer; default 2.
        channels: each conditioner's feature maps, a positive integer; default 64.
        kernel_size: the convolutions' size, an odd positive integer; default 3.
        activation: the conditioners' activation, ``"relu"`` (default), ``"tanh"``,
            ``"leaky_relu"``, ``"elu"`` or ``"gelu"``.
        scale: the couplings' scale map (:class:`flowbridge.ExpScale`, ...), its dict or
            ``None`` (default: ``exp``).
        logit: ``None`` (default: no logit layer) or the ``alpha`` of a first
            :class:`flowbridge.Logit` layer, a number in ``[1.175494e-38, 0.49]``.
        actnorm: whether to put an :class:`flowbridge.ActNorm` before every coupling (a
            ``bool``); default ``False``.
        name: the spec's name (up to 64 letters, digits, ``_``, ``.``, spaces or ``-``);
            default ``"realnvp_image"``.

    Returns:
        FlowSpec: the multi-scale image flow; its output shape is
        ``(C * 4**k, H / 2**k, W / 2**k)`` with ``k = num_scales - 1``.

    Raises:
        SpecError: an argument is not of the type of the field it fills or breaks its
            rule (the message names the argument: ``kernel_size: expected an odd kernel
            size ...``), ``H`` or ``W`` does not halve ``num_scales - 1`` times (the
            message names the squeeze), or a size is over a ceiling of
            :func:`flowbridge.limits`.

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.realnvp_image((3, 8, 8), blocks=1, channels=8, logit=0.05)
        >>> len(spec.layers), spec.layers[0].type, spec.output_shape
        (13, 'logit', (12, 4, 4))
        >>> fb.realnvp_image((3, 6, 6), num_scales=3)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[11]: expected an even height and width to squeeze, ...
    """
    shape = _argument("event_shape", tuple[PosInt, PosInt, PosInt], event_shape, _IMAGE_WORDS)
    scales = _argument("num_scales", PosInt, num_scales)
    net = _fill(ResNetConditioner, blocks=blocks, channels=channels, kernel_size=kernel_size,
                activation=activation)  # fmt: skip
    scale_map = _scale(scale)
    actnorm = _argument("actnorm", StrictBool, actnorm)
    alpha = _argument("logit", _field(Logit, "alpha") | None, logit)
    first = [] if alpha is None else [Logit(alpha=alpha)]

    def couplings(masks: list[Any]) -> list[Any]:
        out: list[Any] = []
        for mask in masks:
            out += [ActNorm()] * actnorm + [AffineCoupling(mask=mask, conditioner=net,
                                                           scale=scale_map)]  # fmt: skip
        return out

    layers: list[Any] = first
    for _ in range(scales - 1):
        layers += couplings([CheckerboardMask(parity=p) for p in ("even", "odd", "even")])
        layers.append(Squeeze())
        layers += couplings([ChannelMask(part=p) for p in ("first", "last", "first")])
        layers.append(FactorOut())
    layers += couplings([CheckerboardMask(parity=p) for p in ("even", "odd", "even", "odd")])
    return FlowSpec(name=name, event_shape=shape, layers=layers)


def _scale(scale: Any) -> Any:
    """The ``scale`` argument: a scale map, its dict or None (``exp``)."""
    scale_map = _argument("scale", ScaleMap | None, scale, _SCALE_WORDS)
    return ExpScale() if scale_map is None else scale_map


def _context(context_dim: Any, context_embedding: Any) -> dict[str, Any]:
    """The ``context_dim`` and ``context_embedding`` arguments, as the spec's fields."""
    return {name: _argument(name, _field(FlowSpec, name), value)
            for name, value in [("context_dim", context_dim),
                                ("context_embedding", context_embedding)]}  # fmt: skip


# ------------------------------------------------------------------ argument checking
#: Errors that a value of the right type gets for breaking a rule of its own:
#: flowbridge's constants (an odd kernel size, a float32 range), the 2**63 - 1 bound on
#: integers and finiteness.
_RULES = ("constant", "less_than_equal", "finite_number")


def _fill(model: type[BaseModel], **arguments: Any) -> Any:
    """``model`` from preset arguments named as its fields, each validated as the field it
    fills (an error names the argument)."""
    return model(**{name: _argument(name, _field(model, name), value)
                    for name, value in arguments.items()})  # fmt: skip


def _field(model: type[BaseModel], name: str) -> Any:
    """The type of ``model``'s field ``name``, with its constraints."""
    info = model.model_fields[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _argument(name: str, kind: Any, value: Any, words: str | None = None) -> Any:
    """``value`` validated as ``kind``, the type of the spec field the argument fills.

    A mapping (a scale map's or an embedding's fields) is checked field by field, each
    error named under the argument (``scale.low``). Any other value is checked whole: a
    value of the wrong type gets what the argument takes, in ``words`` or the type's own
    (``dim: expected a positive integer, got '4'``); one of the right type that breaks a
    rule of its own gets the rule's message, at its place (``kernel_size: expected an odd
    kernel size``, ``hidden[0]: expected a number <= 9223372036854775807``).
    """
    if isinstance(value, dict):
        return _mapping(name, kind, value)
    try:  # JSON-like data only, as in a spec file (no sets, arrays or NaN)
        data, plain = value if isinstance(value, BaseModel) else document.plain(value), True
    except SpecError:
        data, plain = value, False  # refused, but the type may say why (a rule it breaks)
    try:
        result = _adapter(kind).validate_python(data)
    except ValidationError as exc:
        if all(err["type"] in _RULES for err in exc.errors()):
            raise from_errors([(_under(name, path(err["loc"], TAGS)),
                                f"{expected(err)}, got {_show(err['input'])}")
                               for err in exc.errors()]) from None  # fmt: skip
    else:
        if plain:
            return result
    raise from_errors([(name, f"expected {words or _words(kind)}, got {_show(value)}")])


def _mapping(name: str, kind: Any, value: dict) -> Any:
    """A mapping argument validated as ``kind``; each error named under ``name``."""
    try:
        return _adapter(kind).validate_python(document.plain(value))
    except SpecError as exc:  # not JSON-like data; the message starts with the path
        where, _, message = str(exc).partition(": ")
        errors = [(_under(name, where), message)]
    except ValidationError as exc:
        errors = [(_under(name, _untagged(where)), message)
                  for where, message in translate(exc, TAGS).errors]  # fmt: skip
    raise from_errors(errors) from None


@functools.cache
def _adapter(kind: Any) -> TypeAdapter:
    """A validator for ``kind``, built once per type."""
    return TypeAdapter(kind)


def _under(name: str, where: str) -> str:
    """A path inside a value (``low``, ``[0]``, ``spec`` for the value itself) under the
    argument's name."""
    if where == "spec":
        return name
    return name + where if where.startswith("[") else f"{name}.{where}"


def _untagged(where: str) -> str:
    """A path without the union branch name that validating a union puts first
    (``clamp.low`` is ``low``)."""
    head, _, rest = where.partition(".")
    return rest if head in TAGS and rest else where


def _words(kind: Any) -> str:
    """What a type takes, in words: ``PosInt`` "a positive integer", ``Activation`` "one
    of 'relu', 'tanh', ...", ``tuple[PosInt, ...]`` "a list of positive integers",
    ``ContextEmbedding | None`` "a ContextEmbedding, its dict or None"."""
    base = _bare(kind)[0]
    union = typing.get_origin(base) in (typing.Union, types.UnionType)
    members = typing.get_args(base) if union else (kind,)
    bare = [_bare(m)[0] for m in members]
    if all(typing.get_origin(b) is Literal or b in (bool, type(None)) for b in bare):
        values = [v for b in bare for v in _values(b)]
        return "one of " + ", ".join(map(repr, values))
    nouns = [noun for m in members for noun in _nouns(m)]
    return nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " or " + nouns[-1]


def _bare(kind: Any) -> tuple[Any, list[Any]]:
    """``(type, constraints)`` of a possibly ``Annotated`` type."""
    if typing.get_origin(kind) is not Annotated:
        return kind, []
    base, *meta = typing.get_args(kind)
    flat = [m for item in meta for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
    return base, flat


def _values(member: Any) -> tuple:
    """The values a ``Literal``, ``bool`` or ``None`` takes."""
    if member is bool:
        return (True, False)
    return (None,) if member is type(None) else typing.get_args(member)


def _nouns(kind: Any) -> list[str]:
    """What a type that is not a choice of values takes, as alternatives (a model: itself
    or its dict)."""
    base, constraints = _bare(kind)
    if base is int:
        if any(getattr(c, "gt", None) == 0 for c in constraints):
            return ["a positive integer"]
        if any(getattr(c, "ge", None) == 0 for c in constraints):
            return ["a non-negative integer"]
        return ["an integer"]
    if typing.get_origin(base) is tuple and typing.get_args(base)[-1] is Ellipsis:
        (item,) = _nouns(typing.get_args(base)[0])
        return ["a list of " + item.split(" ", 1)[1] + "s"]  # "a positive integer"
    if isinstance(base, type) and issubclass(base, BaseModel):
        return [f"a {base.__name__}", "its dict"]
    named = {float: "a number", str: "a string", type(None): "None"}
    return [named.get(base, getattr(base, "__name__", str(base)))]


def glow(
    event_shape: Any,
    *,
    num_scales: int = 3,
    steps: int = 4,
    blocks: int = 1,
    channels: int = 64,
    kernel_size: int = 3,
    activation: Activation = "relu",
    diagonal: Literal["direct", "log"] = "direct",
    logit: float | None = None,
    name: str = "glow",
) -> FlowSpec:
    """Glow's multi-scale architecture for images ``(C, H, W)`` (Kingma & Dhariwal 2018,
    arXiv:1807.03039, fig. 2).

    Each of the ``num_scales`` levels is a squeeze, then ``steps`` steps of flow, each an
    :class:`flowbridge.ActNorm`, an invertible 1x1 convolution
    (:class:`flowbridge.Conv1x1`, LU form, ``diagonal`` as it says) and an affine coupling
    with a channel mask (the first half passes) and Glow's sigmoid scale
    ``sigmoid(s + 2)``; every level but the last ends with a factor-out of half the
    channels. Two differences from the paper, stated: the coupling computes
    ``y = x * scale + shift`` (the paper adds the shift before scaling, the same family
    with the shift rescaled), and its conditioner is flowbridge's ResNet
    (:class:`flowbridge.ResNetConditioner`, ``blocks`` residual blocks of ``channels``
    feature maps) where the paper used three convolutions of 512. The 1x1
    convolutions start as the reversal permutation (``lower_upper`` at the identity), not
    a random rotation; initialise the ActNorms from data with
    :func:`flowbridge.actnorm_init`. ``H`` and ``W`` must halve ``num_scales`` times.
    Image flows are not conditional.

    Args:
        event_shape: ``(C, H, W)``, three positive integers.
        num_scales: the number of levels ``L``, a positive integer; default 3.
        steps: the steps of flow per level ``K``, a positive integer; default 4 (the
            paper used 32).
        blocks: each conditioner's residual blocks, a non-negative integer; default 1.
        channels: each conditioner's feature maps, a positive integer; default 64.
        kernel_size: the convolutions' size, an odd positive integer; default 3.
        activation: the conditioners' activation (``"relu"``, the default, ...).
        diagonal: how the 1x1 convolutions store ``U``'s diagonal: ``"direct"`` (default,
            as Pyro and TFP) or ``"log"`` (sign and log-magnitude, the paper's).
        logit: ``None`` (default: no logit layer) or the ``alpha`` of a first
            :class:`flowbridge.Logit` layer, for dequantized data in (0, 1).
        name: the spec's name; default ``"glow"``.

    Returns:
        FlowSpec: the flow; its output shape is ``(C * 4**L, H / 2**L, W / 2**L)``.

    Raises:
        SpecError: an argument is not of the type of the field it fills or breaks its
            rule (the message names the argument), ``H`` or ``W`` does not halve
            ``num_scales`` times (the message names the squeeze), or a size is over a
            ceiling of :func:`flowbridge.limits`.

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.glow((1, 8, 8), num_scales=2, steps=2, channels=8)
        >>> [layer.type for layer in spec.layers[:4]], spec.output_shape
        (['squeeze', 'actnorm', 'conv1x1', 'affine_coupling'], (16, 2, 2))
    """
    shape = _argument("event_shape", tuple[PosInt, PosInt, PosInt], event_shape, _IMAGE_WORDS)
    scales = _argument("num_scales", PosInt, num_scales)
    count = _argument("steps", PosInt, steps)
    net = _fill(ResNetConditioner, blocks=blocks, channels=channels, kernel_size=kernel_size,
                activation=activation)  # fmt: skip
    conv = _fill(Conv1x1, diagonal=diagonal)
    alpha = _argument("logit", _field(Logit, "alpha") | None, logit)
    layers: list[Any] = [] if alpha is None else [Logit(alpha=alpha)]
    for level in range(scales):
        layers.append(Squeeze())
        for _ in range(count):
            layers += [ActNorm(), conv, AffineCoupling(mask=ChannelMask(part="first"),
                                                       conditioner=net, scale=SigmoidScale())]
        if level < scales - 1:
            layers.append(FactorOut())
    return FlowSpec(name=name, event_shape=shape, layers=layers)
