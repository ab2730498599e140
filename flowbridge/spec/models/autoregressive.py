"""Autoregressive layers (MAF, IAF) and their MADE conditioner."""

from __future__ import annotations

import math
import typing
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from ...document import show as _show
from . import couplings  # noqa: F401  (the couplings come first in the layer types' listing)
from .fields import Activation, Finite, NonNegInt, PosInt, _Model, _schema_description
from .layer import _LayerModel
from .maps import ExpScale, RationalQuadraticSpline, ScaleMap, SplineMap


class MADE(_Model):
    """The masked autoencoder (MADE, Germain et al. 2015, arXiv:1502.03509) that gives an
    autoregressive layer its parameters: entry ``i``'s outputs read only the entries
    before ``i`` in the autoregressive ``order``.

    Degrees, MADE's bookkeeping: the entry at position ``k`` of ``order`` has degree
    ``k + 1`` (``1..D``) and a context input degree ``0``; each hidden unit has a degree,
    and a hidden unit reads the inputs and units of the layer below whose degree is at
    most its own, an output of entry ``i`` the last hidden units whose degree is below
    ``i``'s. The masks are built once, from the degrees, as constants of the generated
    class; each call multiplies them into the kernels (``where(mask, kernel, 0)``: a
    select of ``in x out`` entries per layer, small beside the matrix product).

    The network is ``[x | c] -> *hidden -> P * D`` (``P`` outputs per entry), the
    activation between the dense layers and none after the last, which starts at zero (the
    layer starts as the identity). Its outputs are parameter-major, ``[P blocks of D]``
    in the event's order for an affine map (``[shift | s]``; Pyro's and NumPyro's layout),
    and the blocks :class:`flowbridge.RationalQuadraticSpline` states for a spline map. An
    output layout is an order of the last layer's units, so a framework that stacks them
    otherwise (TFP's ``[D, P]``) is ported by permuting those units' weights, exactly:
    the spec keeps one layout.

    Attributes:
        hidden: the hidden-layer widths (empty: the masked linear map alone), default
            ``(64, 64)``.
        activation: ``"relu"`` (default), ``"tanh"``, ``"leaky_relu"``, ``"elu"`` or
            ``"gelu"``.
        negative_slope: the slope of ``leaky_relu`` below zero, in ``[0, 1]``, default
            ``0.01``.
        order: the event's entries in autoregressive order (Pyro's and NumPyro's
            ``permutation``): ``order[0]`` depends on nothing, ``order[k]`` on the entries
            before it; a permutation of ``0..D-1``; ``None`` (the default): ``0..D-1``,
            left to right (TFP's ``input_order="left-to-right"``).
        degrees: the hidden units' degrees: ``"equal"`` (the default; TFP's
            ``hidden_degrees="equal"``, ``max(m, ceil(j (D - 1) / (H + 1)))`` for unit
            ``j = 1..H`` of a layer of ``H``, ``m`` the smallest degree below, capped at
            ``D - 1``; in a flow with a context ``max(m, ceil(j D / (H + 1)) - 1)``, from
            0, so that units reading the context alone reach the first entry, whose
            parameters would otherwise be constants), ``"pyro"`` (Pyro's rule,
            ``round(linspace(1, D - 1, H))``, and
            ``round(linspace(1, D, H)) - 1`` in a flow with a context, in float64), or one
            tuple of non-negative ints per hidden layer (a native's own, TFP's
            ``"random"`` draws say: a port stores the degrees the native used).

    Example:
        >>> import flowbridge as fb
        >>> made = fb.MADE(hidden=(4,), order=(2, 0, 1))
        >>> made.input_degrees(3), made.hidden_degrees(3)
        ([2, 3, 1], [[1, 1, 2, 2]])
        >>> fb.FlowSpec(event_shape=(2,), layers=[fb.AffineAutoregressive(conditioner=made)])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].conditioner.order: expected a permutation of 0..1, got [2, 0, 1]
    """

    model_config = _schema_description(
        """The masked autoencoder (MADE, arXiv:1502.03509) of an autoregressive layer:
        entry ``i``'s outputs read only the entries before ``i`` in ``order``; hidden
        units' ``degrees`` ``"equal"`` (TFP's rule), ``"pyro"`` or explicit."""
    )

    hidden: tuple[PosInt, ...] = (64, 64)
    activation: Activation = "relu"
    negative_slope: Annotated[Finite, Field(ge=0, le=1)] = 0.01  # leaky_relu only
    order: tuple[NonNegInt, ...] | None = None
    degrees: Literal["equal", "pyro"] | tuple[tuple[NonNegInt, ...], ...] = "equal"

    def input_degrees(self, dim: int) -> list[int]:
        """Each event entry's degree, ``1..D``, in the event's order.

        Args:
            dim: the event size ``D``.

        Returns:
            ``list[int]``: entry ``i``'s degree, its position in ``order`` plus one.

        Example:
            >>> import flowbridge as fb
            >>> fb.MADE(order=(1, 2, 0)).input_degrees(3)
            [3, 1, 2]
        """
        order = range(dim) if self.order is None else self.order
        degrees = [0] * dim
        for position, entry in enumerate(order):
            degrees[entry] = position + 1
        return degrees

    def hidden_degrees(self, dim: int, context: int = 0) -> list[list[int]]:
        """Each hidden layer's unit degrees, for events of ``dim`` entries.

        Args:
            dim: the event size ``D``.
            context: the size of the context the MADE reads; default 0. The named rules
                differ with one: their degrees then start at 0 (units that read the
                context alone).

        Returns:
            ``list[list[int]]``: one list per hidden layer, a degree per unit.

        Example:
            >>> import flowbridge as fb
            >>> made = fb.MADE(hidden=(4,))
            >>> made.hidden_degrees(3), made.hidden_degrees(3, context=2)
            ([[1, 1, 2, 2]], [[0, 1, 1, 2]])
        """
        if not isinstance(self.degrees, str):
            return [list(layer) for layer in self.degrees]
        out: list[list[int]] = []
        if self.degrees == "pyro":
            for units in self.hidden:
                if context:
                    out.append([round(v) - 1 for v in np.round(np.linspace(1, dim, units))])
                else:
                    out.append([round(v) for v in np.round(np.linspace(1, dim - 1, units))])
            return out
        below = 0 if context else 1  # the smallest input degree
        for units in self.hidden:
            floor = min(below, dim - 1)
            if context:  # degrees 0..D-1: some units read the context alone
                layer = [max(floor, math.ceil(j * dim / (units + 1)) - 1)
                         for j in range(1, units + 1)]  # fmt: skip
            else:
                layer = [max(floor, math.ceil(j * (dim - 1) / (units + 1)))
                         for j in range(1, units + 1)]  # fmt: skip
            out.append(layer)
            below = min(layer)
        return out

    def check(self, dim: int, at: str) -> list[tuple[str, str]]:
        """The rules against an event of ``dim`` entries."""
        if self.order is not None and sorted(self.order) != list(range(dim)):
            return [(f"{at}.order", f"expected a permutation of 0..{dim - 1}, got "
                     f"{_show(list(self.order))}")]  # fmt: skip
        if isinstance(self.degrees, str):
            return []
        if len(self.degrees) != len(self.hidden):
            return [(f"{at}.degrees", f"expected one tuple of degrees per hidden layer "
                     f"({len(self.hidden)}), got {len(self.degrees)}")]  # fmt: skip
        for j, (layer, units) in enumerate(zip(self.degrees, self.hidden, strict=True)):
            if len(layer) != units:
                return [(f"{at}.degrees[{j}]", f"expected {units} degrees (one per unit of "
                         f"hidden layer {j}), got {len(layer)}")]  # fmt: skip
        return []


