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
    """Dequantize integer data: ``x = (k + u) / levels`` in float64.

    RealNVP's recipe for discrete data such as image pixels: each integer ``k`` in
    ``[0, levels)`` gets its own ``u`` uniform in ``[0, 1)`` from ``rng``, so ``x`` lies in
    ``[0, 1)``, ready for a flow whose first layer is the logit preprocessing
    (:class:`flowbridge.Logit`). Report the fit with :func:`flowbridge.bits_per_dim`.

    Args:
        values: integers ``k`` in ``[0, levels)``, an array-like of any shape (a batch of
            images ``(*batch, C, H, W)``, say); integer-valued floats are accepted.
        levels: the number of values each entry takes, an integer >= 2 (256 for 8-bit
            pixels).
        rng: the ``numpy.random.Generator`` the noise ``u`` is drawn from.

    Returns:
        ``numpy.ndarray``: float64 values in ``[0, 1)``, of the shape of ``values``.

    Raises:
        ValueError: ``levels`` is not an integer >= 2 (a bool is refused), or ``values``
            holds a value outside ``[0, levels)`` or one that is not an integer.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> pixels = np.array([[0, 128, 255]], dtype=np.uint8)
        >>> x = fb.dequantize(pixels, 256, np.random.default_rng(0))
        >>> x.shape, x.dtype.name, bool(np.all((0 <= x) & (x < 1)))
        ((1, 3), 'float64', True)
        >>> np.array_equal(np.floor(x * 256), pixels)  # each k is recovered
        True
    """
    k = np.asarray(values)
    levels = _integer(levels, "levels", 2)
    if k.size and (k.min() < 0 or k.max() >= levels or not np.all(k == np.round(k))):
        raise ValueError(f"values: expected integers in [0, {levels}), got values in "
                         f"[{k.min()}, {k.max()}]")  # fmt: skip
    return (k + rng.uniform(0.0, 1.0, k.shape)) / levels


def bits_per_dim(log_prob, dims: int, levels: int) -> np.ndarray:
    """The discrete bits per entry of dequantized data, from its continuous ``log_prob``.

    For data dequantized with :func:`flowbridge.dequantize` and modelled with a continuous
    density ``p``, ``log P(k) >= E_u[log p(x)] - D log L``; the figure is that bound in
    bits per entry: ``bits/dim = -log p(x) / (D log 2) + log2(L)``, with ``D = dims``
    and ``L = levels``.

    Args:
        log_prob: the continuous log-density ``log p(x)`` of each example in nats, an
            array-like of shape ``(*batch,)`` (one per example).
        dims: the number of entries ``D`` of one example (``C * H * W`` for an image), an
            integer >= 1.
        levels: the number of values ``L`` each entry takes, an integer >= 2.

    Returns:
        ``numpy.ndarray``: float64 bits per dimension, of the shape of ``log_prob``.

    Raises:
        ValueError: ``dims`` is not an integer >= 1 or ``levels`` not an integer >= 2 (a
            bool is refused); the message names the argument.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> # the uniform density on [0, 1)^D (log p = 0) costs log2(256) = 8 bits an entry
        >>> fb.bits_per_dim(np.zeros(2), dims=3 * 32 * 32, levels=256)
        array([8., 8.])
    """
    dims, levels = _integer(dims, "dims", 1), _integer(levels, "levels", 2)
    log_prob = np.asarray(log_prob, dtype=np.float64)
    return -log_prob / (dims * math.log(2.0)) + math.log2(levels)


def actnorm_init(spec: FlowSpec, params: Any, x: Any, *, eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Glow's data-dependent initialisation, as an explicit step.

    Every layer that has one (its plan's ``data_init`` hook, :class:`flowbridge.layers.Plan`)
    is initialised from data: each :class:`flowbridge.ActNorm` layer's ``log_scale`` and
    ``shift`` are set so that the layer's output over the batch ``x`` has zero mean and
    unit variance per channel (per entry for vectors), layer after layer in the float64
    reference (a later ActNorm sees the earlier ones already set). Every backend then
    starts from the same weights. ``eps`` is added to each standard deviation: a channel
    with no variance in ``x`` gets the finite scale ``1 / eps`` (and its output is about
    0), never an infinite one.

    Args:
        spec: the flow, a :class:`flowbridge.FlowSpec`.
        params: neutral parameters for ``spec`` (:func:`flowbridge.init_params`), checked
            with :func:`flowbridge.check_params`; not modified.
        x: a batch of at least 2 examples, ``(n, *event_shape)`` (``(n, D)``, or
            ``(n, C, H, W)`` for an image flow), of finite real numbers (integers or
            floats, used as float64).
        eps: a positive finite number added to each standard deviation, default 1e-6.

    Returns:
        ``dict[str, numpy.ndarray]``: a new neutral parameter set, ``params`` with the
        data-initialised parameters replaced.

    Raises:
        ValueError: ``eps`` is not a positive finite number.
        ParamError: ``params`` do not fit ``spec``; ``x`` is not an array of finite real
            numbers, or has fewer than 2 examples or not the event shape (the message
            names ``x``); or a value set from ``x`` overflows float64 (the message names
            the parameter: raise ``eps`` or rescale ``x``).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.FlowSpec(name="a", event_shape=(3,), layers=[fb.ActNorm()])
        >>> x = np.random.default_rng(0).normal(5.0, 2.0, (100, 3))
        >>> params = fb.actnorm_init(spec, fb.init_params(spec), x)
        >>> y = fb.to_numpy(spec, params).forward(x)
        >>> np.allclose(y.mean(axis=0), 0), np.allclose(y.std(axis=0), 1)
        (True, True)
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
