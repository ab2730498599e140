"""The maps a layer applies to each transformed entry: the affine coupling's scale maps
and the spline maps."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from ...limits import F32_TINY
from .fields import Finite, PosInt, _constant, _Model, _schema_description


class ExpScale(_Model):
    """The exponential scale map: ``scale = exp(s)``, log-scale ``s``.

    The scale of RealNVP (arXiv:1605.08803) and of TFP's ``RealNVP``: an affine coupling
    computes ``y_b = x_b * scale + shift`` from the conditioner's raw output ``s``, with
    log-det ``sum(s)`` over the transformed entries. It is the default scale map of an
    :class:`flowbridge.AffineCoupling`.

    Attributes:
        kind: ``"exp"``, the tag that picks this scale map in a spec's dict (a dict must
            give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> layers = [{"type": "affine_coupling", "scale": {"kind": "exp"}}]
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers}).layers[0].scale
        ExpScale(kind='exp')
        >>> fb.AffineCoupling().scale == fb.ExpScale()
        True
    """

    model_config = _schema_description(
        "``scale = exp(s)``, log-scale ``s`` (RealNVP, TFP's ``RealNVP``)."
    )

    kind: Literal["exp"] = "exp"


class ClampScale(_Model):
    """The clamped scale map: ``scale = exp(clamp(s, low, high))``.

    The log-scale is the conditioner's raw output ``s`` clamped to ``[low, high]``, with the
    gradient passed straight through the clamp (Pyro's ``AffineCoupling`` with
    ``log_scale_min_clip=-5``, ``log_scale_max_clip=3``, the defaults here). The flow
    checks ``low < high``.

    Attributes:
        kind: ``"clamp"``, the tag that picks this scale map in a spec's dict.
        low: the lowest log-scale, default ``-5.0``; 0 or a magnitude in float32's normal
            range ``[1.175494e-38, 3.402823e+38]``.
        high: the highest log-scale, default ``3.0``; the same range, and above ``low``.

    Example:
        >>> import flowbridge as fb
        >>> scale = {"kind": "clamp", "low": -2.0, "high": 2.0}
        >>> layers = [{"type": "affine_coupling", "scale": scale}]
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers}).layers[0].scale
        ClampScale(kind='clamp', low=-2.0, high=2.0)
        >>> scale["high"] = -3.0
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers})
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].scale.high: expected a value > low (-2.0), got -3.0
    """

    model_config = _schema_description(
        """``scale = exp(clamp(s, low, high))``, gradient passed straight through the clamp
        (Pyro's ``AffineCoupling`` with ``log_scale_min_clip=-5``, ``log_scale_max_clip=3``)."""
    )

    kind: Literal["clamp"] = "clamp"
    low: Finite = -5.0
    high: Finite = 3.0


class SoftClampScale(_Model):
    """The soft-clamped scale map: ``scale = exp(c * tanh(s / c))`` with ``c = bound``.

    The log-scale ``c * tanh(s / c)`` is a smooth clamp of the conditioner's raw output
    ``s`` to ``(-c, c)``.

    Attributes:
        kind: ``"soft_clamp"``, the tag that picks this scale map in a spec's dict.
        bound: ``c``, default ``3.0``; a number in ``[1.175494e-38, 8.507059e+37]`` (both
            ``bound`` and ``1 / bound`` are written into the generated code, so both must be
            float32 normals).

    Example:
        >>> import flowbridge as fb
        >>> layers = [{"type": "affine_coupling", "scale": {"kind": "soft_clamp"}}]
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers}).layers[0].scale
        SoftClampScale(kind='soft_clamp', bound=3.0)
        >>> fb.SoftClampScale(bound=0.0)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: bound: expected a number in [1.175494e-38, ...], got 0.0
    """

    model_config = _schema_description(
        "``scale = exp(c * tanh(s / c))`` with ``c = bound``: a smooth clamp to (-c, c)."
    )

    kind: Literal["soft_clamp"] = "soft_clamp"
    # 1 / bound is written into the code too, so both must be float32 normals
    bound: _constant(F32_TINY, 1.0 / F32_TINY, positive=True) = 3.0