class _Autoregressive(_LayerModel):
    conditioner: MADE = Field(default_factory=MADE)
    direction: Literal["maf", "iaf"] = "maf"
    ranks: typing.ClassVar[tuple[int, ...]] = (1,)

    def _per_entry(self) -> int:
        return 2

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        return self.conditioner.check(shape[0], f"{at}.conditioner")

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        sizes = [shape[0] + context_dim, *self.conditioner.hidden, shape[0] * self._per_entry()]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


_DIRECTIONS = """``direction`` says which side the MADE reads. ``"maf"`` (the default; Papamakarios et
    al. 2017, arXiv:1705.07057, TFP's ``MaskedAutoregressiveFlow``): it reads the output
    ``y``, so the inverse (a density's direction) is one pass and the forward (sampling)
    ``D`` passes. ``"iaf"`` (Kingma et al. 2016, arXiv:1606.04934, Pyro's
    ``AffineAutoregressive``, NumPyro's ``InverseAutoregressiveTransform``): it reads the
    input ``x``, so the forward is one pass and the inverse ``D`` passes. The ``D``-pass
    direction is one loop in the generated code (a Python loop in torch and NumPy,
    ``tf.while_loop``, ``jax.lax.fori_loop``): ``D - 1`` steps from the input, each
    recomputing every entry from the last, then one more for the log-det (after step
    ``k`` the first ``k`` entries in ``order`` are exact)."""


