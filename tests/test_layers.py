"""Every layer type and scale map against its formula, written out here in NumPy.

Each case builds a small flow, draws random non-identity weights
(``fb.init_params(spec, init="random")``), runs the float64 reference
(``fb.to_numpy``) forward, then its inverse on a fresh copy of ``y``, and compares
output, state and both log-dets with the paper's formula computed in this file from the
same neutral parameters. No flowbridge math is called for the expected values: the
conventions (masks, ``[shift | raw log-scale]``, kernels ``(in, out)`` and ``(k, k, in,
out)``, the squeeze order, the factor-out's active channels) are restated here from the
README, so a change to them fails here. Errors: outputs max-norm relative
(``max |a - b| / max |b|``), log-dets ``max |a - b| / (1 + max |b|)``, both <= 1e-12.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import layers
from flowbridge import spec as S

TOLERANCE = 1e-12


# ------------------------------------------------------------------ the formulas
def _erf(h):
    return np.vectorize(math.erf, otypes=[np.float64])(h)


def _act(h, cond):
    """The conditioner's activation: relu, tanh, leaky_relu, elu (alpha 1), exact gelu."""
    kind = cond.activation
    if kind == "relu":
        return np.where(h > 0, h, 0.0)
    if kind == "tanh":
        return np.tanh(h)
    if kind == "leaky_relu":
        return np.where(h >= 0, h, cond.negative_slope * h)
    if kind == "elu":
        return np.where(h > 0, h, np.exp(np.minimum(h, 0.0)) - 1.0)
    if kind == "gelu":
        return 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
    raise KeyError(f"no formula for the activation {kind!r}")


def _mlp(p, prefix, h, cond):
    """Dense layers ``h @ kernel + bias``, kernels ``(in, out)``, the activation between
    them and none after the last."""
    n = len(cond.hidden) + 1
    for j in range(n):
        h = h @ p[f"{prefix}{j}.kernel"] + p[f"{prefix}{j}.bias"]
        if j < n - 1:
            h = _act(h, cond)
    return h


def _conv2d(x, kernel, bias):
    """Stride 1, "same" zero padding, cross-correlation: ``out[o, r, s] = bias[o] +
    sum_{i, j, c} x_padded[c, r + i, s + j] * kernel[i, j, c, o]``."""
    k = kernel.shape[0]
    pad = [(0, 0)] * (x.ndim - 2) + [(k // 2, k // 2)] * 2
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, pad), (k, k), axis=(-2, -1))
    return np.einsum("...crsij,ijco->...ors", windows, kernel) + bias[:, None, None]


def _resnet(p, h, cond):
    """RealNVP's residual conditioner: conv in, ``blocks`` x (act, conv, act, conv, added
    to the block's input), act, conv out; convolutions ``conditioner.{j}``."""
    last = 2 * cond.blocks + 1

    def conv(v, j):
        return _conv2d(v, p[f"conditioner.{j}.kernel"], p[f"conditioner.{j}.bias"])

    h = conv(h, 0)
    for block in range(cond.blocks):
        r = conv(_act(h, cond), 2 * block + 1)
        h = h + conv(_act(r, cond), 2 * block + 2)
    return conv(_act(h, cond), last)


def _log_scale(s, scale):
    """The scale maps: exp, clamp, soft clamp, Glow's sigmoid."""
    if scale.kind == "exp":
        return s
    if scale.kind == "clamp":
        return np.minimum(np.maximum(s, scale.low), scale.high)
    if scale.kind == "soft_clamp":
        return scale.bound * np.tanh(s / scale.bound)
    if scale.kind == "sigmoid":  # log sigmoid(s + offset)
        return -np.log1p(np.exp(-(s + scale.offset)))
    if scale.kind == "softplus":  # nflows: log(softplus(s) + eps)
        return np.log(np.logaddexp(0.0, s) + scale.eps)
    raise KeyError(f"no formula for the scale map {scale.kind!r}")