class SigmoidScale(_Model):
    """Glow's scale map: ``scale = sigmoid(s + offset)``, log-scale ``log_sigmoid(s + offset)``.

    Glow (arXiv:1807.03039) uses offset 2: ``scale = sigmoid(s + 2)``, log-scale
    ``log_sigmoid(s + 2)``, a scale in (0, 1). flowbridge keeps RealNVP's order
    ``y = x * scale + shift`` for every scale map; Glow's code adds the shift before
    scaling, which is the same family under another weighting.

    Attributes:
        kind: ``"sigmoid"``, the tag that picks this scale map in a spec's dict.
        offset: added to ``s`` before the sigmoid, default ``2.0``; 0 or a magnitude in
            float32's normal range ``[1.175494e-38, 3.402823e+38]``.

    Example:
        >>> import flowbridge as fb
        >>> layers = [{"type": "affine_coupling", "scale": {"kind": "sigmoid"}}]
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers}).layers[0].scale
        SigmoidScale(kind='sigmoid', offset=2.0)
        >>> fb.SigmoidScale(offset=float("nan"))
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: offset: expected a finite number, got nan
    """

    model_config = _schema_description(
        """Glow's ``scale = sigmoid(s + offset)`` (offset 2), log-scale ``log_sigmoid(s + 2)``.

        flowbridge keeps RealNVP's order ``y = x * scale + shift`` for every scale map; Glow's
        code adds the shift before scaling, which is the same family under another weighting.
        """
    )

    kind: Literal["sigmoid"] = "sigmoid"
    offset: Finite = 2.0


class SoftplusScale(_Model):
    """nflows' scale map (sbi's ``maf``): ``scale = softplus(s) + eps``, log-scale
    ``log(softplus(s) + eps)``.

    The scale never falls below ``eps`` and grows linearly, not exponentially, with ``s``:
    nflows' ``MaskedAffineAutoregressiveTransform`` uses it with ``eps = 1e-3``. At
    ``s = 0`` the scale is ``log(2) + eps``, not 1: a layer with this map does not start at
    the identity.

    Attributes:
        kind: ``"softplus"``, the tag that picks this scale map in a spec's dict.
        eps: the scale's floor, default ``1e-3``; a number in ``[1.175494e-38, 1]``.

    Example:
        >>> import flowbridge as fb
        >>> layers = [{"type": "affine_coupling", "scale": {"kind": "softplus"}}]
        >>> fb.FlowSpec.from_dict({"event_shape": [4], "layers": layers}).layers[0].scale
        SoftplusScale(kind='softplus', eps=0.001)
        >>> fb.SoftplusScale(eps=0.0)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: eps: expected a number in [1.175494e-38, 1], got 0.0
    """

    model_config = _schema_description(
        "nflows' ``scale = softplus(s) + eps`` (eps 1e-3), log-scale ``log(softplus(s) + eps)``."
    )

    kind: Literal["softplus"] = "softplus"
    eps: _constant(F32_TINY, 1.0, positive=True) = 1e-3


ScaleMap = Annotated[
    ExpScale | ClampScale | SoftClampScale | SigmoidScale | SoftplusScale,
    Field(discriminator="kind"),
]


class _Spline(_Model):
    """What the rational splines share: their bins, interval, minima and bin search."""

    kind: str  # each spline narrows it to its tag; declared here so it comes first
    bins: Annotated[PosInt, Field(ge=2, le=256)] = 8
    bound: _constant(1e-3, 1e6, positive=True) = 3.0
    min_bin_width: _constant(1e-8, 0.5, positive=True) = 1e-3
    min_bin_height: _constant(1e-8, 0.5, positive=True) = 1e-3
    min_derivative: _constant(1e-8, 0.5, positive=True) = 1e-3
    edge_derivative: Literal["one", "pyro"] = "one"
    eps: _constant(1e-12, 1e-2) = 0.0

    @field_validator("eps")
    @classmethod
    def _eps_not_negative(cls, value: float) -> float:
        if value < 0:
            raise PydanticCustomError("constant", "expected 0 or a number in [1e-12, 0.01], "
                                      "got {got}", {"got": value})
        return value

    @field_validator("min_bin_width", "min_bin_height")
    @classmethod
    def _bins_fit(cls, value: float, info: ValidationInfo) -> float:
        bins = info.data.get("bins")
        if bins is not None and bins * value >= 1.0:
            raise PydanticCustomError("constant", "expected a value below 1 / bins = {limit}, "
                                      "got {got}", {"limit": 1.0 / bins, "got": value})
        return value

    @property
    def per_entry(self) -> int:
        """Raw parameters per transformed entry: ``3K - 1`` (``4K - 1`` for the linear
        spline's extra ``lambda`` per bin)."""
        return 3 * self.bins - 1


