"""The numpy backend's prelude: what every generated numpy module needs at run time, as
real code (imported, linted and tested here) that flowbridge.codegen inlines into each
generated module, definition by definition, from this source."""

from __future__ import annotations

import math

import numpy as np


def _batch_mean(x, event_ndims):
    """The mean per channel of an image (C, H, W) or per entry of a vector, over every
    batch dimension (and H, W): (C,)."""
    flat = x.reshape((-1,) + x.shape[x.ndim - event_ndims :])
    return flat.mean(axis=(0, 2, 3) if event_ndims == 3 else 0)


def _conv(sizes, kernel_size, init, rng):
    """Convolutions sizes[0] -> ... -> sizes[-1] channels, kernels (k, k, in, out), each
    weight started by its bound in ``init`` (the layer's entries of PARAM_INIT)."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        shape = (kernel_size, kernel_size, n_in, n_out)
        kernels.append(_initial(init[f"conditioner.{j}.kernel"], shape, rng))
        biases.append(_initial(init[f"conditioner.{j}.bias"], (n_out,), rng))
    return kernels, biases


def _conv2d(x, kernel, bias):
    """Stride-1 "same" cross-correlation: x (*batch, C_in, H, W), kernel (k, k, C_in,
    C_out), bias (C_out,) -> (*batch, C_out, H, W), summed tap by tap in float64."""
    k, height, width = kernel.shape[0], x.shape[-2], x.shape[-1]
    pad = [(0, 0)] * (x.ndim - 2) + [(k // 2, k // 2)] * 2
    padded = np.pad(x, pad)
    out = np.zeros(x.shape[:-3] + (kernel.shape[3], height, width))
    for i in range(k):
        for j in range(k):
            window = padded[..., i : i + height, j : j + width]
            out += np.einsum("...chw,co->...ohw", window, kernel[i, j])
    return out + bias[:, None, None]


def _repeat(step, count, state, *args):
    """``state = step(state, *args)``, ``count`` times: a loop over a method written once
    (an autoregressive layer's D-pass direction)."""
    for _ in range(count):
        state = step(state, *args)
    return state


def _gather(values, index):
    """values[..., index] along the last axis: values (..., K), index (...) of integers,
    their leading dims broadcast."""
    shape = np.broadcast_shapes(values.shape[:-1], index.shape)
    values = np.broadcast_to(values, shape + values.shape[-1:])
    return np.take_along_axis(values, np.broadcast_to(index, shape)[..., None], axis=-1)[..., 0]


def _pad_last(x, before, after, value):
    """x with ``before`` and ``after`` entries of ``value`` added along the last axis."""
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(before, after)], constant_values=value)


def _softmax(x):
    """exp(x) / sum(exp(x)) along the last axis, the maximum subtracted first."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _transpose_last(x, perm):
    """x with its last ``len(perm)`` dims permuted (result dim i is dim ``perm[i]``)."""
    lead = x.ndim - len(perm)
    return x.transpose(tuple(range(lead)) + tuple(lead + i for i in perm))


def _solve_triangular(a, b, lower):
    """x with a @ x = b for a triangular (n, n), by substitution row by row: only a's
    lower (``lower=True``) or upper triangle is read, as LAPACK's trsm reads it."""
    a = np.tril(a) if lower else np.triu(a)
    x = np.zeros(b.shape, np.result_type(a, b))
    for i in range(a.shape[-1]) if lower else range(a.shape[-1] - 1, -1, -1):
        x[i] = (b[i] - a[i] @ x) / a[i, i]  # the rows not yet solved are zero
    return x


_erf = np.vectorize(math.erf, otypes=[np.float64])  # correctly rounded, float64


