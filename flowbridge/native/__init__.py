"""Take flows built from Pyro's and TFP's own layers over, exactly: ``(spec, params)``.

Parity (what each native piece becomes):

=========================================  ==============================================
native                                     flowbridge
=========================================  ==============================================
Pyro ``AffineCoupling(split_dim, DenseNN)``  ``affine_coupling``, mask ``split`` first
                                           ``split_dim``, scale ``clamp`` [min, max clip]
                                           (straight-through gradient), conditioner from
                                           ``DenseNN`` (output ``[shift | log_scale]``)
Pyro ``Permute(p)``                        ``permutation`` explicit ``p``
Pyro ``ConditionalAffineCoupling(split_dim, ``affine_coupling`` as above, in a flow of
ConditionalDenseNN)`` (in a                 ``context_dim`` = the hypernet's context size;
``ConditionalComposeTransformModule``)      its first kernel's rows reordered from Pyro's
                                           ``[context | x_a]`` to the neutral
                                           ``[x_a | context]``
Pyro ``SplineCoupling(D, split_dim,        ``spline_coupling``, mask ``split`` first
DenseNN, K, B, order, identity)``          ``split_dim``, spline ``rational_linear``
                                           (``order="linear"``, Pyro's default) or
                                           ``rational_quadratic`` (``bins=K``,
                                           ``bound=B``, edge derivative ``"pyro"``,
                                           ``eps=1e-6``),
                                           conditioner from ``DenseNN`` (output
                                           ``[u_w | u_h | u_d (| u_l)]``, as it is) but
                                           the last bias's ``u_d`` block less ``c`` =
                                           ``log(expm1(1 - min_derivative))``;
                                           ``identity=False`` (its default):
                                           ``passed_spline``, from ``lower_spline``
                                           as ``Spline`` below
Pyro ``Spline(D, K, B, order)``            ``elementwise_spline``, spline as above;
                                           learned ``widths``, ``heights`` (and
                                           ``lambdas``) Pyro's unnormalized ones,
                                           ``derivatives`` Pyro's less ``c``
Pyro ``ConditionalSpline(DenseNN, D, K, B, ``elementwise_spline`` in a flow of
order)`` (``DenseNN`` reading the          ``context_dim`` = the ``DenseNN``'s input
context)                                   size; conditioner from it (reads the context
                                           alone), its ``u_d`` biases less ``c``
TFP ``RealNVP(num_masked=k)``              ``split`` mask: first ``k``, or last ``-k``
TFP ``RealNVP(fraction_masked=f)``         ``split`` of ``int(round(D * |f|))`` (NumPy's
                                           half-to-even), first if ``f > 0`` else last
TFP ``real_nvp_default_template``          conditioner: its hidden layers and activation,
                                           output split ``[shift | log_scale]``, scale
                                           ``exp`` (unclamped)
TFP ``..._template(shift_only=True)``      ``additive_coupling`` (NICE)
TFP ``Permute(p)``                         ``permutation`` explicit ``p``
TFP ``Chain([b2, b1, b0])``                layers ``[b0, b1, b2]`` (Chain applies last-first)
=========================================  ==============================================

Autoregressive layers (Pyro's ``AffineAutoregressive``,
``ConditionalAffineAutoregressive`` and ``SplineAutoregressive``, TFP's ``MaskedAutoregressiveFlow`` with an
``AutoregressiveNetwork``) become autoregressive layers through
:mod:`flowbridge.native.made`, which reads each MADE's order and degrees from its masks.

Anything else (a custom hypernet or ``shift_and_log_scale_fn``, ``bijector_fn``, another
bijector or transform, a conditioner without biases, an unconditional coupling
or ``Spline`` in a conditional flow) is refused with :class:`NativeError` naming the piece
and why.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from .. import backends
from .. import spec as S
from ..errors import SpecError
from . import lu as lu
from . import made as made
from .common import (
    _TORCH_ACTIVATIONS,
    NativeError,
    _pyro_spline,
    _shift_derivative_bias,
    _tf_activation,
)
from .made import from_numpyro_native as from_numpyro_native


# ----------------------------------------------------------------------------- Pyro
def _pyro_parts(transform: Any) -> list:
    if isinstance(transform, (list, tuple)):
        return [p for t in transform for p in _pyro_parts(t)]
    parts = getattr(transform, "parts", None)
    if parts is not None and type(transform).__name__ in ("ComposeTransform", "ComposeTransformModule"):
        return [p for t in parts for p in _pyro_parts(t)]
    if type(transform).__name__ == "ConditionalComposeTransformModule":
        return [p for t in transform.transforms for p in _pyro_parts(t)]
    if type(transform).__name__ == "ConstantConditionalTransform":
        return _pyro_parts(transform.transform)
    return [transform]


def _pyro_conditioner(net: Any, at: str, n_in: int, dims: list[int], context: int | None = None):
    """(conditioner, weights) of a ``DenseNN`` reading ``n_in`` entries with output blocks
    ``dims`` (its ``param_dims``), or (``context`` given) of a ``ConditionalDenseNN``
    reading that many context entries besides."""
    import torch
    from pyro.nn import ConditionalDenseNN, DenseNN

    kind = DenseNN if context is None else ConditionalDenseNN
    if type(net) is not kind:
        raise NativeError(f"{at}.nn: a {type(net).__name__} hypernet cannot be converted; "
                          f"only pyro.nn.{kind.__name__} is supported here")  # fmt: skip
    if list(net.param_dims) != list(dims) or net.input_dim != n_in:
        raise NativeError(f"{at}.nn: expected {kind.__name__}({n_in}, ..., param_dims="
                          f"{list(dims)}), got input_dim={net.input_dim}, param_dims="
                          f"{list(net.param_dims)}")  # fmt: skip
    name = type(net.f).__name__
    if name not in _TORCH_ACTIVATIONS:
        raise NativeError(f"{at}.nn.f: activation {name} cannot be converted; expected one of "
                          f"{', '.join(_TORCH_ACTIVATIONS)}")  # fmt: skip
    if name == "ELU" and net.f.alpha != 1.0:
        raise NativeError(f"{at}.nn.f: ELU(alpha={net.f.alpha}); only alpha=1 is supported")
    if name == "GELU" and net.f.approximate != "none":
        raise NativeError(f"{at}.nn.f: GELU(approximate={net.f.approximate!r}); only the exact "
                          "GELU is supported")  # fmt: skip
    slope = float(net.f.negative_slope) if name == "LeakyReLU" else 0.01
    linears = list(net.layers)
    if not all(isinstance(m, torch.nn.Linear) and m.bias is not None for m in linears):
        raise NativeError(f"{at}.nn: every layer must be a torch.nn.Linear with a bias")
    cond = S.Conditioner(hidden=tuple(net.hidden_dims), activation=_TORCH_ACTIVATIONS[name],
                         negative_slope=slope)  # fmt: skip
    weights = {}
    for j, lin in enumerate(linears):
        kernel = lin.weight.detach().cpu().double().numpy().T.copy()
        if j == 0 and context:  # Pyro reads [context | x_a]; the neutral rows are [x_a | context]
            kernel = np.concatenate([kernel[context:], kernel[:context]])
        weights[f"conditioner.{j}.kernel"] = kernel
        weights[f"conditioner.{j}.bias"] = lin.bias.detach().cpu().double().numpy().copy()
    return cond, weights


def _pyro_param_dims(n: int, spline: Any) -> list[int]:
    """A Pyro spline hypernet's ``param_dims`` for ``n`` entries: ``[n*K, n*K, n*(K-1)]``,
    and ``n*K`` lambdas more for ``order="linear"``."""
    k = spline.bins
    dims = [n * k, n * k, n * (k - 1)]
    return dims + [n * k] if spline.kind == "rational_linear" else dims


def _spline_weights(part: Any, spline: Any) -> dict:
    """The learned raw parameters of a Pyro ``Spline``: its unnormalized widths, heights,
    derivatives (less :func:`flowbridge.splines.derivative_offset`: flowbridge reads
    ``softplus(u + c)`` where Pyro reads ``softplus(u)``) and, for ``order="linear"``,
    lambdas."""
    from ..splines import derivative_offset

    def raw(t: Any) -> np.ndarray:
        return t.detach().cpu().double().numpy().copy()

    out = {"widths": raw(part.unnormalized_widths), "heights": raw(part.unnormalized_heights),
           "derivatives": raw(part.unnormalized_derivatives) - derivative_offset(spline)}
    if spline.kind == "rational_linear":
        out["lambdas"] = raw(part.unnormalized_lambdas)
    return out


def from_pyro_native(
    transform: Any, dim: int | None = None, *, event_shape: Any = None
) -> tuple[S.FlowSpec, dict]:
    """Take a flow built from Pyro's own layers over, exactly, as ``(spec, params)``.

    Each piece becomes one flowbridge layer, in order. An ``AffineCoupling(split_dim,
    DenseNN)`` becomes an ``affine_coupling`` whose ``split`` mask passes the first
    ``split_dim`` entries, whose scale is ``clamp`` to ``[log_scale_min_clip,
    log_scale_max_clip]`` (straight-through gradient) and whose conditioner is the
    ``DenseNN`` (output ``[shift | log_scale]``); a ``Permute(p)`` becomes an explicit
    ``permutation`` ``p``. A
    conditional flow (``ConditionalAffineCoupling`` with a ``ConditionalDenseNN``) gets
    ``context_dim`` = the hypernet's context size, its first kernel's rows reordered from
    Pyro's ``[context | x_a]`` to the neutral ``[x_a | context]``.

    Pyro's splines become rational-linear splines (``order="linear"``, Pyro's default:
    :class:`flowbridge.RationalLinearSpline`) or rational-quadratic ones
    (``order="quadratic"``: :class:`flowbridge.RationalQuadraticSpline`), with
    ``bins=count_bins``, ``bound=bound``, ``edge_derivative="pyro"`` and ``eps=1e-6``: a
    ``SplineCoupling(input_dim, split_dim, DenseNN, count_bins, bound, order,
    identity)`` a ``spline_coupling`` (``split`` mask of the first ``split_dim`` entries,
    conditioner the ``DenseNN``; with ``identity=False``, Pyro's default,
    ``passed_spline=True``, its ``lower_spline`` giving ``a_widths`` ...); a
    ``Spline(input_dim, count_bins, bound, order)`` an ``elementwise_spline`` whose learned ``widths``, ``heights``,
    ``derivatives`` (and ``lambdas``) are Pyro's unnormalized ones; a
    ``ConditionalSpline(DenseNN, input_dim, count_bins, bound, order)`` (the ``DenseNN``
    reading the context, as ``conditional_spline`` builds it) an ``elementwise_spline`` in
    a flow of ``context_dim`` = the ``DenseNN``'s input size. The hypernets' output
    ``[u_w | u_h | u_d (| u_l)]`` (``param_dims=[n*K, n*K, n*(K-1)(, n*K)]``) is
    flowbridge's layout as it is. flowbridge's inner derivative is ``min_derivative +
    softplus(u_d + c)``, Pyro's ``min_derivative + softplus(u_d)``, so every raw derivative
    (a ``Spline``'s ``unnormalized_derivatives``, the ``u_d`` block of a hypernet's last
    bias) is taken over less ``c`` (:func:`flowbridge.splines.derivative_offset`).

    Pyro's autoregressive layers, ``AffineAutoregressive(AutoRegressiveNN(...))`` and
    ``ConditionalAffineAutoregressive(ConditionalAutoRegressiveNN(...))``, become IAF
    ``affine_autoregressive`` layers (the MADE reads the input), scale ``clamp`` to the
    clips, the network's ``permutation`` as the MADE's ``order`` and its hidden degrees
    read from its masks (:func:`flowbridge.native.made.degrees_from_masks`; the masks they
    give are compared with Pyro's); the conditional network's first-layer rows move from
    ``[context | x]`` to the neutral ``[x | context]``. ``SplineAutoregressive`` becomes an
    IAF ``spline_autoregressive``, its spline read as Pyro's other splines and its
    network's parameter-major ``(sum(param_dims), D)`` output reordered to flowbridge's
    entry-major blocks (the raw derivatives' biases less ``c``).

    Pyro's invertible 1x1 convolution, ``GeneralizedChannelPermute`` (LU form, channels
    first), becomes a :class:`flowbridge.Conv1x1` of the image flow ``event_shape``: its
    ``LU`` is ``lower_upper`` as it is (``U``'s diagonal stored directly, as flowbridge's
    default), its permutation matrix ``P`` the indices ``argmax(P[i])``. An image flow
    holds 1x1 convolutions only; ``ConditionalGeneralizedChannelPermute`` (its ``LU`` a
    hypernet's output) is refused.

    The weights are copied as float64; the flow built from the result
    (:func:`flowbridge.to_pyro`, :func:`flowbridge.to_tfp`, :func:`flowbridge.to_numpy`)
    computes what the native one does.

    Args:
        transform: a Pyro ``AffineCoupling`` (with a ``DenseNN`` hypernet),
            ``SplineCoupling`` (either ``order``, either ``identity``, a ``DenseNN``
            hypernet), ``Spline``, ``AffineAutoregressive`` (its ``AutoRegressiveNN``
            without skip connections, ``stable=False``), ``SplineAutoregressive``,
            ``Permute``, a list of them or
            a ``ComposeTransform(Module)``; or the pieces of a conditional flow:
            ``ConditionalAffineCoupling`` (with a ``ConditionalDenseNN``),
            ``ConditionalSpline`` (with a ``DenseNN`` reading the
            context), ``ConditionalAffineAutoregressive`` and ``Permute`` in a list or a ``ConditionalComposeTransformModule``.
            Couplings and permutations must act on the last axis (``dim=-1``).
        dim: the event size ``D``; default ``None``: read from the first coupling
            (``split_dim`` + its hypernet's output, or + its spline's ``input_dim``),
            spline (``input_dim``) or permutation.
        event_shape: an image flow's ``(C, H, W)``, required for
            ``GeneralizedChannelPermute`` pieces (a 1x1 convolution takes any height and
            width); default ``None``: a vector flow.

    Returns:
        ``tuple[FlowSpec, dict[str, numpy.ndarray]]``: the :class:`flowbridge.FlowSpec`
        (named ``"from_pyro"``, event shape ``(dim,)`` or ``event_shape``) and its neutral
        parameters.

    Raises:
        NativeError: a piece cannot be converted (another transform, a hypernet of
            another kind or shape or without biases, an activation other than ReLU,
            Tanh, ELU with ``alpha=1``, LeakyReLU or exact GELU, a ``dim`` other than -1,
            a spline of an ``order`` other than ``"linear"`` and ``"quadratic"``, a
            spline's ``count_bins`` below 2 or ``bound`` out of range, a spline's ``input_dim``
            not fitting the event, an unconditional coupling or ``Spline`` in a
            conditional flow, conditional pieces reading contexts of different sizes),
            ``transform`` holds no piece, the event size cannot be told, or the converted
            flow is not valid.
        ParamError: a native weight is not finite.
        BackendUnavailable: Pyro is not installed (``pip install flowbridge[pyro]``).

    Example:
        >>> import flowbridge as fb
        >>> import torch
        >>> from pyro.distributions.transforms import AffineCoupling, Permute
        >>> from pyro.nn import DenseNN
        >>> coupling = AffineCoupling(2, DenseNN(2, [8], param_dims=[2, 2]))
        >>> spec, params = fb.from_pyro_native([coupling, Permute(torch.tensor([3, 2, 1, 0]))])
        >>> [layer.type for layer in spec.layers], spec.event_shape
        (['affine_coupling', 'permutation'], (4,))
        >>> from pyro.distributions.transforms import Spline
        >>> spec, params = fb.from_pyro_native(Spline(4, count_bins=5, order="quadratic"))
        >>> spec.layers[0].type, spec.layers[0].spline.edge_derivative
        ('elementwise_spline', 'pyro')
        >>> params["layers.0.widths"].shape, params["layers.0.derivatives"].shape
        ((4, 5), (4, 4))
    """
    backends.get("pyro").runtime()  # BackendUnavailable, naming the extra, without Pyro
    from pyro.distributions.transforms import (
        AffineAutoregressive,
        AffineCoupling,
        ConditionalAffineAutoregressive,
        ConditionalAffineCoupling,
        ConditionalSpline,
        Permute,
        Spline,
        SplineAutoregressive,
        SplineCoupling,
    )

    parts = _pyro_parts(transform)
    if not parts:
        raise NativeError("transform: expected at least one AffineCoupling, SplineCoupling, "
                          "Spline or Permute (or their conditional forms)")  # fmt: skip
    if event_shape is not None or any(type(p).__name__ in _PYRO_IMAGE for p in parts):
        return _pyro_image(parts, event_shape)
    if dim is None:
        dim = _pyro_dim(parts)
    context = _pyro_context(parts)
    layers, params = [], {}
    for i, part in enumerate(parts):
        at = f"parts[{i}] ({type(part).__name__})"
        if context and type(part).__name__ in _UNCONDITIONAL:
            what, reads = _UNCONDITIONAL[type(part).__name__]
            raise NativeError(f"{at}: an unconditional {what} in a conditional flow cannot be "
                              f"converted ({reads})")  # fmt: skip
        if isinstance(part, (AffineCoupling, ConditionalAffineCoupling)):
            conditional = isinstance(part, ConditionalAffineCoupling)
            options = part.kwargs if conditional else {
                "dim": part.dim, "log_scale_min_clip": part.log_scale_min_clip,
                "log_scale_max_clip": part.log_scale_max_clip}  # fmt: skip
            if options.get("dim", -1) != -1:
                raise NativeError(f"{at}: dim={options['dim']}; only couplings over the last "
                                  "axis (dim=-1) convert")  # fmt: skip
            split = int(part.split_dim)
            cond, weights = _pyro_conditioner(part.nn, at, split, [dim - split] * 2,
                                              context if conditional else None)  # fmt: skip
            low = options.get("log_scale_min_clip", -5.0)
            high = options.get("log_scale_max_clip", 3.0)
            layers.append(S.AffineCoupling(
                mask=S.SplitMask(part="first", size=split),
                conditioner=cond,
                scale=S.ClampScale(low=float(low), high=float(high)),
            ))  # fmt: skip
            params.update({f"layers.{i}.{k}": v for k, v in weights.items()})
        elif isinstance(part, SplineCoupling):
            spline = _pyro_spline(part.upper_spline, at)
            split, n = int(part.split_dim), int(part.upper_spline.input_dim)
            if split + n != dim:
                raise NativeError(f"{at}: split_dim {split} + {n} transformed entries; "
                                  f"expected an event of {dim}")  # fmt: skip
            cond, weights = _pyro_conditioner(part.upper_spline.nn, f"{at}.upper_spline", split,
                                              _pyro_param_dims(n, spline))  # fmt: skip
            layers.append(S.SplineCoupling(mask=S.SplitMask(part="first", size=split),
                                           conditioner=cond, spline=spline,
                                           passed_spline=not part.identity))  # fmt: skip
            weights = _shift_derivative_bias(weights, n, spline)
            if not part.identity:  # the passed entries' own spline (lower_spline)
                lower = _spline_weights(part.lower_spline, spline)
                weights.update({f"a_{k}": v for k, v in lower.items()})
            params.update({f"layers.{i}.{k}": v for k, v in weights.items()})
        elif isinstance(part, Spline):
            spline = _pyro_spline(part, at)
            if int(part.input_dim) != dim:
                raise NativeError(f"{at}: input_dim={part.input_dim}; expected the event size "
                                  f"{dim}")  # fmt: skip
            layers.append(S.ElementwiseSpline(spline=spline))
            weights = _spline_weights(part, spline)
            params.update({f"layers.{i}.{k}": v for k, v in weights.items()})
        elif isinstance(part, ConditionalSpline):
            spline = _pyro_spline(part, at)
            if int(part.input_dim) != dim:
                raise NativeError(f"{at}: input_dim={part.input_dim}; expected the event size "
                                  f"{dim}")  # fmt: skip
            # the hypernet reads the context alone (DenseNN(context_dim, ...)): no reordering
            cond, weights = _pyro_conditioner(part.nn, at,
                                              context or getattr(part.nn, "input_dim", 0),
                                              _pyro_param_dims(dim, spline))  # fmt: skip
            layers.append(S.ElementwiseSpline(conditioner=cond, spline=spline))
            weights = _shift_derivative_bias(weights, dim, spline)
            params.update({f"layers.{i}.{k}": v for k, v in weights.items()})
        elif isinstance(part, SplineAutoregressive):
            layer, weights = made.pyro_spline_autoregressive(part, at, dim)
            layers.append(layer)
            params.update({f"layers.{i}.{k}": v for k, v in weights.items()})
        elif isinstance(part, (AffineAutoregressive, ConditionalAffineAutoregressive)):
            layer, weights = made.pyro_affine_autoregressive(part, at, dim, context)
            layers.append(layer)
            params.update({f"layers.{i}.{k}": v for k, v in weights.items()})
        elif isinstance(part, Permute):
            if getattr(part, "dim", -1) != -1:
                raise NativeError(f"{at}: dim={part.dim}; only permutations of the last axis "
                                  "convert")  # fmt: skip
            indices = tuple(int(v) for v in part.permutation.tolist())
            layers.append(S.Permutation(kind="explicit", indices=indices))
        else:
            raise NativeError(f"{at}: cannot be converted; expected pyro AffineCoupling (with "
                              "a DenseNN hypernet), ConditionalAffineCoupling (with a "
                              "ConditionalDenseNN), SplineCoupling, Spline or "
                              "ConditionalSpline (DenseNN hypernets), "
                              "AffineAutoregressive, ConditionalAffineAutoregressive, "
                              "SplineAutoregressive or Permute")  # fmt: skip
    return _finish(layers, params, dim, "from_pyro", context)


#: Pyro's pieces that read no context, each refused in a conditional flow: what it is,
#: and why it cannot be converted there.
_COUPLING = ("coupling", "every flowbridge coupling reads the context")
_AUTOREGRESSIVE = ("autoregressive layer", "every flowbridge autoregressive layer reads the "
                   "context")  # fmt: skip
_UNCONDITIONAL = {
    "AffineCoupling": _COUPLING,
    "SplineCoupling": _COUPLING,
    "Spline": ("Spline", "a flowbridge elementwise spline in a conditional flow reads the "
               "context"),
    "AffineAutoregressive": _AUTOREGRESSIVE,
    "SplineAutoregressive": _AUTOREGRESSIVE,
}


#: Pyro's image transforms that convert (an image flow holds these only).
_PYRO_IMAGE = ("GeneralizedChannelPermute", "ConditionalGeneralizedChannelPermute")


def _pyro_image(parts: list, event_shape: Any) -> tuple[S.FlowSpec, dict]:
    """An image flow of ``GeneralizedChannelPermute`` pieces (see :func:`from_pyro_native`)."""
    shape = tuple(event_shape) if isinstance(event_shape, (list, tuple)) else None
    if shape is None or len(shape) != 3 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):  # fmt: skip
        raise NativeError(f"event_shape: expected an image's (C, H, W), three positive "
                          f"integers, for GeneralizedChannelPermute; got {event_shape!r}")  # fmt: skip
    layers, params = [], {}
    for i, part in enumerate(parts):
        at = f"parts[{i}] ({type(part).__name__})"
        if type(part).__name__ != "GeneralizedChannelPermute":
            raise NativeError(f"{at}: cannot be converted in an image flow; expected pyro "
                              "GeneralizedChannelPermute (ConditionalGeneralizedChannelPermute "
                              "computes its LU from the context, which flowbridge's 1x1 "
                              "convolution does not)")  # fmt: skip
        layer, weights = lu.pyro_channel_permute(part, at, shape[0])
        layers.append(layer)
        params.update({f"layers.{i}.{k}": v for k, v in weights.items()})
    return _finish(layers, params, shape, "from_pyro")


def _pyro_context(parts: list) -> int:
    """The flow's ``context_dim``: the context size its conditional pieces read (a
    ``ConditionalAffineCoupling``'s ``ConditionalDenseNN.context_dim``, a
    ``ConditionalSpline``'s ``DenseNN.input_dim``), 0 if none; one size for them all."""
    from pyro.distributions.transforms import ConditionalAffineCoupling, ConditionalSpline
    from pyro.nn import DenseNN

    contexts = set()
    for part in parts:
        if type(part).__name__ == "ConditionalAffineAutoregressive":
            contexts.add(getattr(part.nn, "context_dim", None))
        if isinstance(part, ConditionalAffineCoupling):
            contexts.add(getattr(part.nn, "context_dim", None))
        elif isinstance(part, ConditionalSpline) and type(part.nn) is DenseNN:
            contexts.add(part.nn.input_dim)
    contexts -= {None}
    if len(contexts) > 1:
        raise NativeError(f"transform: the conditional pieces read contexts of sizes "
                          f"{sorted(contexts)}; a flow has one context_dim")  # fmt: skip
    return int(contexts.pop()) if contexts else 0


def _pyro_dim(parts: list) -> int:
    from pyro.distributions.transforms import (
        AffineCoupling,
        ConditionalAffineCoupling,
        ConditionalSpline,
        Permute,
        Spline,
        SplineCoupling,
    )

    for part in parts:
        if isinstance(part, (AffineCoupling, ConditionalAffineCoupling)):
            dims = getattr(part.nn, "param_dims", None)
            if not dims:
                raise NativeError(f"{type(part).__name__}.nn: a {type(part.nn).__name__} "
                                  "hypernet cannot be converted; pass dim= to see why")  # fmt: skip
            return int(part.split_dim) + int(dims[0])
        if isinstance(part, SplineCoupling):
            return int(part.split_dim) + int(part.upper_spline.input_dim)
        if isinstance(part, (Spline, ConditionalSpline)):
            return int(part.input_dim)
        if isinstance(part, Permute):
            return len(part.permutation)
        if type(part).__name__ in ("AffineAutoregressive", "ConditionalAffineAutoregressive",
                                   "SplineAutoregressive"):
            return int((part.nn if hasattr(part, "nn") else part.arn).input_dim)
    raise NativeError("transform: cannot tell the event size; pass dim=")


# ------------------------------------------------------------------------------ TFP
def _template_config(fn: Any, at: str) -> dict:
    func = getattr(fn, "_func", None)
    if func is None or getattr(fn, "_name", None) != "real_nvp_default_template":
        raise NativeError(f"{at}.shift_and_log_scale_fn: a custom function cannot be "
                          "converted; only tfb.real_nvp_default_template is supported")  # fmt: skip
    config = dict(inspect.getclosurevars(func).nonlocals)
    if config.get("args") or any(k not in ("name",) for k in config.get("kwargs", {})):
        raise NativeError(f"{at}.shift_and_log_scale_fn: extra dense-layer arguments "
                          f"{config.get('args') or config.get('kwargs')} cannot be converted")  # fmt: skip
    if not fn.trainable_variables:
        raise NativeError(f"{at}: the template has no variables yet; call the bijector once "
                          "(e.g. bijector.forward(x)) so that it makes them")  # fmt: skip
    return config


def _tfp_parts(bijector: Any) -> list:
    import tensorflow_probability as tfp

    if isinstance(bijector, (list, tuple)):
        return [p for b in bijector for p in _tfp_parts(b)]
    chain = isinstance(bijector, tfp.bijectors.Composition) and "Chain" in type(bijector).__name__
    if chain:  # tfb.Chain, or the _Chain it returns for non-CompositeTensor parts
        return [p for b in reversed(bijector.bijectors) for p in _tfp_parts(b)]
    return [bijector]


def from_tfp_native(bijector: Any, dim: int | None = None) -> tuple[S.FlowSpec, dict]:
    """Take a flow built from TFP's own bijectors over, exactly, as ``(spec, params)``.

    Each piece becomes one flowbridge layer. ``RealNVP(num_masked=k)`` gets a ``split``
    mask of the first ``k`` entries, or the last ``-k``; ``RealNVP(fraction_masked=f)`` a
    ``split`` of ``int(round(D * |f|))`` entries (NumPy's half-to-even), first if
    ``f > 0`` else last. The ``real_nvp_default_template`` conditioner keeps its hidden
    layers and activation, output split ``[shift | log_scale]``, scale ``exp``
    (unclamped): an ``affine_coupling``, or an ``additive_coupling`` (NICE) for
    ``shift_only=True``. ``Permute(p)`` becomes an explicit ``permutation`` ``p``. A
    ``Chain([b2, b1, b0])`` gives layers ``[b0, b1, b2]`` (``Chain`` applies last-first).
    ``MaskedAutoregressiveFlow(shift_and_log_scale_fn=AutoregressiveNetwork(params=2,
    ...))`` becomes a MAF ``affine_autoregressive`` (the MADE reads the output; TFP's
    forward is the ``D``-pass loop), scale ``exp``, the network's input order and hidden
    degrees read from its masks and its ``[D, 2]`` output units reordered to flowbridge's
    ``[shift | s]``. The weights are copied as float64.

    Args:
        bijector: a TFP ``RealNVP`` (its conditioner from ``real_nvp_default_template``,
            called once so its variables exist), a ``MaskedAutoregressiveFlow`` (its
            ``AutoregressiveNetwork`` built, unconditional, with biases), a ``Permute``
            (of the last axis), or a ``Chain`` of them; a list or tuple of them is read in
            its own order.
        dim: the event size ``D``; default ``None``: read from the first ``Permute``,
            ``RealNVP`` that has seen an input, or built ``AutoregressiveNetwork``.

    Returns:
        ``tuple[FlowSpec, dict[str, numpy.ndarray]]``: the :class:`flowbridge.FlowSpec`
        (named ``"from_tfp"``, event shape ``(dim,)``) and its neutral parameters.

    Raises:
        NativeError: a piece cannot be converted (another bijector, a ``bijector_fn``, a
            custom ``shift_and_log_scale_fn``, a template with extra dense-layer
            arguments or not yet called, an activation other than ``tf.nn.relu``,
            ``tf.math.tanh``, ``tf.nn.elu``, ``tf.nn.gelu`` or ``tf.nn.leaky_relu``, a
            ``Permute`` of another axis), ``bijector`` holds no piece, the event size
            cannot be told, or the converted flow is not valid.
        ParamError: a native weight is not finite.
        BackendUnavailable: TensorFlow Probability is not installed
            (``pip install flowbridge[tfp]``).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> from tensorflow_probability import bijectors as tfb
        >>> template = tfb.real_nvp_default_template(hidden_layers=[8])
        >>> nvp = tfb.RealNVP(num_masked=2, shift_and_log_scale_fn=template)
        >>> _ = nvp.forward(np.zeros((1, 4), np.float32))  # the template makes its variables
        >>> spec, params = fb.from_tfp_native(tfb.Chain([tfb.Permute([3, 2, 1, 0]), nvp]))
        >>> [layer.type for layer in spec.layers]  # a Chain applies its list last-first
        ['affine_coupling', 'permutation']
    """
    backends.get("tfp").runtime()  # BackendUnavailable, naming the extra, without TFP
    import tensorflow_probability as tfp

    tfb = tfp.bijectors
    parts = _tfp_parts(bijector)
    if not parts:
        raise NativeError("bijector: expected at least one RealNVP, MaskedAutoregressiveFlow or "
                          "Permute")  # fmt: skip
    if dim is None:
        dim = _tfp_dim(parts)
    layers, params = [], {}
    for i, part in enumerate(parts):
        at = f"bijectors[{i}] ({type(part).__name__})"
        if isinstance(part, tfb.RealNVP):
            layer, weights = _from_real_nvp(part, dim, at)
            layers.append(layer)
            params.update({f"layers.{i}.{k}": v for k, v in weights.items()})
        elif isinstance(part, tfb.MaskedAutoregressiveFlow):
            layer, weights = made.tfp_masked_autoregressive_flow(part, at, dim)
            layers.append(layer)
            params.update({f"layers.{i}.{k}": v for k, v in weights.items()})
        elif isinstance(part, tfb.Permute):
            if int(part.axis) != -1:
                raise NativeError(f"{at}: axis={part.axis}; only the last axis converts")
            indices = tuple(int(v) for v in np.asarray(part.permutation))
            layers.append(S.Permutation(kind="explicit", indices=indices))
        else:
            raise NativeError(f"{at}: cannot be converted; expected tfb.RealNVP, "
                              "tfb.MaskedAutoregressiveFlow or tfb.Permute")  # fmt: skip
    return _finish(layers, params, dim, "from_tfp")


def _tfp_dim(parts: list) -> int:
    import tensorflow_probability as tfp

    for part in parts:
        if isinstance(part, tfp.bijectors.Permute):
            return int(np.asarray(part.permutation).shape[-1])
        if isinstance(part, tfp.bijectors.RealNVP) and part._input_depth is not None:
            return int(part._input_depth)
        made_fn = getattr(part, "_shift_and_log_scale_fn", None)
        if isinstance(made_fn, tfp.bijectors.AutoregressiveNetwork) and made_fn.built:
            return int(made_fn._event_size)
    raise NativeError("bijector: cannot tell the event size; pass dim=")


def _from_real_nvp(part: Any, dim: int, at: str):
    fn = part._shift_and_log_scale_fn
    if fn is None:
        raise NativeError(f"{at}: built with bijector_fn, which cannot be converted; use "
                          "shift_and_log_scale_fn=tfb.real_nvp_default_template(...)")  # fmt: skip
    config = _template_config(fn, at)
    if part._num_masked is not None:
        k = part._num_masked
    else:
        k = int(np.round(dim * part._fraction_masked))
    mask = S.SplitMask(part="first" if k > 0 else "last", size=abs(k))
    activation, slope = _tf_activation(config["activation"], f"{at}.activation")
    cond = S.Conditioner(hidden=tuple(int(h) for h in config["hidden_layers"]),
                         activation=activation, negative_slope=slope)  # fmt: skip
    variables = sorted(fn.trainable_variables, key=lambda v: _dense_index(v.name))
    kernels = [v for v in variables if "kernel" in v.name]
    biases = [v for v in variables if "bias" in v.name]
    if len(kernels) != len(cond.hidden) + 1 or len(biases) != len(kernels):
        raise NativeError(f"{at}: expected {len(cond.hidden) + 1} dense layers with biases in "
                          f"the template, found {len(kernels)} kernels, {len(biases)} biases")  # fmt: skip
    weights = {}
    for j, (kernel, bias) in enumerate(zip(kernels, biases, strict=True)):
        weights[f"conditioner.{j}.kernel"] = np.asarray(kernel.numpy(), dtype=np.float64)
        weights[f"conditioner.{j}.bias"] = np.asarray(bias.numpy(), dtype=np.float64)
    if config.get("shift_only"):
        return S.AdditiveCoupling(mask=mask, conditioner=cond), weights
    return S.AffineCoupling(mask=mask, conditioner=cond, scale=S.ExpScale()), weights


def _dense_index(name: str) -> tuple[int, int]:
    """Order template variables by dense layer: ``dense``, ``dense_1``, ``dense_2``..."""
    layer = next((p for p in name.split("/") if p.startswith("dense")), "dense")
    index = int(layer.split("_")[1]) if "_" in layer else 0
    return index, 0 if "kernel" in name else 1


# ----------------------------------------------------------------------------------
def _finish(
    layers: list, params: dict, dim: int | tuple[int, ...], name: str, context: int = 0
) -> tuple[S.FlowSpec, dict]:
    shape = dim if isinstance(dim, tuple) else (dim,)
    try:
        spec = S.FlowSpec(name=name, event_shape=shape, context_dim=context, layers=layers)
    except SpecError as exc:
        raise NativeError(f"the converted flow is not valid: {exc}") from None
    from ..params import check_params

    return spec, check_params(spec, params)