class RationalQuadraticSpline(_Spline):
    """The rational-quadratic spline map of a neural spline flow (Durkan et al. 2019,
    arXiv:1906.04032), elementwise and monotonic, as Pyro's, TFP's and nflows' splines.

    Each transformed entry gets ``K = bins`` bins on ``[-B, B]`` (``B = bound``) from its
    raw parameters, ``3K - 1`` per entry: bin widths ``w = min_bin_width + (1 -
    min_bin_width * K) * softmax(u_w)``, heights likewise from ``u_h`` (the knots their
    running sums, scaled to ``[-B, B]``, the ends set to ``-B`` and ``B`` exactly), and the
    derivatives at the ``K - 1`` inner knots ``d = min_derivative + softplus(u_d + c)``
    with ``c = log(expm1(1 - min_derivative))``, so that a zero ``u_d`` gives ``d = 1``:
    with zero raw parameters (a conditioner whose last layer starts at zero) the spline is
    the identity. Outside ``[-B, B]`` the map is the identity (linear tails), log-det 0;
    inputs there are replaced by ``-B`` before the spline's formula, so gradients stay
    finite. The bin of ``x`` is ``sum(x >= knots + eps) - 1``, clamped into ``[0, K - 1]``
    (Pyro's search, with its ``eps`` an option). The inverse solves the bin's quadratic by its stable root
    ``2c / (-b - sqrt(b^2 - 4ac))``.

    The conditioner's output layout, for ``n`` transformed entries, is parameter-major
    (Pyro's): ``[u_w (n * K) | u_h (n * K) | u_d (n * (K - 1))]``, each block
    entry-major (entry ``i``'s bins at ``i * K ... i * K + K - 1``).

    Attributes:
        kind: ``"rational_quadratic"``, the tag that picks this map in a spec's dict.
        bins: ``K``, the number of bins; default 8.
        bound: ``B``, the half-width of the interval; default 3.0.
        min_bin_width: the smallest bin width, as a fraction of ``2B``; default 1e-3,
            below ``1 / bins``.
        min_bin_height: the smallest bin height, likewise; default 1e-3.
        min_derivative: the smallest derivative at a knot; default 1e-3.
        edge_derivative: the derivative at ``-B`` and ``B``: ``"one"`` (1, the default, as
            TFP and nflows/sbi: the spline joins the identity tails smoothly) or
            ``"pyro"`` (``1 - min_derivative``, Pyro's padding).
        eps: the bin search's epsilon (added to the knots): 0 (the default), so the
            forward and the inverse put a point and its image in the same bin and the
            inverse returns the point; Pyro's 1e-6 (set by
            :func:`flowbridge.from_pyro_native`) puts inputs less than ``eps`` above a
            knot in the bin below, where its inverse, searching the image among the
            heights, may not (round trips off by 4e-8 and log-dets by 7e-3 in
            ``tests/test_splines.py``; by up to 1.5e-7 and 0.09 over 1e5 random inputs).

    Example:
        >>> import flowbridge as fb
        >>> fb.RationalQuadraticSpline(bins=4).bins
        4
        >>> fb.RationalQuadraticSpline(bins=200, min_bin_width=0.01)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: min_bin_width: expected a value below 1 / bins = 0.005, got 0.01
    """

    model_config = _schema_description(
        """A monotonic rational-quadratic spline (arXiv:1906.04032) with ``bins`` bins on
        ``[-bound, bound]``, identity tails; ``3 * bins - 1`` raw parameters per entry."""
    )

    kind: Literal["rational_quadratic"] = "rational_quadratic"