class AffineAutoregressive(_Autoregressive):
    """An affine autoregressive layer, MAF or IAF: ``y_i = x_i * exp(log_scale_i) +
    shift_i``, entry ``i``'s ``[shift_i | s_i]`` from a :class:`flowbridge.MADE` that reads
    the entries before ``i`` in its ``order``, the scale map turning ``s`` into
    ``log_scale`` as in :class:`flowbridge.AffineCoupling`; log-det ``sum(log_scale)``.

    {directions}

    Attributes:
        type: ``"affine_autoregressive"``, the tag that picks this layer in a spec's dict.
        conditioner: the :class:`flowbridge.MADE` (default ``MADE()``); in a flow with a
            context it reads ``[v | c]`` (every hidden unit of its first layer sees ``c``:
            Pyro's ``ConditionalAutoRegressiveNN``).
        scale: the scale map (:class:`flowbridge.ExpScale`, default, TFP's MAF;
            :class:`flowbridge.ClampScale` with its defaults is Pyro's and NumPyro's
            ``clamp(s, -5, 3)``).
        direction: ``"maf"`` (default) or ``"iaf"``, as above.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> layer = fb.AffineAutoregressive(conditioner=fb.MADE(hidden=(8,)))
        >>> spec = fb.FlowSpec(event_shape=(3,), layers=[layer])
        >>> flow = fb.to_numpy(spec, fb.init_params(spec, init="random"))
        >>> y, log_det = flow.forward_with_log_det(np.ones((2, 3)))  # D passes
        >>> x, inverse_log_det = flow.inverse_with_log_det(y)  # one pass
        >>> bool(np.allclose(x, 1.0)), bool(np.allclose(log_det, -inverse_log_det))
        (True, True)
    """

    model_config = _schema_description(
        """An affine autoregressive layer (MAF, arXiv:1705.07057; IAF, arXiv:1606.04934):
        ``y_i = x_i * scale(s_i) + shift_i`` with ``[shift | s]`` from a MADE reading
        ``y`` (``direction: maf``) or ``x`` (``iaf``) before ``i``; log-det
        ``sum(log scale)``."""
    )

    type: Literal["affine_autoregressive"] = "affine_autoregressive"
    scale: ScaleMap = Field(default_factory=ExpScale)

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        errors = super().check(shape, at)
        if self.scale.kind == "clamp" and not self.scale.low < self.scale.high:
            errors.append((f"{at}.scale.high", f"expected a value > low ({self.scale.low}), "
                           f"got {self.scale.high}"))  # fmt: skip
        return errors


class SplineAutoregressive(_Autoregressive):
    """A neural spline autoregressive layer (Durkan et al. 2019, arXiv:1906.04032; Pyro's
    ``SplineAutoregressive``): ``y_i = spline(x_i; raw_i)``, entry ``i``'s raw spline
    parameters (``3K - 1`` each, in the layout :class:`flowbridge.RationalQuadraticSpline`
    states) from a :class:`flowbridge.MADE` that reads the entries before ``i``; log-det
    the sum of the spline's log-derivatives.

    {directions}

    Attributes:
        type: ``"spline_autoregressive"``, the tag that picks this layer in a spec's dict.
        conditioner: the :class:`flowbridge.MADE` (default ``MADE()``).
        spline: the spline map: :class:`flowbridge.RationalQuadraticSpline` (default) or
            :class:`flowbridge.RationalLinearSpline`.
        direction: ``"maf"`` (default) or ``"iaf"``, as above.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> made = fb.MADE(hidden=(8,))
        >>> layer = fb.SplineAutoregressive(conditioner=made, direction="iaf")
        >>> spec = fb.FlowSpec(event_shape=(3,), layers=[layer])
        >>> flow = fb.to_numpy(spec, fb.init_params(spec, init="random"))
        >>> x = np.array([[0.5, -1.0, 2.0]])
        >>> bool(np.allclose(flow.inverse(flow.forward(x)), x))
        True
    """

    model_config = _schema_description(
        """A neural spline autoregressive layer (arXiv:1906.04032): a rational-quadratic
        spline per entry, its raw parameters from a MADE reading ``y`` (``direction:
        maf``) or ``x`` (``iaf``) before the entry."""
    )

    type: Literal["spline_autoregressive"] = "spline_autoregressive"
    spline: SplineMap = Field(default_factory=RationalQuadraticSpline)

    def _per_entry(self) -> int:
        return self.spline.per_entry


for _model in (AffineAutoregressive, SplineAutoregressive):
    _model.__doc__ = _model.__doc__.replace("{directions}", _DIRECTIONS)
