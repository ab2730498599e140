"""Data and flows: dequantization, bits per dimension, and data-dependent initialisation.

A flow is a density on the reals; image pixels take ``levels`` integer values. RealNVP's
recipe (Dinh et al. 2017, sec. 4.1; Theis et al. 2016): dequantize, ``x = (k + u) / L``
with ``u`` uniform in ``[0, 1)`` per entry, so ``x`` lies in ``[0, 1)``, and model ``x``
with a continuous density ``p`` (a flow whose first layer is the logit preprocessing,
:class:`flowbridge.Logit`). Then ``log P(k) >= E_u[log p(x)] - D log L`` for the
discrete probability of ``k``, and the figure reported is that bound in bits per entry:
``bits/dim = -(log p(x) - D log L) / (D log 2) = -log p(x) / (D log 2) + log2(L)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .build import to_numpy
from .errors import ParamError
from .layers import plan_flow
from .params import check_params
from .spec import FlowSpec


def _integer(value: Any, name: str, least: int) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``least``; else a
    ValueError naming ``name``."""
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not integer or value < least:
        raise ValueError(f"{name}: expected an integer >= {least}, got {value!r}")
    return int(value)


def dequantize(values, levels: int, rng: np.random.Generator) -> np.ndarray:
    """``(k + u) / levels`` in float64 for integers ``k`` in ``[0, levels)``, ``u`` uniform
    in ``[0, 1)`` from ``rng``; values outside that range are a ValueError."""
    k = np.asarray(values)
    levels = _integer(levels, "levels", 2)
    if k.size and (k.min() < 0 or k.max() >= levels or not np.all(k == np.round(k))):
        raise ValueError(f"values: expected integers in [0, {levels}), got values in "
                         f"[{k.min()}, {k.max()}]")  # fmt: skip
    return (k + rng.uniform(0.0, 1.0, k.shape)) / levels


def bits_per_dim(log_prob, dims: int, levels: int) -> np.ndarray:
    """The discrete bits per entry of dequantized data from its continuous ``log_prob``
    (nats, one per example) over ``dims`` entries of ``levels`` values each: ``dims`` an
    integer >= 1, ``levels`` one >= 2 (else a ValueError naming the argument)."""
    dims, levels = _integer(dims, "dims", 1), _integer(levels, "levels", 2)
    log_prob = np.asarray(log_prob, dtype=np.float64)
    return -log_prob / (dims * math.log(2.0)) + math.log2(levels)


def actnorm_init(spec: FlowSpec, params: Any, x: Any, *, eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Glow's data-dependent initialisation, as an explicit step: ``params`` with every
    layer that has one (its plan's ``data_init`` hook) initialised from data: each ActNorm
    layer's ``log_scale`` and ``shift`` set so that the layer's output over the
    batch ``x`` (``(n, *event_shape)``) has zero mean and unit variance per channel (per
    entry for vectors), layer after layer in the float64 reference (a later ActNorm sees
    the earlier ones already set). Both backends then start from the same weights.

    ``x`` must hold finite real numbers (else a ParamError naming x). ``eps`` (a
    positive number) is added to each standard deviation: a channel with no variance in
    ``x`` gets the finite scale ``1 / eps`` (and its output is about 0), never an
    infinite one; a value that would overflow float64 is a ParamError naming it.
    """
    real = isinstance(eps, (int, float, np.integer, np.floating)) and not isinstance(eps, bool)
    if not real or not 0 < eps < math.inf:
        raise ValueError(f"eps: expected a positive finite number, got {eps!r}")
    out = check_params(spec, params)
    flow = to_numpy(spec, out)
    try:
        h = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged nesting, say
        raise ParamError(f"x: expected an array of real numbers: {exc}") from None
    if h.dtype.kind not in "iuf":
        raise ParamError(f"x: expected real numbers, got dtype {h.dtype}")
    h = h.astype(np.float64)
    if h.shape[1:] != tuple(spec.event_shape) or len(h) < 2:
        raise ParamError(f"x: expected at least 2 examples of shape {tuple(spec.event_shape)}, "
                         f"got an array of shape {h.shape}")  # fmt: skip
    if not np.all(np.isfinite(h)):
        bad = np.argwhere(~np.isfinite(h))[0]
        raise ParamError(f"x: expected finite values, got {h[tuple(bad)]} at index "
                         f"{tuple(int(i) for i in bad)}")  # fmt: skip
    for i, plan in enumerate(plan_flow(spec)):
        obj = flow.layers[i]
        if plan.data_init is not None:  # a layer with a data-dependent initialisation
            own = obj.neutral_params()
            for name, value in plan.data_init(h, eps).items():
                if not np.all(np.isfinite(value)):
                    raise ParamError(f"layers.{i}.{name}: overflows float64 when set from x "
                                     f"(eps {eps:g}); raise eps or rescale x")  # fmt: skip
                own[name][...] = value
                out[f"layers.{i}.{name}"] = own[name].copy()
        h = obj.forward(h)
    return out