class RationalLinearSpline(_Spline):
    """The rational-linear spline map (Dolatabadi et al. 2020, arXiv:2001.05168): Pyro's
    ``Spline(order="linear")``, its default.

    Bins, knots, derivatives, tails and the bin search as
    :class:`flowbridge.RationalQuadraticSpline`; each bin is two rational-linear pieces
    that meet at ``lambda_k * w_k`` into the bin, with ``lambda = min_lambda + (1 - 2 *
    min_lambda) * sigmoid(u_l)`` from a fourth raw parameter per bin (a zero ``u_l`` gives
    0.5, and zero raw parameters the identity). With ``w_b = sqrt(d_k / d_{k+1})``,
    ``w_c = (lambda d_k + (1 - lambda) w_b d_{k+1}) / delta_k`` and the junction height
    ``y_c = ((1 - lambda) y_k + lambda w_b y_{k+1}) / ((1 - lambda) + lambda w_b)``, the
    forward at ``theta = (x - x_k) / w_k`` is ``(y_k (lambda - theta) + w_c y_c theta) /
    ((lambda - theta) + w_c theta)`` for ``theta <= lambda``, else ``(w_c y_c (1 - theta)
    + w_b y_{k+1} (theta - lambda)) / (w_c (1 - theta) + w_b (theta - lambda))``; the
    inverse is the same kind of ratio in ``y`` (no root to take). Each piece is picked
    before its division, so the other piece's denominator never reaches a value or a
    gradient.

    The conditioner's output layout: ``[u_w (n * K) | u_h (n * K) | u_d (n * (K - 1)) |
    u_l (n * K)]``, parameter-major, each block entry-major (Pyro's).

    Attributes:
        kind: ``"rational_linear"``, the tag that picks this map in a spec's dict.
        bins: ``K``, the number of bins; default 8.
        bound: ``B``, the half-width of the interval; default 3.0.
        min_bin_width: the smallest bin width, as a fraction of ``2B``; default 1e-3.
        min_bin_height: the smallest bin height, likewise; default 1e-3.
        min_derivative: the smallest derivative at a knot; default 1e-3.
        edge_derivative: ``"one"`` (default) or ``"pyro"``, as
            :class:`flowbridge.RationalQuadraticSpline`'s.
        eps: the bin search's epsilon, as :class:`flowbridge.RationalQuadraticSpline`'s;
            default 0.
        min_lambda: the smallest ``lambda`` (and ``1 -`` the largest); default 0.025
            (Pyro's).

    Example:
        >>> import flowbridge as fb
        >>> spline = fb.RationalLinearSpline(bins=4, edge_derivative="pyro")
        >>> spline.per_entry  # 4 raw parameters per bin, less one derivative
        15
    """

    model_config = _schema_description(
        """A monotonic rational-linear spline (arXiv:2001.05168; Pyro's default spline) with
        ``bins`` bins on ``[-bound, bound]``, identity tails; ``4 * bins - 1`` raw parameters
        per entry."""
    )

    kind: Literal["rational_linear"] = "rational_linear"
    min_lambda: _constant(1e-6, 0.49, positive=True) = 0.025

    @property
    def per_entry(self) -> int:
        """Raw parameters per transformed entry: ``4K - 1``."""
        return 4 * self.bins - 1


def _spline_kind(value: Any) -> str | None:
    """A spline's ``kind``; a dict without one is the rational-quadratic spline."""
    if isinstance(value, dict):
        return value.get("kind", "rational_quadratic")
    return getattr(value, "kind", None)


#: The spline maps a spline layer takes, by their ``kind`` (``rational_quadratic`` where a
#: dict leaves it out).
SplineMap = Annotated[
    Annotated[RationalQuadraticSpline, Tag("rational_quadratic")]
    | Annotated[RationalLinearSpline, Tag("rational_linear")],
    Discriminator(_spline_kind),
]
