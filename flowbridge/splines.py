"""The rational-quadratic spline (Durkan et al. 2019, arXiv:1906.04032), written once over
the IR: the elementwise map that :class:`flowbridge.SplineCoupling` and
:class:`flowbridge.ElementwiseSpline` apply (:mod:`flowbridge.layers` draws it from its
registry of elementwise maps, beside the shift and the affine map).

Conventions (stated in :class:`flowbridge.RationalQuadraticSpline` too): ``K`` bins on
``[-B, B]``; widths and heights ``min + (1 - min * K) * softmax(u)``; knots the running
sums scaled to ``[-B, B]``, the ends set to ``-B`` and ``B`` exactly; inner derivatives
``min_derivative + softplus(u_d + c)`` with ``c = log(expm1(1 - min_derivative))`` (zero raw
parameters give the identity); edge derivatives 1 or Pyro's ``1 - min_derivative``; the
bin ``sum(v >= knots + eps) - 1`` clamped into ``[0, K - 1]``; identity outside
``[-B, B]``, where the input is replaced by ``-B`` before the formula so that no NaN or
infinity reaches a gradient; the inverse by the quadratic's stable root.
"""

from __future__ import annotations

import math
from typing import Any

from .ir import Value, ops

#: The float32 conformance tolerance a spline layer states (``Plan.tolerances``): its
#: inverse solves a quadratic whose float32 root, and the log-derivative computed from it,
#: reach about 1e-5 against the float64 reference where the bins are narrow, past the 1e-5
#: of :data:`flowbridge.TOLERANCES` (measured: 1.3e-5, JAX's inverse log-det, in
#: ``flowbridge.check`` of two 4-bin spline couplings with a permutation between them and
#: a 4-bin elementwise spline on 4 entries, seed 0; ``tests/test_splines.py`` prints the
#: worst over three random conditional flows, 4.4e-6). float64 keeps 1e-12.
FLOAT32_TOLERANCE = 1e-4


def derivative_offset(spline: Any) -> float:
    """``c = log(expm1(1 - min_derivative))``: the raw inner derivative ``u_d = 0`` gives
    ``min_derivative + softplus(c) = 1``, so zero raw parameters are the identity.

    Args:
        spline: a :class:`flowbridge.RationalQuadraticSpline` or
            :class:`flowbridge.RationalLinearSpline` (its ``min_derivative`` is read).

    Returns:
        ``float``: ``c``; a native spline's raw derivatives ``u`` (``min_derivative +
        softplus(u)``, Pyro's and nflows') are flowbridge's ``u - c``.

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.splines import derivative_offset
        >>> round(derivative_offset(fb.RationalQuadraticSpline()), 6)
        0.539742
    """
    return math.log(math.expm1(1.0 - spline.min_derivative))


def unpack(out: Value, n: int, spline: Any, axis: int = -1) -> tuple[Value, ...]:
    """The raw ``(u_w, u_h, u_d)`` (and the linear spline's ``u_l``) from a conditioner's
    output in the parameter-major layout, stacked along ``axis``: for vectors (``axis``
    -1) ``out`` is ``(..., n * per_entry)`` and the raw parameters ``(n, K)``, ``(n, K)``,
    ``(n, K - 1)``; for images (``axis`` -3, channels) ``out`` is
    ``(..., n * per_entry, H, W)`` and each block, channel-major, becomes
    ``(n, H, W, K)`` (the bins last, where the spline's ops work)."""
    k = spline.bins
    sizes = [("u_widths", k), ("u_heights", k), ("u_derivatives", k - 1)]
    if spline.kind == "rational_linear":
        sizes.append(("u_lambdas", k))
    raw, start = [], 0
    for i, (name, m) in enumerate(sizes):
        stop = None if i == len(sizes) - 1 else start + n * m
        block = ops.slice(out, axis=axis, start=start or None, stop=stop)
        rest = block.shape[len(block.shape) + axis + 1:]  # an image's H, W
        block = ops.reshape(block, shape=(n, m, *rest))
        if rest:  # (n, m, H, W) -> (n, H, W, m)
            block = ops.transpose(block, perm=(0, *range(2, 2 + len(rest)), 1))
        raw.append(ops.name(block, name))
        start += n * m
    return tuple(raw)


def _bins(raw: Value, minimum: float, k: int, bound: float, var: str) -> tuple[Value, Value]:
    """``(sizes, knots)`` of one axis: bin sizes ``(..., K)`` and knots ``(..., K + 1)``
    from -bound to bound (the ends exact)."""
    share = ops.name(minimum + (1.0 - minimum * k) * ops.softmax(raw), f"{var}_share")
    running = ops.name(ops.cumsum(share), f"{var}_running")
    inner = ops.slice(running, axis=-1, start=None, stop=k - 1) * (2.0 * bound) - bound
    knots = ops.pad(ops.pad(inner, before=1, after=0, value=-bound), before=0, after=1,
                    value=bound)  # fmt: skip
    knots = ops.name(knots, f"{var}_knots")
    upper = ops.slice(knots, axis=-1, start=1, stop=None)
    sizes = ops.name(upper - ops.slice(knots, axis=-1, start=None, stop=k), f"{var}_sizes")
    return sizes, knots


