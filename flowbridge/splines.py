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

from . import spec as S
from .ir import Value, ops

#: The float32 conformance tolerance a spline layer states (``Plan.tolerances``): its
#: inverse solves a quadratic whose float32 root, and the log-derivative computed from it,
#: reach a few 1e-5 against the float64 reference where the bins are narrow (measured: up
#: to 1.3e-5 on random weights, ``tests/test_splines.py``), past the 1e-5 of
#: :data:`flowbridge.TOLERANCES`. float64 keeps 1e-12.
FLOAT32_TOLERANCE = 1e-4


def derivative_offset(spline: S.RationalQuadraticSpline) -> float:
    """``c = log(expm1(1 - min_derivative))``: the raw inner derivative ``u_d = 0`` gives
    ``min_derivative + softplus(c) = 1``, so zero raw parameters are the identity.

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.splines import derivative_offset
        >>> round(derivative_offset(fb.RationalQuadraticSpline()), 6)
        0.539742
    """
    return math.log(math.expm1(1.0 - spline.min_derivative))


def unpack(out: Value, n: int, spline: S.RationalQuadraticSpline) -> tuple[Value, Value, Value]:
    """The raw ``(u_w, u_h, u_d)``, shaped ``(n, K)``, ``(n, K)``, ``(n, K - 1)``, from a
    conditioner's output ``(..., n * (3K - 1))`` in the parameter-major layout."""
    k = spline.bins
    cuts = ((None, n * k, (n, k), "u_widths"), (n * k, 2 * n * k, (n, k), "u_heights"),
            (2 * n * k, None, (n, k - 1), "u_derivatives"))  # fmt: skip
    return tuple(ops.name(ops.reshape(ops.slice(out, axis=-1, start=a, stop=b), shape=shape),
                          name) for a, b, shape, name in cuts)  # fmt: skip


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


def spline(v: Value, u_w: Value, u_h: Value, u_d: Value, spline: S.RationalQuadraticSpline,
           inverse: bool) -> tuple[Value, Value]:  # fmt: skip
    """The spline (``inverse``: its inverse) of ``v`` ``(..., n)`` under the raw parameters
    ``u_w``, ``u_h`` ``(..., n, K)`` and ``u_d`` ``(..., n, K - 1)``: the output and the
    log-derivative of each entry ``(..., n)`` (of the inverse map for the inverse)."""
    k, bound = spline.bins, spline.bound
    widths, x_knots = _bins(u_w, spline.min_bin_width, k, bound, "bin_x")
    heights, y_knots = _bins(u_h, spline.min_bin_height, k, bound, "bin_y")
    inner = spline.min_derivative + ops.softplus(u_d + derivative_offset(spline))
    edge = 1.0 if spline.edge_derivative == "one" else 1.0 - spline.min_derivative
    slopes = ops.name(ops.pad(ops.name(inner, "inner_derivatives"), before=1, after=1,
                              value=edge), "derivatives")  # fmt: skip
    inside = ops.name(ops.less_equal(ops.abs(v), bound), "inside")
    safe = ops.name(ops.where(inside, v, -bound), "v_inside")  # tails: a point inside
    edges = ops.name((y_knots if inverse else x_knots) + spline.eps, "search_knots")
    idx = ops.name(ops.bucket(edges, safe), "bin_idx")

    def at(values: Value, name: str) -> Value:
        return ops.name(ops.gather(values, idx), name)

    x_k, w_k = at(x_knots, "x_k"), at(widths, "w_k")
    y_k, h_k = at(y_knots, "y_k"), at(heights, "h_k")
    delta = at(ops.name(heights / widths, "slopes_mean"), "delta_k")
    d_k = at(slopes, "d_k")
    d_k1 = at(ops.slice(slopes, axis=-1, start=1, stop=None), "d_k1")
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
    return ops.name(ops.where(inside, out, v), "x_b" if inverse else "y_b"), log_deriv


DOC = """spline(v): the rational-quadratic spline (Durkan et al. 2019, arXiv:1906.04032) with
    K bins on [-B, B], identity outside; per entry, from raw u_w, u_h (K each), u_d (K - 1):
    widths, heights = min + (1 - min * K) * softmax(u), knots their running sums on [-B, B];
    inner derivatives = min_derivative + softplus(u_d + log(expm1(1 - min_derivative)))
    (zero raw parameters: the identity); bin k = sum(v >= knots + eps) - 1;
    theta = (v - x_k) / w_k,  y = y_k + h_k (delta theta^2 + d_k theta (1 - theta)) / den,
    den = delta + (d_k + d_k1 - 2 delta) theta (1 - theta),  delta = h_k / w_k;
    the inverse takes the quadratic's stable root theta = 2c / (-b - sqrt(b^2 - 4ac))."""


def layout(n: int, spline: S.RationalQuadraticSpline) -> str:
    """The conditioner output's layout in words."""
    k = spline.bins
    return (f"m's {n * spline.per_entry} outputs: [u_w ({n} x {k}) | u_h ({n} x {k}) | "
            f"u_d ({n} x {k - 1})], each entry-major")


def raw_shapes(n: int, spline: S.RationalQuadraticSpline) -> dict[str, tuple[int, ...]]:
    """The learned raw parameters of an unconditional spline of ``n`` entries."""
    k = spline.bins
    return {"widths": (n, k), "heights": (n, k), "derivatives": (n, k - 1)}