def _squeeze2x2(x):
    """(*batch, C, H, W) -> (*batch, 4C, H/2, W/2): y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]."""
    c, height, width = x.shape[-3:]
    y = x.reshape(-1, c, height // 2, 2, width // 2, 2).transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(x.shape[:-3] + (4 * c, height // 2, width // 2))


def _unsqueeze2x2(y):
    """The inverse of a 2x2 squeeze: (*batch, 4C, H/2, W/2) -> (*batch, C, H, W)."""
    c4, height, width = y.shape[-3:]
    x = y.reshape(-1, c4 // 4, 2, 2, height, width).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(y.shape[:-3] + (c4 // 4, 2 * height, 2 * width))


def _initial(bound, shape, rng):
    """An array uniform in +-bound, or zeros where the bound is 0 (PARAM_INIT)."""
    if bound == 0.0:
        return np.zeros(shape)
    return rng.uniform(-bound, bound, size=shape)


def _identity(bound, shape, rng):
    """A square matrix (an LU factorisation's packed factors): the identity, plus uniform
    in +-bound where the bound is not 0 (PARAM_INIT)."""
    return np.eye(shape[0]) + _initial(bound, shape, rng)


def _dense(sizes, init, rng, prefix="conditioner."):
    """Dense layers sizes[0] -> ... -> sizes[-1], kernels (in, out), each weight started
    by its bound in ``init`` (the layer's entries of PARAM_INIT, named {prefix}{j}.*)."""
    kernels, biases = [], []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        kernels.append(_initial(init[f"{prefix}{j}.kernel"], (n_in, n_out), rng))
        biases.append(_initial(init[f"{prefix}{j}.bias"], (n_out,), rng))
    return kernels, biases


def _float64(x):
    return np.asarray(x, dtype=np.float64)


def _checked(layer, value, name, event):
    """``value`` as float64 if it holds real numbers of shape (*batch, *event); else a
    TypeError or ValueError naming the expected shape (complex values are refused, never
    cast)."""
    where = f"{type(layer).__name__}: {name}"
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{where}: expected real numbers, got dtype {array.dtype}")
    if array.ndim < len(event) or array.shape[array.ndim - len(event) :] != event:
        want = ", ".join(["*batch", *map(str, event)])
        raise ValueError(f"{where}: expected shape ({want}), got {array.shape}")
    return array.astype(np.float64, copy=False)


def _in_domain(layer, value, name):
    """``value`` if every entry lies in the layer's ``domain_interval`` (None: the reals,
    nothing to check); else a ValueError naming the layer, the input and the interval (a
    NaN lies in no interval)."""
    if layer.domain_interval is None:
        return value
    low, high = layer.domain_interval
    outside = ~((value >= low) & (value <= high))
    if outside.any():
        raise ValueError(
            f"{type(layer).__name__}: {name}: expected values in [{low:g}, {high:g}] (the "
            f"layer's domain), got {value[outside].flat[0]:g} ({int(outside.sum())} of "
            f"{value.size} entries outside)"
        )
    return value


class _Layer:
    """The reference API shared by every layer: checked inputs, float64 throughout. A
    layer whose input is not any real vector (a logit's data in [0, 1]) says so in
    ``domain_interval``, and its input is checked against it in every forward call."""

    domain_interval = None  # the closed interval every input entry lies in; None: the reals

    def __init__(self, event_shape, output_shape=None):
        self.event_shape = tuple(event_shape)
        self.output_shape = tuple(output_shape or event_shape)

    def forward_with_log_det(self, x):
        """(y, log|det dy/dx|) for x of shape (*batch, *event_shape)."""
        x = _in_domain(self, _checked(self, x, "x", self.event_shape), "x")
        return self._forward_with_log_det(x)

    def inverse_with_log_det(self, y):
        """(x, log|det dx/dy|) for y of shape (*batch, *output_shape)."""
        return self._inverse_with_log_det(_checked(self, y, "y", self.output_shape))

    def forward(self, x):
        return self.forward_with_log_det(x)[0]

    def inverse(self, y):
        return self.inverse_with_log_det(y)[0]

    def forward_log_det_jacobian(self, x):
        return self.forward_with_log_det(x)[1]

    def inverse_log_det_jacobian(self, y):
        return self.inverse_with_log_det(y)[1]


def _checked_context(layer, context, x=None):
    """``context`` as float64 if it holds real numbers of shape (*batch, context_dim) whose
    batch broadcasts to x's (when x is given: a context embedding's input has none yet);
    else a TypeError or ValueError naming both sizes."""
    where = f"{type(layer).__name__}: context"
    array = np.asarray(context)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{where}: expected real numbers, got dtype {array.dtype}")
    if array.ndim < 1 or array.shape[-1] != layer.context_dim:
        raise ValueError(
            f"{where}: expected shape (*batch, {layer.context_dim}) (the flow's context_dim), "
            f"got {array.shape}"
        )
    if x is None:
        return array.astype(np.float64, copy=False)
    batch = x.shape[: x.ndim - len(layer.event_shape)]
    try:
        fits = np.broadcast_shapes(array.shape[:-1], batch) == batch
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{where}: its batch shape {array.shape[:-1]} does not broadcast to x's {batch}"
        )
    return array.astype(np.float64, copy=False)


class _ConditionalLayer(_Layer):
    """A layer that reads the context: every call takes it after the input."""

    def __init__(self, event_shape, context_dim):
        super().__init__(event_shape)
        self.context_dim = context_dim

    def forward_with_log_det(self, x, context):
        """(y, log|det dy/dx|) for x (*batch, *event_shape), context (*batch, context_dim)."""
        x = _checked(self, x, "x", self.event_shape)
        return self._forward_with_log_det(x, _checked_context(self, context, x))

    def inverse_with_log_det(self, y, context):
        """(x, log|det dx/dy|) for y (*batch, *event_shape), context (*batch, context_dim)."""
        y = _checked(self, y, "y", self.output_shape)
        return self._inverse_with_log_det(y, _checked_context(self, context, y))

    def forward(self, x, context):
        return self.forward_with_log_det(x, context)[0]

    def inverse(self, y, context):
        return self.inverse_with_log_det(y, context)[0]

    def forward_log_det_jacobian(self, x, context):
        return self.forward_with_log_det(x, context)[1]

    def inverse_log_det_jacobian(self, y, context):
        return self.inverse_with_log_det(y, context)[1]


class Flow(_Layer):
    """The layers applied first to last; log-dets add up."""

    def __init__(self, layers):
        super().__init__(layers[0].event_shape, layers[-1].output_shape)
        self.layers = list(layers)

    def _forward_with_log_det(self, x):
        total = np.zeros(x.shape[: x.ndim - len(self.event_shape)])
        for layer in self.layers:
            x, log_det = layer.forward_with_log_det(x)
            total = total + log_det
        return x, total

    def _inverse_with_log_det(self, y):
        total = np.zeros(y.shape[: y.ndim - len(self.output_shape)])
        for layer in reversed(self.layers):
            y, log_det = layer.inverse_with_log_det(y)
            total = total + log_det
        return y, total


def neutral_params(flow):
    """{neutral name: array} of a flow made by build_flow (the live arrays): the context
    embedding's first, where the flow has one, then each layer's."""
    params = {}
    embedding = getattr(flow, "embedding", None)
    if embedding is not None:
        for name, value in embedding.neutral_params().items():
            params[f"context_embedding.{name}"] = value
    for i, layer in enumerate(flow.layers):
        for name, value in layer.neutral_params().items():
            params[f"layers.{i}.{name}"] = value
    return params


def load_neutral_params(flow, params):
    """Copy ``params`` (neutral names -> arrays) into ``flow`` as float64, checking names
    and shapes."""
    own = neutral_params(flow)
    missing, extra = sorted(own.keys() - params.keys()), sorted(params.keys() - own.keys())
    if missing or extra:
        raise KeyError(f"params do not fit the flow: missing {missing}, unexpected {extra}")
    for name, target in own.items():
        value = _float64(params[name])
        if value.shape != target.shape:
            raise ValueError(f"{name}: expected shape {target.shape}, got {value.shape}")
        target[...] = value
    return flow


class ConditionalFlow(_ConditionalLayer):
    """The layers applied first to last, each that reads the context given it; log-dets
    add up."""

    def __init__(self, layers, context_dim):
        super().__init__(layers[0].event_shape, context_dim)
        self.layers = list(layers)

    def _forward_with_log_det(self, x, context):
        total = np.zeros(x.shape[: x.ndim - len(self.event_shape)])
        for layer in self.layers:
            given = (context,) if isinstance(layer, _ConditionalLayer) else ()
            x, log_det = layer.forward_with_log_det(x, *given)
            total = total + log_det
        return x, total

    def _inverse_with_log_det(self, y, context):
        total = np.zeros(y.shape[: y.ndim - len(self.output_shape)])
        for layer in reversed(self.layers):
            given = (context,) if isinstance(layer, _ConditionalLayer) else ()
            y, log_det = layer.inverse_with_log_det(y, *given)
            total = total + log_det
        return y, total


class EmbeddedFlow(ConditionalFlow):
    """The flow behind its context embedding: each call embeds the context once
    (``self.embedding``) and the layers read the features."""

    def __init__(self, layers, embedding):
        super().__init__(layers, embedding.context_dim)
        self.embedding = embedding

    def _forward_with_log_det(self, x, context):
        return super()._forward_with_log_det(x, self.embedding(context))

    def _inverse_with_log_det(self, y, context):
        return super()._inverse_with_log_det(y, self.embedding(context))