def spline(v: Value, raw: tuple[Value, ...], spline: Any, inverse: bool,
           var: str | None = None) -> tuple[Value, Value]:  # fmt: skip
    """The spline (``inverse``: its inverse) of ``v`` ``(..., n)`` under the raw parameters
    ``raw``: ``u_w``, ``u_h`` ``(..., n, K)``, ``u_d`` ``(..., n, K - 1)`` (and the linear
    spline's ``u_l`` ``(..., n, K)``): the output (named ``var``, default ``x_b`` or
    ``y_b``) and the log-derivative of each entry ``(..., n)`` (of the inverse map for the
    inverse)."""
    var = var or ("x_b" if inverse else "y_b")
    u_w, u_h, u_d = raw[:3]
    k, bound = spline.bins, spline.bound
    widths, x_knots = _bins(u_w, spline.min_bin_width, k, bound, "bin_x")
    heights, y_knots = _bins(u_h, spline.min_bin_height, k, bound, "bin_y")
    inner = spline.min_derivative + ops.softplus(u_d + derivative_offset(spline))
    edge = 1.0 if spline.edge_derivative == "one" else 1.0 - spline.min_derivative
    slopes = ops.name(ops.pad(ops.name(inner, "inner_derivatives"), before=1, after=1,
                              value=edge), "derivatives")  # fmt: skip
    inside = ops.name(ops.less_equal(ops.abs(v), bound), "inside")
    safe = ops.name(ops.where(inside, v, -bound), "v_inside")  # tails: a point inside
    edges = y_knots if inverse else x_knots
    edges = ops.name(edges + spline.eps, "search_knots") if spline.eps else edges
    idx = ops.name(ops.bucket(edges, safe), "bin_idx")

    def at(values: Value, name: str) -> Value:
        return ops.name(ops.gather(values, idx), name)

    x_k, w_k = at(x_knots, "x_k"), at(widths, "w_k")
    y_k, h_k = at(y_knots, "y_k"), at(heights, "h_k")
    delta = at(ops.name(heights / widths, "slopes_mean"), "delta_k")
    d_k = at(slopes, "d_k")
    d_k1 = at(ops.slice(slopes, axis=-1, start=1, stop=None), "d_k1")
    if spline.kind == "rational_linear":
        lam = spline.min_lambda + (1.0 - 2.0 * spline.min_lambda) * ops.sigmoid(raw[3])
        out, log_deriv = _linear(safe, at, ops.name(lam, "lambdas"), (x_k, w_k, y_k, h_k),
                                 (delta, d_k, d_k1), inverse)  # fmt: skip
        log_deriv = ops.name(ops.where(inside, log_deriv, 0.0), "log_derivative")
        return ops.name(ops.where(inside, out, v), var), log_deriv
    curve = ops.name(d_k + d_k1 - 2.0 * delta, "curvature")
    if inverse:
        dy = ops.name(safe - y_k, "dy")
        a = ops.name(dy * curve + h_k * (delta - d_k), "a")
        b = ops.name(h_k * d_k - dy * curve, "b")
        c = ops.name(-delta * dy, "c")
        # b^2 - 4ac >= 0 inside the bin; rounding may leave it a hair below zero
        disc = ops.name(ops.relu(b * b - 4.0 * a * c), "discriminant")
        theta = ops.name(2.0 * c / (-b - ops.sqrt(disc)), "theta")
        out = ops.name(theta * w_k + x_k, "x_spline")
    else:
        theta = ops.name((safe - x_k) / w_k, "theta")
    theta_1m = ops.name(theta * (1.0 - theta), "theta_one_minus_theta")
    denominator = ops.name(delta + curve * theta_1m, "denominator")
    if not inverse:
        numerator = h_k * (delta * theta * theta + d_k * theta_1m)
        out = ops.name(y_k + numerator / denominator, "y_spline")
    one_m = 1.0 - theta
    slope_num = delta * delta * (d_k1 * theta * theta + 2.0 * delta * theta_1m + d_k * one_m * one_m)
    log_deriv = ops.log(ops.name(slope_num, "derivative_numerator")) - 2.0 * ops.log(denominator)
    if inverse:
        log_deriv = -log_deriv
    log_deriv = ops.name(ops.where(inside, log_deriv, 0.0), "log_derivative")
    return ops.name(ops.where(inside, out, v), var), log_deriv