def _passed(mask, d):
    """``(passed, transformed)`` indices of a vector mask, each increasing."""
    if mask.kind in ("half", "split"):
        k = mask.size if mask.kind == "split" else (d // 2 if mask.rounding == "floor"
                                                    else (d + 1) // 2)  # fmt: skip
        passed = list(range(k)) if mask.part == "first" else list(range(d - k, d))
    elif mask.kind == "parity":
        passed = list(range(0 if mask.parity == "even" else 1, d, 2))
    elif mask.kind == "explicit":
        passed = [i for i, v in enumerate(mask.values) if v]
    else:
        raise KeyError(f"no vector formula for the mask {mask.kind!r}")
    return passed, [i for i in range(d) if i not in passed]


def _with_context(h, c):
    """``[h | c]``, the context broadcast to h's batch."""
    if c is None:
        return h
    return np.concatenate([h, np.broadcast_to(c, h.shape[:-1] + c.shape[-1:])], axis=-1)


@dataclass
class Formula:
    """One layer's math: ``forward(p, x, c) -> (y, log_det)``, ``inverse(p, y, c) ->
    (x, log_det)`` (``p``: the layer's parameters under their local names, ``c``: the
    context or features, None when the flow has none) and, for a layer with a training
    mode, ``update(p, x) -> {name: value}``, the state one training forward leaves."""

    forward: Callable
    inverse: Callable
    update: Callable | None = None


def _coupling_raw(layer, p, h, c):
    """The conditioner's output on the passed part ``h`` (masked image, channels or
    entries)."""
    if isinstance(layer.conditioner, S.ResNetConditioner):
        return _resnet(p, h, layer.conditioner)
    return _mlp(p, "conditioner.", _with_context(h, c), layer.conditioner)


def _maps(layer, out, n, axis=-1):
    """``(shift, log_scale)`` from a conditioner output ``out`` stacked ``[shift | s]``
    along ``axis`` (vectors: the last; images: channels), ``n`` entries each."""
    shift = np.take(out, range(n), axis=axis)
    if layer.type == "additive_coupling":
        return shift, np.zeros_like(shift)
    return shift, _log_scale(np.take(out, range(n, 2 * n), axis=axis), layer.scale)


def _vector_coupling(layer):
    def forward(p, x, c):
        a, b = _passed(layer.mask, x.shape[-1])
        shift, ls = _maps(layer, _coupling_raw(layer, p, x[..., a], c), len(b))
        y = x.copy()
        y[..., b] = x[..., b] * np.exp(ls) + shift
        return y, ls.sum(-1)

    def inverse(p, y, c):
        a, b = _passed(layer.mask, y.shape[-1])
        shift, ls = _maps(layer, _coupling_raw(layer, p, y[..., a], c), len(b))
        x = y.copy()
        x[..., b] = (y[..., b] - shift) / np.exp(ls)
        return x, -ls.sum(-1)

    return Formula(forward, inverse)


def _checkerboard(layer, shape):
    """RealNVP's masked checkerboard: ``b = 1`` where ``(h + w) % 2 == parity``; the
    conditioner reads ``b * x``, and shift and log-scale act where ``b = 0``."""
    c, h, w = shape
    parity = 0 if layer.mask.parity == "even" else 1
    b = np.array([[float((i + j) % 2 == parity) for j in range(w)] for i in range(h)])

    def forward(p, x, _):
        shift, ls = _maps(layer, _coupling_raw(layer, p, b * x, None), c, -3)
        shift, ls = shift * (1 - b), ls * (1 - b)
        return x * np.exp(ls) + shift, ls.sum((-3, -2, -1))

    def inverse(p, y, _):
        shift, ls = _maps(layer, _coupling_raw(layer, p, b * y, None), c, -3)
        shift, ls = shift * (1 - b), ls * (1 - b)
        return (y - shift) / np.exp(ls), -ls.sum((-3, -2, -1))

    return Formula(forward, inverse)


def _channel_coupling(layer, shape):
    """RealNVP's channel mask: the first or last ``floor(C / 2)`` channels pass."""
    c = shape[0]
    k = c // 2
    a = list(range(k)) if layer.mask.part == "first" else list(range(c - k, c))
    b = [i for i in range(c) if i not in a]

    def forward(p, x, _):
        shift, ls = _maps(layer, _coupling_raw(layer, p, x[..., a, :, :], None), len(b), -3)
        y = x.copy()
        y[..., b, :, :] = x[..., b, :, :] * np.exp(ls) + shift
        return y, ls.sum((-3, -2, -1))

    def inverse(p, y, _):
        shift, ls = _maps(layer, _coupling_raw(layer, p, y[..., a, :, :], None), len(b), -3)
        x = y.copy()
        x[..., b, :, :] = (y[..., b, :, :] - shift) / np.exp(ls)
        return x, -ls.sum((-3, -2, -1))

    return Formula(forward, inverse)


def _coupling(layer, shape):
    if layer.mask.kind == "checkerboard":
        return _checkerboard(layer, shape)
    if layer.mask.kind == "channel":
        return _channel_coupling(layer, shape)
    return _vector_coupling(layer)


def _per_channel(v, shape):
    """A ``(C,)`` parameter broadcast over H and W of an image, as is for a vector."""
    return v[:, None, None] if len(shape) == 3 else v


def _count(shape):
    """Entries each per-channel parameter scales: ``H * W`` for images, 1 for vectors."""
    return shape[1] * shape[2] if len(shape) == 3 else 1


def _scaling(layer, shape):
    """NICE's diagonal scaling: ``y = x * exp(s)``, ``s`` of the event shape, log-det
    ``sum(s)``."""

    def forward(p, x, _):
        batch = x.shape[: x.ndim - len(shape)]
        return x * np.exp(p["log_scale"]), np.full(batch, p["log_scale"].sum())

    def inverse(p, y, _):
        batch = y.shape[: y.ndim - len(shape)]
        return y / np.exp(p["log_scale"]), np.full(batch, -p["log_scale"].sum())

    return Formula(forward, inverse)


def _permutation(layer, shape):
    """``y[..., i] = x[..., indices[i]]``: reverse, ``default_rng(seed).permutation(D)``
    or explicit."""
    d = shape[0]
    if layer.kind == "reverse":
        idx = np.arange(d)[::-1]
    elif layer.kind == "random":
        idx = np.random.default_rng(layer.seed).permutation(d)
    else:
        idx = np.array(layer.indices)

    def forward(p, x, _):
        return x[..., idx], np.zeros(x.shape[:-1])

    def inverse(p, y, _):
        x = np.empty_like(y)
        x[..., idx] = y
        return x, np.zeros(y.shape[:-1])

    return Formula(forward, inverse)


def _squeeze(layer, shape):
    """``y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]``."""
    c = shape[0]

    def forward(p, x, _):
        n, _, h, w = x.shape
        y = np.empty((n, 4 * c, h // 2, w // 2))
        for ch in range(c):
            for i in range(2):
                for j in range(2):
                    y[:, 4 * ch + 2 * i + j] = x[:, ch, i::2, j::2]
        return y, np.zeros(n)

    def inverse(p, y, _):
        n, _, h, w = y.shape
        x = np.empty((n, c, 2 * h, 2 * w))
        for ch in range(c):
            for i in range(2):
                for j in range(2):
                    x[:, ch, i::2, j::2] = y[:, 4 * ch + 2 * i + j]
        return x, np.zeros(n)

    return Formula(forward, inverse)


def _factor_out(layer, shape):
    """An identity; what it changes is the channels later layers act on (the cases say
    which, see :class:`Case`)."""

    def same(p, v, _):
        return v.copy(), np.zeros(v.shape[:-3])

    return Formula(same, same)


def _actnorm(layer, shape):
    """Glow's ``y = x * exp(log_scale) + shift`` per channel, log-det ``H W sum(log_scale)``."""

    def forward(p, x, _):
        y = x * np.exp(_per_channel(p["log_scale"], shape)) + _per_channel(p["shift"], shape)
        return y, np.full(x.shape[: x.ndim - len(shape)], _count(shape) * p["log_scale"].sum())

    def inverse(p, y, _):
        x = (y - _per_channel(p["shift"], shape)) / np.exp(_per_channel(p["log_scale"], shape))
        return x, np.full(y.shape[: y.ndim - len(shape)], -_count(shape) * p["log_scale"].sum())

    return Formula(forward, inverse)


def _conv1x1(layer, shape):
    """Glow's ``W = P L U`` built entry by entry: ``L[i, j] = lower_upper[i, j]`` below the
    diagonal, 1 on it; ``U`` the rest (its diagonal ``signs * exp(log_abs_diag)`` in
    the log form); ``W[i] = (L U)[permutation[i]]``. Each pixel's channels are multiplied
    by ``W`` (its inverse by ``numpy.linalg.inv``, which the layer never uses); the log-det
    is ``H W log|det W|`` from ``numpy.linalg.slogdet`` of the dense ``W``."""
    c = shape[0]
    perm = S.conv1x1_permutation(layer, c)

    def dense(p):
        lu = p["lower_upper"]
        lower, upper = np.eye(c), np.zeros((c, c))
        for i in range(c):
            for j in range(c):
                if i > j:
                    lower[i, j] = lu[i, j]
                elif i < j or layer.diagonal == "direct":
                    upper[i, j] = lu[i, j]
        if layer.diagonal == "log":
            signs = np.ones(c) if layer.signs is None else np.array(layer.signs, float)
            upper[np.arange(c), np.arange(c)] = signs * np.exp(p["log_abs_diag"])
        return (lower @ upper)[perm]

    def mix(m, v):
        moved = np.moveaxis(v, -len(shape), -1)  # channels last
        return np.moveaxis(moved @ m.T, -1, -len(shape))

    def forward(p, x, _):
        w = dense(p)
        batch = x.shape[: x.ndim - len(shape)]
        return mix(w, x), np.full(batch, _count(shape) * np.linalg.slogdet(w)[1])

    def inverse(p, y, _):
        w = dense(p)
        batch = y.shape[: y.ndim - len(shape)]
        return mix(np.linalg.inv(w), y), np.full(batch, -_count(shape) * np.linalg.slogdet(w)[1])

    return Formula(forward, inverse)


def _batch_stats(x, shape):
    """Mean and biased variance per channel (per entry) over every batch dim and H, W."""
    flat = x.reshape((-1, *shape))
    axes = (0, 2, 3) if len(shape) == 3 else (0,)
    mean = flat.mean(axes)
    centred = flat - _per_channel(mean, shape)
    return mean, (centred**2).mean(axes)


def _batch_norm(layer, shape, training):
    """``y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta``, log-det
    ``H W sum(log_gamma - log(var + eps) / 2)``: batch statistics in training mode, the
    running averages (``running_mean``, ``exp(running_log_var)``) otherwise and in the
    inverse; a training forward moves ``running = (1 - momentum) running + momentum
    batch`` (the variance averaged, its log stored)."""
    eps, m = layer.eps, layer.momentum

    def stats(p, x):
        if training:
            return _batch_stats(x, shape)
        return p["running_mean"], np.exp(p["running_log_var"])

    def log_det(p, var, v):
        per = p["log_gamma"] - 0.5 * np.log(var + eps)
        return np.full(v.shape[: v.ndim - len(shape)], _count(shape) * per.sum())

    def forward(p, x, _):
        mean, var = stats(p, x)
        mean_b, var_b = _per_channel(mean, shape), _per_channel(var, shape)
        gamma, beta = np.exp(_per_channel(p["log_gamma"], shape)), _per_channel(p["beta"], shape)
        y = (x - mean_b) / np.sqrt(var_b + eps) * gamma + beta
        return y, log_det(p, var, x)

    def inverse(p, y, _):
        var = np.exp(p["running_log_var"])
        mean, var_b = _per_channel(p["running_mean"], shape), _per_channel(var, shape)
        gamma, beta = np.exp(_per_channel(p["log_gamma"], shape)), _per_channel(p["beta"], shape)
        x = (y - beta) * np.sqrt(var_b + eps) / gamma + mean
        return x, -log_det(p, var, y)

    def update(p, x):
        mean, var = _batch_stats(x, shape)
        running_var = (1 - m) * np.exp(p["running_log_var"]) + m * var
        return {"running_mean": (1 - m) * p["running_mean"] + m * mean,
                "running_log_var": np.log(running_var)}  # fmt: skip

    return Formula(forward, inverse, update if training else None)


def _logit(layer, shape):
    """RealNVP's preprocessing: ``p = alpha + (1 - 2 alpha) x``, ``y = log(p / (1 - p))``,
    log-det ``sum(log(1 - 2 alpha) - log p - log(1 - p))``; back by the sigmoid."""
    alpha = layer.alpha
    axes = tuple(range(-len(shape), 0))

    def forward(p, x, _):
        q = alpha + (1 - 2 * alpha) * x
        return np.log(q / (1 - q)), np.sum(np.log(1 - 2 * alpha) - np.log(q) - np.log(1 - q),
                                           axis=axes)  # fmt: skip

    def inverse(p, y, _):
        q = 1.0 / (1.0 + np.exp(-y))
        return (q - alpha) / (1 - 2 * alpha), -np.sum(
            np.log(1 - 2 * alpha) - np.log(q) - np.log(1 - q), axis=axes)  # fmt: skip

    return Formula(forward, inverse)


def _elementwise_affine(layer):
    """Every entry: ``y = x * exp(log_scale) + t``; ``[t | s] = m(c)`` from the context
    alone (broadcast to x's batch) in a conditional flow, the weights ``shift`` and ``s``
    otherwise."""

    def maps(p, v, c):
        if c is None:
            t, s = p["shift"], p["s"]
        else:
            out = _mlp(p, "conditioner.", np.broadcast_to(c, v.shape[:-1] + c.shape[-1:]),
                       layer.conditioner)  # fmt: skip
            t, s = out[..., : v.shape[-1]], out[..., v.shape[-1] :]
        ls = np.broadcast_to(_log_scale(s, layer.scale), v.shape)
        return t, ls

    def forward(p, x, c):
        t, ls = maps(p, x, c)
        return x * np.exp(ls) + t, ls.sum(-1)

    def inverse(p, y, c):
        t, ls = maps(p, y, c)
        return (y - t) * np.exp(-ls), -ls.sum(-1)

    return Formula(forward, inverse)


def _rq_spline(v, uw, uh, ud, spline, inverse, ul=None):
    """The rational-quadratic spline of Durkan et al. 2019 (arXiv:1906.04032, eqs. 4-6),
    entry by entry in plain Python: bins from ``searchsorted``, the inverse from the roots
    of the bin's quadratic (``np.roots``, one Newton step), identity outside [-B, B]. The
    raw parameters ``uw``, ``uh`` ``(..., n, K)``, ``ud`` ``(..., n, K - 1)`` broadcast
    against ``v`` ``(..., n)``; returns the output and each entry's log-derivative. With
    ``ul`` (``(..., n, K)``), the rational-linear spline of Dolatabadi et al. 2020
    (arXiv:2001.05168, eqs. 8-10) instead, its inverse by bisection on the forward."""
    k, bound = spline.bins, spline.bound

    def softmax(u):
        e = np.exp(u - u.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    widths = spline.min_bin_width + (1 - spline.min_bin_width * k) * softmax(uw)
    heights = spline.min_bin_height + (1 - spline.min_bin_height * k) * softmax(uh)
    offset = np.log(np.expm1(1 - spline.min_derivative))
    inner = spline.min_derivative + np.logaddexp(0.0, ud + offset)
    edge = 1.0 if spline.edge_derivative == "one" else 1.0 - spline.min_derivative
    shape = v.shape
    widths, heights = (np.broadcast_to(a, shape + (k,)) for a in (widths, heights))
    inner = np.broadcast_to(inner, shape + (k - 1,))
    if ul is not None:
        lam = np.broadcast_to(spline.min_lambda + (1 - 2 * spline.min_lambda)
                              / (1 + np.exp(-ul)), shape + (k,))  # fmt: skip
    out, log_deriv = np.array(v, dtype=float), np.zeros(shape)
    for i in np.ndindex(shape):
        val = v[i]
        if abs(val) > bound:
            continue
        xk = np.concatenate([[-bound], -bound + 2 * bound * np.cumsum(widths[i])[:-1], [bound]])
        yk = np.concatenate([[-bound], -bound + 2 * bound * np.cumsum(heights[i])[:-1], [bound]])
        d = np.concatenate([[edge], inner[i], [edge]])
        knots = yk if inverse else xk
        b = int(np.clip(np.searchsorted(knots + spline.eps, val, side="right") - 1, 0, k - 1))
        w, h = xk[b + 1] - xk[b], yk[b + 1] - yk[b]
        s, d0, d1 = h / w, d[b], d[b + 1]

        def g(t, s=s, d0=d0, d1=d1, y0=yk[b], h=h):  # the bin's map of theta, its slope
            den = s + (d0 + d1 - 2 * s) * t * (1 - t)
            y = y0 + h * (s * t**2 + d0 * t * (1 - t)) / den
            return y, s**2 * (d1 * t**2 + 2 * s * t * (1 - t) + d0 * (1 - t) ** 2) / den**2

        if ul is not None:
            out[i], log_deriv[i] = _linear_bin(val, xk, yk, d, b, lam[i][b], inverse)
            continue
        if inverse:  # (val - y_k) den(t) = h (s t^2 + d0 t (1 - t)), a quadratic in t
            r, c2 = val - yk[b], d0 + d1 - 2 * s
            roots = np.roots([-r * c2 - h * (s - d0), r * c2 - h * d0, r * s])
            real = [t.real for t in np.atleast_1d(roots) if abs(t.imag) < 1e-9]
            t = min(real, key=lambda t: abs(t - np.clip(t, 0, 1))) if real else 0.0
            y, slope = g(t)
            t -= (y - val) / (slope * w)  # one Newton step polishes np.roots' eigenvalues
            out[i], log_deriv[i] = xk[b] + t * w, -np.log(g(t)[1])
        else:
            t = (val - xk[b]) / w
            out[i], log_deriv[i] = g(t)[0], np.log(g(t)[1])
    return out, log_deriv


def _linear_bin(val, xk, yk, d, b, lam, inverse):
    """One entry of the rational-linear spline in bin ``b``: the two pieces written as
    weighted averages of the bin's ends and the junction (Dolatabadi et al. 2020), the
    inverse found by bisection on the increasing forward map, the log-derivative by its
    closed form."""
    w, h = xk[b + 1] - xk[b], yk[b + 1] - yk[b]
    s, d0, d1 = h / w, d[b], d[b + 1]
    wb = np.sqrt(d0 / d1)
    wc = (lam * d0 + (1 - lam) * wb * d1) / s
    yc = ((1 - lam) * yk[b] + lam * wb * yk[b + 1]) / ((1 - lam) + lam * wb)

    def g(t):  # y(theta), and dy/dx
        if t <= lam:
            p, q = lam - t, wc * t
            y = (yk[b] * p + yc * q) / (p + q)
            return y, wc * lam * (yc - yk[b]) / (p + q) ** 2 / w
        p, q = wc * (1 - t), wb * (t - lam)
        y = (yc * p + yk[b + 1] * q) / (p + q)
        return y, wb * wc * (1 - lam) * (yk[b + 1] - yc) / (p + q) ** 2 / w

    if not inverse:
        y, slope = g((val - xk[b]) / w)
        return y, np.log(slope)
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid)[0] < val else (lo, mid)
    t = 0.5 * (lo + hi)
    y, slope = g(t)
    t -= (y - val) / (slope * w)  # one Newton step past bisection's last bit
    return xk[b] + t * w, -np.log(g(t)[1])


def _spline_raw(spline, out, n):
    """``(uw, uh, ud[, ul])`` from a conditioner output in the parameter-major layout."""
    k = spline.bins
    lead = out.shape[:-1]
    cuts = [(0, n * k, k), (n * k, 2 * n * k, k), (2 * n * k, n * (3 * k - 1), k - 1)]
    if spline.kind == "rational_linear":
        cuts.append((n * (3 * k - 1), n * (4 * k - 1), k))
    return tuple(out[..., a:b].reshape(lead + (n, m)) for a, b, m in cuts)


def _image_spline_raw(spline, out, n):
    """``(uw, uh, ud[, ul])``, each ``(..., n, H, W, m)``, from a ResNet's output
    ``(..., n * per_entry, H, W)``: the layout's blocks along the channels, channel-major."""
    k, (h, w) = spline.bins, out.shape[-2:]
    sizes = [k, k, k - 1] + ([k] if spline.kind == "rational_linear" else [])
    raw, start = [], 0
    for m in sizes:
        block = out[..., start : start + n * m, :, :].reshape(out.shape[:-3] + (n, m, h, w))
        raw.append(np.moveaxis(block, -3, -1))
        start += n * m
    return tuple(raw)


def _image_spline_coupling(layer, shape):
    """A channel mask: the transformed channels through the spline, its raw parameters the
    ResNet of the passed ones. A checkerboard: every entry's spline from the ResNet of
    ``b * x``, the entries where ``b = 1`` then put back as they were."""
    c, h, w = shape
    checker = layer.mask.kind == "checkerboard"
    if checker:
        parity = 0 if layer.mask.parity == "even" else 1
        b = np.array([[float((i + j) % 2 == parity) for j in range(w)] for i in range(h)])
        a, t = list(range(c)), list(range(c))
    else:
        k = c // 2
        a = list(range(k)) if layer.mask.part == "first" else list(range(c - k, c))
        t = [i for i in range(c) if i not in a]

    def run(p, v, _, inverse):
        seen = v * b if checker else v[..., a, :, :]
        raw = _image_spline_raw(layer.spline, _resnet(p, seen, layer.conditioner), len(t))
        out, ld = _rq_spline(v[..., t, :, :], *raw[:3], layer.spline, inverse, *raw[3:])
        if checker:
            return np.where(b == 1, v, out), np.where(b == 1, 0.0, ld).sum((-3, -2, -1))
        y = v.copy()
        y[..., t, :, :] = out
        return y, ld.sum((-3, -2, -1))

    return Formula(lambda p, x, c: run(p, x, c, False), lambda p, y, c: run(p, y, c, True))


def _spline_coupling(layer, shape):
    """The transformed entries through the spline, its raw parameters ``m(x_a)``; with
    ``passed_spline``, the passed entries through their own (``x_a`` is what the
    conditioner reads, so the inverse undoes their spline first)."""

    def run(p, v, c, inverse):
        a, b = _passed(layer.mask, v.shape[-1])
        w = v.copy()
        ld_a = 0.0
        if layer.passed_spline:
            own = [p[f"a_{n}"] for n in ("widths", "heights", "derivatives", "lambdas")
                   if f"a_{n}" in p]  # fmt: skip
            w[..., a], ld_a = _rq_spline(v[..., a], *own[:3], layer.spline, inverse, *own[3:])
            ld_a = ld_a.sum(-1)
        x_a = w[..., a] if inverse else v[..., a]
        raw = _spline_raw(layer.spline, _mlp(p, "conditioner.", _with_context(x_a, c),
                                             layer.conditioner), len(b))  # fmt: skip
        out, ld = _rq_spline(v[..., b], *raw[:3], layer.spline, inverse, *raw[3:])
        w[..., b] = out
        return w, ld.sum(-1) + ld_a

    if len(shape) == 3:
        return _image_spline_coupling(layer, shape)
    return Formula(lambda p, x, c: run(p, x, c, False), lambda p, y, c: run(p, y, c, True))


def _elementwise_spline(layer):
    """Every entry through the spline: raw parameters ``m(c)`` from the context alone, or
    the weights ``widths``, ``heights``, ``derivatives``."""

    def run(p, v, c, inverse):
        if c is None:
            raw = (p["widths"], p["heights"], p["derivatives"])
            raw += (p["lambdas"],) if "lambdas" in p else ()
        else:
            wide = np.broadcast_to(c, v.shape[:-1] + c.shape[-1:])
            raw = _spline_raw(layer.spline, _mlp(p, "conditioner.", wide, layer.conditioner),
                              v.shape[-1])  # fmt: skip
        out, ld = _rq_spline(v, *raw[:3], layer.spline, inverse, *raw[3:])
        return out, ld.sum(-1)

    return Formula(lambda p, x, c: run(p, x, c, False), lambda p, y, c: run(p, y, c, True))


def _made_degrees(made, d, context):
    """MADE's degrees, restated: the entry at position k of the order has degree k + 1, a
    context input 0; the hidden units' as the spec gives them, or by TFP's 'equal' rule
    or Pyro's rule (in float64)."""
    order = list(range(d)) if made.order is None else list(made.order)
    entries = [order.index(i) + 1 for i in range(d)]
    if not isinstance(made.degrees, str):
        hidden = [list(h) for h in made.degrees]
    elif made.degrees == "pyro":
        hidden = [list(np.round(np.linspace(1, d, h)) - 1) if context
                  else list(np.round(np.linspace(1, d - 1, h))) for h in made.hidden]
    else:  # with a context, from degree 0: ceil(j D / (H + 1)) - 1
        hidden, low = [], 0 if context else 1
        top, less = (d, 1) if context else (d - 1, 0)
        for h in made.hidden:
            layer = [max(min(low, d - 1), math.ceil(j * top / (h + 1)) - less)
                     for j in range(1, h + 1)]  # fmt: skip
            hidden.append(layer)
            low = min(layer)
    return entries, hidden


def _made(p, made, v, c, per_entry_blocks):
    """The MADE's output for ``v`` (and the context): the masked dense layers written
    with explicit masks, ``M[i, j] = deg_in[i] <= deg_out[j]`` into a hidden unit and
    ``<`` into an output, each output unit the entry ``per_entry_blocks`` says."""
    d = v.shape[-1]
    k = 0 if c is None else c.shape[-1]
    entries, hidden = _made_degrees(made, d, k)
    sizes = [entries + [0] * k, *hidden, [entries[e] for e in per_entry_blocks]]
    h = _with_context(v, c)
    n = len(sizes) - 1
    for j in range(n):
        mask = np.zeros((len(sizes[j]), len(sizes[j + 1])))
        for a, deg_a in enumerate(sizes[j]):
            for b, deg_b in enumerate(sizes[j + 1]):
                mask[a, b] = deg_a < deg_b if j == n - 1 else deg_a <= deg_b
        h = h @ (p[f"conditioner.{j}.kernel"] * mask) + p[f"conditioner.{j}.bias"]
        if j < n - 1:
            h = _act(h, made)
    return h


def _autoregressive(layer, shape):
    """Entry by entry in the MADE's order (no loop over passes, no vectorised step): the
    side the MADE reads is built one entry at a time where it is the output, each entry's
    map read from the MADE on what is known so far; in one pass where it is the input."""
    (d,) = shape
    affine = layer.type == "affine_autoregressive"
    if affine:
        blocks = list(range(d)) * 2
    else:
        k = layer.spline.bins
        per = [k, k, k - 1] + ([k] if layer.spline.kind == "rational_linear" else [])
        blocks = [i for m in per for i in range(d) for _ in range(m)]
    order = list(range(d)) if layer.conditioner.order is None else list(layer.conditioner.order)

    def entry(p, reads, v, c, i, inverse):
        """Entry i of the map (its inverse), its parameters from the MADE on ``reads``."""
        out = _made(p, layer.conditioner, reads, c, blocks)
        if affine:
            shift, log_scale = out[..., i], _log_scale(out[..., d + i], layer.scale)
            if inverse:
                return (v[..., i] - shift) * np.exp(-log_scale), -log_scale
            return v[..., i] * np.exp(log_scale) + shift, log_scale
        raw = [r[..., i:i + 1, :] for r in _spline_raw(layer.spline, out, d)]
        val, ld = _rq_spline(v[..., i:i + 1], *raw[:3], layer.spline, inverse, *raw[3:])
        return val[..., 0], ld[..., 0]

    def one_pass(p, v, c, inverse):
        out, total = np.empty_like(v), 0.0
        for i in range(d):
            out[..., i], ld = entry(p, v, v, c, i, inverse)
            total = total + ld
        return out, total

    def by_entry(p, v, c, inverse):
        made = np.zeros_like(v)  # what the MADE reads: the output, filled in the order
        total = 0.0
        for i in order:
            made[..., i], ld = entry(p, made, v, c, i, inverse)
            total = total + ld
        return made, total

    if layer.direction == "maf":  # the MADE reads y
        return Formula(lambda p, x, c: by_entry(p, x, c, False),
                       lambda p, y, c: one_pass(p, y, c, True))  # fmt: skip
    return Formula(lambda p, x, c: one_pass(p, x, c, False),
                   lambda p, y, c: by_entry(p, y, c, True))  # fmt: skip


#: Layer type -> its formula here, given the layer, the shape it acts on and the mode.
FORMULAS: dict[str, Callable[..., Formula]] = {
    "additive_coupling": lambda layer, shape, training: _coupling(layer, shape),
    "affine_coupling": lambda layer, shape, training: _coupling(layer, shape),
    "scaling": lambda layer, shape, training: _scaling(layer, shape),
    "elementwise_affine": lambda layer, shape, training: _elementwise_affine(layer),
    "spline_coupling": lambda layer, shape, training: _spline_coupling(layer, shape),
    "elementwise_spline": lambda layer, shape, training: _elementwise_spline(layer),
    "affine_autoregressive": lambda layer, shape, training: _autoregressive(layer, shape),
    "spline_autoregressive": lambda layer, shape, training: _autoregressive(layer, shape),
    "permutation": lambda layer, shape, training: _permutation(layer, shape),
    "squeeze": lambda layer, shape, training: _squeeze(layer, shape),
    "factor_out": lambda layer, shape, training: _factor_out(layer, shape),
    "actnorm": lambda layer, shape, training: _actnorm(layer, shape),
    "conv1x1": lambda layer, shape, training: _conv1x1(layer, shape),
    "batch_norm": _batch_norm,
    "logit": lambda layer, shape, training: _logit(layer, shape),
}


def _embedding(p, c, emb):
    """The context embedding: dense layers, the activation between them, none after."""
    return _mlp(p, "context_embedding.", c, emb)


# ------------------------------------------------------------------ the cases
@dataclass
class Case:
    """A flow and how to run its formula: ``acts`` gives, per layer, the shape it acts on
    and, after a factor-out, how many leading channels that is (``None``: all of them),
    stated here by hand from the README's multi-scale rules."""

    spec: fb.FlowSpec
    x: np.ndarray
    acts: list[tuple[tuple[int, ...], int | None]]
    context: np.ndarray | None = None
    training: bool = False
    tags: frozenset[str] = frozenset()  # what else the case covers (a mode, a context)


def _one(layer, shape, x, **kw):
    spec = fb.FlowSpec(name="one", event_shape=shape, layers=[layer])
    return Case(spec, x, [(shape, None)], **kw)


def _rng(seed=1):
    return np.random.default_rng(seed)


def _vectors(d, batch=(5,), scale=1.5):
    return scale * _rng().standard_normal((*batch, d))


def _images(shape, n=3):
    return _rng().standard_normal((n, *shape))


def _spline_inputs(d, bound=3.0):
    """Five standard normal rows (times 1.5) and four rows on the interval's ends, just
    inside and outside them, deep in the tails, at 0 and at half the bound."""
    edges = np.array([-bound, bound, -bound - 1e-9, bound + 1e-9, -bound + 1e-9, 0.0, 2 * bound,
                      -3 * bound, bound / 2])  # fmt: skip
    rows = np.resize(edges, (2, d))
    return np.concatenate([_vectors(d), rows, np.roll(rows, 1, axis=-1)], axis=0)


def _mlp_cond(hidden=(8,), activation="relu", **kw):
    return fb.Conditioner(hidden=hidden, activation=activation, **kw)


def _res(blocks=1, channels=4, kernel_size=3, activation="relu", **kw):
    return fb.ResNetConditioner(blocks=blocks, channels=channels, kernel_size=kernel_size,
                                activation=activation, **kw)  # fmt: skip


def _vector_coupling_case(cls, mask, d, cond=None, **kw):
    layer = cls(mask=mask, conditioner=cond or _mlp_cond(), **kw)
    return _one(layer, (d,), _vectors(d))


def _image_coupling_case(cls, mask, shape, cond=None, **kw):
    layer = cls(mask=mask, conditioner=cond or _res(), **kw)
    return _one(layer, shape, _images(shape))


A, N = fb.AffineCoupling, fb.AdditiveCoupling
CASES: dict[str, Callable[[], Case]] = {
    # scale maps (affine couplings, half masks)
    "scale_exp": lambda: _vector_coupling_case(A, fb.HalfMask(), 6, scale=fb.ExpScale()),
    "scale_clamp": lambda: _vector_coupling_case(
        A, fb.HalfMask(), 6, scale=fb.ClampScale(low=-0.1, high=0.2)),
    "scale_clamp_default_bounds": lambda: _vector_coupling_case(
        A, fb.HalfMask(part="last"), 5, cond=_mlp_cond((8,)), scale=fb.ClampScale()),
    "scale_soft_clamp": lambda: _vector_coupling_case(
        A, fb.HalfMask(), 6, scale=fb.SoftClampScale(bound=0.5)),
    "scale_sigmoid": lambda: _vector_coupling_case(
        A, fb.HalfMask(), 6, scale=fb.SigmoidScale()),
    "scale_sigmoid_offset": lambda: _vector_coupling_case(
        A, fb.HalfMask(), 6, scale=fb.SigmoidScale(offset=-0.5)),
    # masks of vector couplings, affine and additive
    "affine_half_ceil_last": lambda: _vector_coupling_case(
        A, fb.HalfMask(part="last", rounding="ceil"), 7, cond=_mlp_cond((8, 8), "tanh")),
    "affine_split_first": lambda: _vector_coupling_case(A, fb.SplitMask(size=2), 5),
    "affine_split_last": lambda: _vector_coupling_case(
        A, fb.SplitMask(part="last", size=4), 7, scale=fb.SoftClampScale()),
    "affine_parity_odd": lambda: _vector_coupling_case(
        A, fb.ParityMask(parity="odd"), 7, cond=_mlp_cond((8,), "elu")),
    "affine_explicit": lambda: _vector_coupling_case(
        A, fb.ExplicitMask(values=(True, False, False, True, False, True, True)), 7,
        cond=_mlp_cond((), "relu"), scale=fb.ClampScale(low=-0.2, high=0.1)),
    "affine_gelu": lambda: _vector_coupling_case(
        A, fb.HalfMask(), 4, cond=_mlp_cond((8,), "gelu")),
    "affine_leaky_relu": lambda: _vector_coupling_case(
        A, fb.HalfMask(), 4, cond=_mlp_cond((8, 6), "leaky_relu", negative_slope=0.3)),
    "additive_half": lambda: _vector_coupling_case(N, fb.HalfMask(), 4),
    "additive_parity_even": lambda: _vector_coupling_case(
        N, fb.ParityMask(), 5, cond=_mlp_cond((8,), "tanh")),
    "additive_split_last": lambda: _vector_coupling_case(
        N, fb.SplitMask(part="last", size=4), 6, cond=_mlp_cond((8, 8))),
    "additive_explicit": lambda: _vector_coupling_case(
        N, fb.ExplicitMask(values=(False, True, True, False)), 4, cond=_mlp_cond((6,), "gelu")),
    # couplings on images
    "checkerboard_affine_even": lambda: _image_coupling_case(
        A, fb.CheckerboardMask(), (2, 4, 4), scale=fb.SoftClampScale(bound=1.0)),
    "checkerboard_affine_odd_sigmoid": lambda: _image_coupling_case(
        A, fb.CheckerboardMask(parity="odd"), (1, 4, 6), cond=_res(2, 3, activation="tanh"),
        scale=fb.SigmoidScale()),
    "checkerboard_additive_k1": lambda: _image_coupling_case(
        N, fb.CheckerboardMask(parity="odd"), (3, 4, 4), cond=_res(0, 4, 1, "elu")),
    "channel_affine_first_k5": lambda: _image_coupling_case(
        A, fb.ChannelMask(), (3, 4, 4), cond=_res(1, 4, 5, "leaky_relu", negative_slope=0.2),
        scale=fb.ClampScale(low=-0.1, high=0.1)),
    "channel_affine_last_gelu": lambda: _image_coupling_case(
        A, fb.ChannelMask(part="last"), (5, 2, 4), cond=_res(1, 4, 3, "gelu")),
    "channel_additive_last": lambda: _image_coupling_case(
        N, fb.ChannelMask(part="last"), (4, 2, 2), cond=_res(2, 3)),
    # the other layers
    "scaling_vector": lambda: _one(fb.Scaling(), (5,), _vectors(5, batch=(2, 3))),
    "scaling_image": lambda: _one(fb.Scaling(), (2, 2, 4), _images((2, 2, 4))),
    "permutation_reverse": lambda: _one(fb.Permutation(), (5,), _vectors(5)),
    "permutation_random": lambda: _one(fb.Permutation(kind="random", seed=4), (7,),
                                       _vectors(7, batch=(2, 3))),
    "permutation_explicit": lambda: _one(
        fb.Permutation(kind="explicit", indices=(2, 0, 3, 1)), (4,), _vectors(4)),
    "actnorm_vector": lambda: _one(fb.ActNorm(), (4,), _vectors(4)),
    "actnorm_image": lambda: _one(fb.ActNorm(), (3, 2, 4), _images((3, 2, 4))),
    # Glow's 1x1 convolution: U's diagonal direct (Pyro's, TFP's) on an image, sign and
    # log-magnitude with negative signs on a vector (an LU linear layer)
    "conv1x1_image": lambda: _one(fb.Conv1x1(permutation=(1, 2, 0)), (3, 2, 4), _images((3, 2, 4))),
    "conv1x1_log_signs_vector": lambda: _one(
        fb.Conv1x1(diagonal="log", signs=(-1, 1, -1, -1)), (4,), _vectors(4, batch=(2, 3))),
    "squeeze": lambda: _one(fb.Squeeze(), (2, 4, 6), _images((2, 4, 6))),
    "logit_vector": lambda: _one(fb.Logit(), (5,), _rng().uniform(0.01, 0.99, (4, 5))),
    "logit_image": lambda: _one(fb.Logit(alpha=0.1), (2, 2, 2),
                                _rng().uniform(0.001, 0.999, (3, 2, 2, 2))),
    "batch_norm_vector_evaluation": lambda: _one(
        fb.BatchNorm(), (4,), _vectors(4), tags=frozenset({"batch_norm:evaluation"})),
    "batch_norm_image_evaluation": lambda: _one(
        fb.BatchNorm(momentum=0.3, eps=1e-3), (3, 2, 4), _images((3, 2, 4)),
        tags=frozenset({"batch_norm:evaluation"})),
    "batch_norm_vector_training": lambda: _one(
        fb.BatchNorm(momentum=0.2), (4,), _vectors(4, batch=(2, 3)), training=True,
        tags=frozenset({"batch_norm:training"})),
    "batch_norm_image_training": lambda: _one(
        fb.BatchNorm(eps=1e-2), (2, 4, 4), 2.0 + _images((2, 4, 4), n=5), training=True,
        tags=frozenset({"batch_norm:training"})),
    # multi-scale: a factor-out, then layers on the first half of the channels; a squeeze
    # moves every channel (c's children are 4c .. 4c + 3, so the active ones stay first)
    "factor_out_alone": lambda: _one(fb.FactorOut(), (4, 2, 2), _images((4, 2, 2))),
    "factor_out_then_layers": lambda: Case(
        fb.FlowSpec(name="multiscale", event_shape=(2, 4, 4), layers=[
            fb.FactorOut(), fb.ActNorm(), fb.Squeeze(),
            A(mask=fb.ChannelMask(), conditioner=_res(1, 3)), fb.FactorOut(),
            A(mask=fb.CheckerboardMask(), conditioner=_res(1, 3), scale=fb.SoftClampScale()),
            fb.Scaling()]),
        _images((2, 4, 4)),
        [((2, 4, 4), None), ((1, 4, 4), 1), ((2, 4, 4), None), ((4, 2, 2), 4),
         ((8, 2, 2), None), ((2, 2, 2), 2), ((2, 2, 2), 2)],
        tags=frozenset({"factor_out:later_layers"})),
    # conditional couplings read [x_a | c]; scaling and permutations do not read it
    "conditional_affine": lambda: Case(
        fb.FlowSpec(name="cond", event_shape=(5,), context_dim=3, layers=[
            A(mask=fb.SplitMask(size=2), conditioner=_mlp_cond((8,))), fb.Permutation(),
            N(mask=fb.ParityMask(), conditioner=_mlp_cond((6,), "tanh")), fb.Scaling()]),
        _vectors(5), [((5,), None)] * 4, context=_rng(2).standard_normal((5, 3)),
        tags=frozenset({"context"})),
    "conditional_broadcast_context": lambda: Case(
        fb.FlowSpec(name="cond", event_shape=(4,), context_dim=2, layers=[
            A(mask=fb.HalfMask(part="last"), conditioner=_mlp_cond((), "relu"),
              scale=fb.ClampScale(low=-0.3, high=0.3))]),
        _vectors(4, batch=(2, 3)), [((4,), None)], context=_rng(2).standard_normal((1, 2)),
        tags=frozenset({"context"})),
    # neural splines: inputs on the interval's edges, in the tails and on the knots
    "spline_coupling_d5": lambda: _one(
        fb.SplineCoupling(conditioner=_mlp_cond((8,), "tanh"),
                          spline=fb.RationalQuadraticSpline(bins=5)), (5,), _spline_inputs(5)),
    "spline_coupling_parity_pyro_edges_d4": lambda: _one(
        fb.SplineCoupling(mask=fb.ParityMask(), conditioner=_mlp_cond((6,)),
                          spline=fb.RationalQuadraticSpline(bins=3, bound=2.0,
                                                            edge_derivative="pyro")),
        (4,), _spline_inputs(4, bound=2.0)),
    "spline_coupling_linear_d4": lambda: _one(
        fb.SplineCoupling(conditioner=_mlp_cond((8,)), spline=fb.RationalLinearSpline(
            bins=4, edge_derivative="pyro")), (4,), _spline_inputs(4)),
    "spline_coupling_passed_spline_d5": lambda: _one(
        fb.SplineCoupling(mask=fb.SplitMask(size=2), conditioner=_mlp_cond((8,)),
                          spline=fb.RationalLinearSpline(bins=3), passed_spline=True),
        (5,), _spline_inputs(5)),
    "spline_coupling_passed_spline_quadratic_d4": lambda: _one(
        fb.SplineCoupling(mask=fb.ParityMask(), conditioner=_mlp_cond((8,)),
                          spline=fb.RationalQuadraticSpline(bins=4, eps=1e-6),
                          passed_spline=True), (4,), _spline_inputs(4)),
    "elementwise_spline_linear_d2": lambda: _one(
        fb.ElementwiseSpline(spline=fb.RationalLinearSpline(bins=5, min_lambda=0.1)), (2,),
        _spline_inputs(2)),
    "spline_coupling_image_checkerboard": lambda: _one(
        fb.SplineCoupling(mask=fb.CheckerboardMask(parity="odd"), conditioner=_res(1, 3),
                          spline=fb.RationalQuadraticSpline(bins=4)),
        (2, 4, 4), 2.0 * _images((2, 4, 4))),
    "spline_coupling_image_channel_linear": lambda: _one(
        fb.SplineCoupling(mask=fb.ChannelMask(part="last"), conditioner=_res(1, 3),
                          spline=fb.RationalLinearSpline(bins=3, bound=2.0)),
        (3, 2, 4), 2.0 * _images((3, 2, 4))),
    "elementwise_spline_d3": lambda: _one(
        fb.ElementwiseSpline(spline=fb.RationalQuadraticSpline(bins=6)), (3,), _spline_inputs(3)),
    "spline_conditional_d3": lambda: Case(
        fb.FlowSpec(name="cond_spline", event_shape=(3,), context_dim=2, layers=[
            fb.SplineCoupling(mask=fb.SplitMask(size=2), conditioner=_mlp_cond((8,))),
            fb.ElementwiseSpline(conditioner=_mlp_cond((6,), "tanh"),
                                 spline=fb.RationalQuadraticSpline(bins=4, bound=4.0))]),
        _spline_inputs(3), [((3,), None)] * 2, context=_rng(2).standard_normal((9, 2)),
        tags=frozenset({"context"})),
    # autoregressive layers: MAF (the MADE reads y) and IAF (it reads x), the entries in a
    # given order, Pyro's, TFP's and explicit degrees, a context, a spline map
    "maf_affine_order_pyro_degrees_d5": lambda: _one(
        fb.AffineAutoregressive(conditioner=fb.MADE(hidden=(8, 7), order=(3, 0, 4, 2, 1),
                                                    degrees="pyro"),
                                scale=fb.ClampScale(low=-0.5, high=0.4)), (5,), _vectors(5)),
    "maf_affine_softplus_d3": lambda: _one(
        fb.AffineAutoregressive(conditioner=fb.MADE(hidden=(6, 6), activation="tanh"),
                                scale=fb.SoftplusScale()), (3,), _vectors(3)),
    "iaf_affine_equal_degrees_tanh_d4": lambda: _one(
        fb.AffineAutoregressive(conditioner=fb.MADE(hidden=(6,), activation="tanh"),
                                direction="iaf", scale=fb.SoftClampScale(bound=0.8)),
        (4,), _vectors(4, batch=(2, 3))),
    "iaf_spline_explicit_degrees_d3": lambda: _one(
        fb.SplineAutoregressive(conditioner=fb.MADE(hidden=(4,), degrees=((0, 2, 1, 1),),
                                                    order=(1, 2, 0)),
                                spline=fb.RationalQuadraticSpline(bins=4), direction="iaf"),
        (3,), _spline_inputs(3)),
    "maf_spline_linear_d4": lambda: _one(
        fb.SplineAutoregressive(conditioner=fb.MADE(hidden=(8,), activation="elu"),
                                spline=fb.RationalLinearSpline(bins=3, edge_derivative="pyro")),
        (4,), _spline_inputs(4)),
    "autoregressive_conditional_d3": lambda: Case(
        fb.FlowSpec(name="cond_ar", event_shape=(3,), context_dim=2, layers=[
            fb.AffineAutoregressive(conditioner=fb.MADE(hidden=(6,), degrees="pyro")),
            fb.AffineAutoregressive(conditioner=fb.MADE(hidden=(5, 5), order=(2, 0, 1)),
                                    direction="iaf", scale=fb.SigmoidScale())]),
        _vectors(3), [((3,), None)] * 2, context=_rng(2).standard_normal((5, 2)),
        tags=frozenset({"context"})),
    # every entry's affine map: weights without a context, m(c) from the context alone
    "elementwise_affine_d1": lambda: _one(fb.ElementwiseAffine(), (1,), _vectors(1)),
    "elementwise_affine_soft_clamp_d3": lambda: _one(
        fb.ElementwiseAffine(scale=fb.SoftClampScale(bound=0.6)), (3,), _vectors(3)),
    "elementwise_affine_conditional_d1": lambda: Case(
        fb.FlowSpec(name="cond1", event_shape=(1,), context_dim=3, layers=[
            fb.ElementwiseAffine(conditioner=_mlp_cond((8,), "tanh"))]),
        _vectors(1, batch=(2, 3)), [((1,), None)], context=_rng(2).standard_normal((3, 3)),
        tags=frozenset({"context"})),
    "elementwise_affine_conditional_stack_d2": lambda: Case(
        fb.FlowSpec(name="cond2", event_shape=(2,), context_dim=2, layers=[
            fb.ElementwiseAffine(conditioner=_mlp_cond((6, 6)), scale=fb.SigmoidScale()),
            fb.ElementwiseAffine(conditioner=_mlp_cond(()), scale=fb.ClampScale(low=-0.2))]),
        _vectors(2), [((2,), None)] * 2, context=_rng(2).standard_normal((5, 2)),
        tags=frozenset({"context"})),
    "context_embedding": lambda: Case(
        fb.FlowSpec(name="embedded", event_shape=(4,), context_dim=3,
                    context_embedding=fb.ContextEmbedding(features=5, hidden=(6,),
                                                          activation="tanh"),
                    layers=[A(mask=fb.HalfMask(), conditioner=_mlp_cond((8,))),
                            fb.Permutation(), A(mask=fb.HalfMask(), conditioner=_mlp_cond(()))]),
        _vectors(4), [((4,), None)] * 3, context=_rng(2).standard_normal((5, 3)),
        tags=frozenset({"context", "context_embedding"})),
}  # fmt: skip


def _local(params, i):
    prefix = f"layers.{i}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _steps(case):
    return [FORMULAS[layer.type](layer, shape, case.training)
            for layer, (shape, _) in zip(case.spec.layers, case.acts, strict=True)]  # fmt: skip


def _on(active, fn, v, c):
    """``fn`` on the first ``active`` channels (all when None); the rest pass unchanged."""
    if active is None:
        return fn(v, c)
    out, log_det = fn(v[..., :active, :, :], c)
    return np.concatenate([out, v[..., active:, :, :]], axis=-3), log_det


def _features(case, params):
    emb = case.spec.context_embedding
    if case.context is None or emb is None:
        return case.context
    return _embedding(params, case.context, emb)


def formula_forward(case, params, x):
    """``(y, log_det, params after the call)`` by the formulas, layer after layer."""
    c, state, total = _features(case, params), dict(params), 0.0
    for i, (f, (_, active)) in enumerate(zip(_steps(case), case.acts, strict=True)):
        p = _local(params, i)
        if f.update is not None:
            head = x if active is None else x[..., :active, :, :]
            state.update({f"layers.{i}.{k}": v for k, v in f.update(p, head).items()})
        x, log_det = _on(active, lambda v, c, f=f, p=p: f.forward(p, v, c), x, c)
        total = total + log_det
    return x, total, state


def formula_inverse(case, params, y):
    c, total = _features(case, params), 0.0
    steps = list(enumerate(zip(_steps(case), case.acts, strict=True)))
    for i, (f, (_, active)) in reversed(steps):
        p = _local(params, i)
        y, log_det = _on(active, lambda v, c, f=f, p=p: f.inverse(p, v, c), y, c)
        total = total + log_det
    return y, total


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _rel_log_det(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / (1.0 + np.max(np.abs(b))))


def _reference(case, params):
    ref = fb.to_numpy(case.spec, params)
    for layer in ref.layers:
        if hasattr(layer, "training"):
            layer.training = case.training
    return ref


def run_case(name):
    """The case's errors: forward, forward log-det, state, inverse, inverse log-det."""
    case = CASES[name]()
    params = fb.init_params(case.spec, seed=7, init="random")
    ref = _reference(case, params)
    ctx = () if case.context is None else (case.context,)
    x = case.x.copy()
    y, ld = ref.forward_with_log_det(x, *ctx)
    want_y, want_ld, after = formula_forward(case, params, case.x)
    np.testing.assert_array_equal(x, case.x)  # the input is left alone
    errors = {"forward": _rel(y, want_y), "fldj": _rel_log_det(ld, want_ld)}
    state = {f"layers.{i}.{k}": v for i, layer in enumerate(ref.layers)
             for k, v in layer.neutral_params().items()}  # fmt: skip
    moved = [k for k in state if not np.array_equal(state[k], params[k])]
    assert sorted(moved) == sorted(k for k in after if not np.array_equal(after[k], params[k]))
    if moved:  # a training forward's running averages
        errors["state"] = max(_rel(state[k], after[k]) for k in moved)
    fresh = np.array(y, copy=True)  # a new object: no cache can answer
    x_back, ild = ref.inverse_with_log_det(fresh, *ctx)
    want_x, want_ild = formula_inverse(case, after, np.array(y, copy=True))
    errors["inverse"] = _rel(x_back, want_x)
    errors["ildj"] = _rel_log_det(ild, want_ild)
    if not case.training:  # the evaluation forward is what the inverse inverts
        errors["round_trip"] = _rel(x_back, case.x)
        errors["ildj_vs_fldj"] = _rel_log_det(ild, -want_ld)
    return errors


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_matches_the_formula(name):
    errors = run_case(name)
    print(f"{name}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    assert max(errors.values()) <= TOLERANCE, errors


# ------------------------------------------------------------------ the cases cover it all
def _tags(case) -> set[str]:
    """What a case exercises: layer types, mask kinds, scale maps, activations,
    conditioner kinds, and its own tags."""
    out = set(case.tags)
    for layer in case.spec.layers:
        out.add(f"layer:{layer.type}")
        if hasattr(layer, "mask"):
            out.add(f"mask:{layer.mask.kind}")
            cond = layer.conditioner
            kind = "resnet" if isinstance(cond, S.ResNetConditioner) else "mlp"
            out |= {f"conditioner:{kind}", f"activation:{kind}:{cond.activation}"}
        if hasattr(layer, "scale"):
            out.add(f"scale:{layer.scale.kind}")
        if hasattr(layer, "spline"):
            out.add(f"spline:{layer.spline.kind}")
        if layer.type == "permutation":
            out.add(f"permutation:{layer.kind}")
    return out


COVERED = set().union(*(_tags(factory()) for factory in CASES.values()))


def _union_tags(union, field):
    return {typing.get_args(m.model_fields[field].annotation)[0]
            for m in typing.get_args(typing.get_args(union)[0])}  # fmt: skip


def _required():
    activations = typing.get_args(fb.Conditioner.model_fields["activation"].annotation)
    permutations = typing.get_args(fb.Permutation.model_fields["kind"].annotation)
    return sorted(
        {f"layer:{t}" for t in set(layers.REGISTRY) | _union_tags(S.Layer, "type")}
        | {f"mask:{k}" for k in _union_tags(S.Mask, "kind")}
        | {f"scale:{k}" for k in _union_tags(S.ScaleMap, "kind")}
        | {f"spline:{k}" for k in _union_tags(S.SplineMap, "kind")}
        | {f"activation:{net}:{a}" for net in ("mlp", "resnet") for a in activations}
        | {f"permutation:{k}" for k in permutations}
        | {"conditioner:mlp", "conditioner:resnet", "context", "context_embedding",
           "batch_norm:training", "batch_norm:evaluation", "factor_out:later_layers"}
    )  # fmt: skip


@pytest.mark.parametrize("item", _required())
def test_every_layer_type_and_option_has_a_formula_case(item):
    """A new layer type (in ``layers.REGISTRY`` or the spec's ``Layer`` union), mask,
    scale map or activation fails here until this file states its formula and a case."""
    if item.startswith("layer:"):
        assert item.removeprefix("layer:") in FORMULAS, f"no formula for {item}"
    assert item in COVERED, f"no formula case covers {item}"


def test_the_clamp_cases_clamp():
    """The clamp cases see raw log-scales on both sides of a bound and inside, so the
    formula test is not passing on an identity clamp."""
    for name in ("scale_clamp", "affine_explicit", "channel_affine_first_k5"):
        case = CASES[name]()
        layer = case.spec.layers[0]
        p = _local(fb.init_params(case.spec, seed=7, init="random"), 0)
        if layer.mask.kind == "channel":
            c = case.x.shape[-3]
            k = c // 2
            out = _resnet(p, case.x[..., :k, :, :], layer.conditioner)
            raw = out[..., c - k:, :, :]
        else:
            a, b = _passed(layer.mask, case.x.shape[-1])
            raw = _mlp(p, "conditioner.", case.x[..., a], layer.conditioner)[..., len(b):]
        low, high = layer.scale.low, layer.scale.high
        assert (raw < low).any() and (raw > high).any(), name
        assert ((raw > low) & (raw < high)).any(), name


def test_the_formulas_convolution_is_the_stated_sum():
    """The test's own convolution against the definition, written as loops."""
    rng = np.random.default_rng(0)
    x, kernel, bias = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 3, 3, 2)), \
        rng.standard_normal(2)  # fmt: skip
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    want = np.zeros((2, 2, 4, 5))
    for n in range(2):
        for o in range(2):
            for r in range(4):
                for s in range(5):
                    want[n, o, r, s] = bias[o] + np.sum(
                        padded[n, :, r:r + 3, s:s + 3] * kernel[:, :, :, o].transpose(2, 0, 1))
    np.testing.assert_allclose(_conv2d(x, kernel, bias), want, rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------ planning
def test_plan_flow_threads_each_layers_output_shape_to_the_next(monkeypatch):
    """The spec's layer models say each layer's output shape (a squeeze's, say); planning
    hands it to the next layer."""
    seen = []

    def widening(layer, shape, context=0):  # a stand-in for a squeeze: the output shape differs
        seen.append(shape)
        return dataclasses.replace(layers.plan_scaling(layer, shape), output_shape=(5,))

    monkeypatch.setitem(layers.REGISTRY, "scaling", widening)
    monkeypatch.setattr(S.Scaling, "output_shape", lambda self, shape: (5,))
    spec = fb.FlowSpec(name="w", event_shape=(3,), layers=[S.Scaling(), S.Scaling()])
    plans = layers.plan_flow(spec)
    assert seen == [(3,), (5,)]
    assert [p.event_shape for p in plans] == [(3,), (5,)]


# ------------------------------------------------------------------ registration
def test_every_layer_type_is_registered_once_and_everything_derives_from_it():
    import typing

    from flowbridge.spec import models

    tags = [layers._tag(m) for m in S.LAYER_MODELS]
    assert sorted(tags) == sorted(layers.LAYER_TYPES) == sorted(layers.REGISTRY)
    union = typing.get_args(typing.get_args(S.Layer)[0])
    assert list(union) == S.LAYER_MODELS  # the union is the registrations
    assert set(tags) <= models.TAGS
    for model in S.LAYER_MODELS:  # exported where users look for them
        assert getattr(fb, model.__name__) is model and model.__name__ in fb.__all__
        assert layers.LAYER_TYPES[layers._tag(model)].model is model


def test_a_model_without_a_definition_is_refused_by_name():
    class Fake:
        model_fields = {"type": type("F", (), {"annotation": typing_literal("fake_layer")})()}

    with pytest.raises(ImportError, match="without a definition in flowbridge.layers: Fake"):
        layers.check_definitions([*S.LAYER_MODELS, Fake], layers.LAYER_TYPES)
    layers.check_definitions(S.LAYER_MODELS, layers.LAYER_TYPES)


def typing_literal(tag):
    from typing import Literal

    return Literal[tag]


def test_a_type_cannot_be_defined_twice():
    with pytest.raises(ValueError, match="'scaling' is defined twice"):
        layers.definition(S.Scaling)(lambda layer, shape, context=0: None)