def _linear(v: Value, at: Any, lam: Value, bin_: tuple[Value, ...], slopes: tuple[Value, ...],
            inverse: bool) -> tuple[Value, Value]:  # fmt: skip
    """The rational-linear spline's two pieces in the bin of ``v`` (Dolatabadi et al. 2020,
    as Pyro computes them): each piece's numerator and denominator are picked with
    ``where`` before the one division, so the other piece's never reaches a value or a
    gradient."""
    x_k, w_k, y_k, h_k = bin_
    delta, d_k, d_k1 = slopes
    lam_k = at(lam, "lambda_k")
    w_b = ops.name(ops.sqrt(d_k / d_k1), "w_b")
    w_c = ops.name((lam_k * d_k + (1.0 - lam_k) * w_b * d_k1) / delta, "w_c")
    y_b = ops.name(h_k + y_k, "y_k1")
    y_c = ops.name(((1.0 - lam_k) * y_k + lam_k * w_b * y_b) / ((1.0 - lam_k) + lam_k * w_b), "y_c")
    if inverse:
        left = ops.name(ops.less_equal(v, y_c), "left_piece")
        num = ops.where(left, lam_k * (y_k - v), (w_c - lam_k * w_b) * v + lam_k * w_b * y_b - w_c * y_c)
        den = ops.where(left, (w_c - 1.0) * v + y_k - w_c * y_c, (w_c - w_b) * v + w_b * y_b - w_c * y_c)
        theta = ops.name(ops.name(num, "numerator") / ops.name(den, "denominator"), "theta")
        out = ops.name(theta * w_k + x_k, "x_spline")
    else:
        theta = ops.name((v - x_k) / w_k, "theta")
        left = ops.name(ops.less_equal(theta, lam_k), "left_piece")
        num = ops.where(left, y_k * (lam_k - theta) + w_c * y_c * theta,
                        w_c * y_c * (1.0 - theta) + w_b * y_b * (theta - lam_k))  # fmt: skip
        den = ops.where(left, (lam_k - theta) + w_c * theta,
                        w_c * (1.0 - theta) + w_b * (theta - lam_k))  # fmt: skip
        out = ops.name(ops.name(num, "numerator") / ops.name(den, "denominator"), "y_spline")
    slope = ops.where(left, w_c * lam_k * (y_c - y_k), w_b * w_c * (1.0 - lam_k) * (y_b - y_c))
    slope = slope * w_k if inverse else slope / w_k
    log_deriv = ops.log(ops.name(slope, "derivative_numerator")) - 2.0 * ops.log(ops.abs(den))
    return out, log_deriv


DOC = """spline(v): the rational-quadratic spline (Durkan et al. 2019, arXiv:1906.04032) with
    K bins on [-B, B], identity outside; per entry, from raw u_w, u_h (K each), u_d (K - 1):
    widths, heights = min + (1 - min * K) * softmax(u), knots their running sums on [-B, B];
    inner derivatives = min_derivative + softplus(u_d + log(expm1(1 - min_derivative)))
    (zero raw parameters: the identity); bin k = sum(v >= knots + eps) - 1;
    theta = (v - x_k) / w_k,  y = y_k + h_k (delta theta^2 + d_k theta (1 - theta)) / den,
    den = delta + (d_k + d_k1 - 2 delta) theta (1 - theta),  delta = h_k / w_k;
    the inverse takes the quadratic's stable root theta = 2c / (-b - sqrt(b^2 - 4ac))."""


LINEAR_DOC = """spline(v): the rational-linear spline (Dolatabadi et al. 2020, arXiv:2001.05168)
    with K bins on [-B, B], identity outside; bins, knots and derivatives as the
    rational-quadratic spline's, and lambda = min_lambda + (1 - 2 min_lambda) sigmoid(u_l)
    per bin; w_b = sqrt(d_k / d_k1),  w_c = (lambda d_k + (1 - lambda) w_b d_k1) / delta,
    y_c = ((1 - lambda) y_k + lambda w_b y_k1) / ((1 - lambda) + lambda w_b);
    theta = (v - x_k) / w_k <= lambda:  y = (y_k (lambda - theta) + w_c y_c theta)
                                            / ((lambda - theta) + w_c theta),
    else:  y = (w_c y_c (1 - theta) + w_b y_k1 (theta - lambda))
               / (w_c (1 - theta) + w_b (theta - lambda)); the inverse likewise in y."""


def layout(n: int, spline: Any) -> str:
    """The conditioner output's layout in words."""
    k = spline.bins
    lambdas = f" | u_l ({n} x {k})" if spline.kind == "rational_linear" else ""
    return (f"m's {n * spline.per_entry} outputs: [u_w ({n} x {k}) | u_h ({n} x {k}) | "
            f"u_d ({n} x {k - 1}){lambdas}], each entry-major")


def raw_shapes(n: int, spline: Any) -> dict[str, tuple[int, ...]]:
    """The learned raw parameters of an unconditional spline of ``n`` entries."""
    k = spline.bins
    shapes = {"widths": (n, k), "heights": (n, k), "derivatives": (n, k - 1)}
    return {**shapes, "lambdas": (n, k)} if spline.kind == "rational_linear" else shapes


