"""Layers that scale or map each entry by itself, with a diagonal Jacobian and no
conditioner: NICE's scaling, Glow's ActNorm, batch normalization and RealNVP's logit
preprocessing."""

from __future__ import annotations

import numpy as np

from .. import spec as S
from ..ir import Value, ops
from .base import ZEROS, Field, Init, Param, Plan, View, _configuration, _word, definition

_SCALING_DOC = """NICE diagonal scaling layer (Dinh et al. 2015, arXiv:1410.8516, sec. 3.3).

    forward:  y = x * exp(log_scale),   log|det J| = sum(log_scale)
    inverse:  x = y * exp(-log_scale),  log|det J^-1| = -sum(log_scale)
    log_scale: a learned vector of the event size.
    Configuration: none besides the event shape."""

@definition(S.Scaling)
def plan_scaling(layer: S.Scaling, shape: tuple[int, ...], context: int = 0) -> Plan:
    """``log_scale`` starts at zero (the identity); its test draw is uniform in +-0.3."""
    n = len(shape)

    def forward(p: View, x: Value):
        scale = ops.name(ops.exp(p.log_scale), "scale")
        total = ops.name(ops.sum_all(p.log_scale), "sum_log_scale")
        return x * scale, ops.batch_fill(total, x, event_ndims=n)

    def inverse(p: View, y: Value):
        neg = ops.name(-p.log_scale, "neg_log_scale")
        inv_scale = ops.name(ops.exp(neg), "inv_scale")
        total = ops.name(ops.sum_all(neg), "sum_neg_log_scale")
        return y * inv_scale, ops.batch_fill(total, y, event_ndims=n)

    return Plan(
        class_name="Scaling",
        variant=(),
        config="none",
        doc=_SCALING_DOC,
        fields=(Field("vector", "log_scale"),),
        args={},
        params={"log_scale": Param(shape, ZEROS, Init.uniform(0.3))},
        constant_jacobian=True,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
    )


_ACTNORM_DOC = """Glow's activation normalization (Kingma & Dhariwal 2018, arXiv:1807.03039).

    forward:  y = x * exp(log_scale) + shift,      log|det J| = {count} * sum(log_scale)
    inverse:  x = (y - shift) * exp(-log_scale),   log|det J^-1| = -{count} * sum(log_scale)
    log_scale, shift: one entry per {unit}.
    Both start at zero (the identity); flowbridge.actnorm_init sets them from data
    (Glow's data-dependent initialisation).
    Configuration: none besides the event shape."""


@definition(S.ActNorm)
def plan_actnorm(layer: S.ActNorm, shape: tuple[int, ...], context: int = 0) -> Plan:
    """Per channel of an image (the parameters broadcast over H and W), per entry of a
    vector; the test draw of both parameters is uniform in +-0.3."""
    n, image = len(shape), len(shape) == 3
    count = shape[1] * shape[2] if image else 1  # entries each parameter scales

    def spread(v: Value) -> Value:
        return ops.per_channel(v) if image else v

    def forward(p: View, x: Value):
        scale = ops.name(spread(ops.exp(p.log_scale)), "scale")
        total = ops.name(ops.sum_all(p.log_scale) * float(count), "log_det_one")
        y = ops.name(x * scale, "x_scaled") + ops.name(spread(p.shift), "shift")
        return y, ops.batch_fill(total, x, event_ndims=n)

    def inverse(p: View, y: Value):
        inv_scale = ops.name(spread(ops.exp(-p.log_scale)), "inv_scale")
        total = ops.name(ops.sum_all(p.log_scale) * float(-count), "log_det_one")
        x = ops.name(y - ops.name(spread(p.shift), "shift"), "y_unshifted") * inv_scale
        return x, ops.batch_fill(total, y, event_ndims=n)

    c = shape[0]
    unit = "channel, broadcast over H and W" if image else "entry"
    return Plan(
        class_name="ActNorm",
        variant=(),
        config="none",
        doc=_ACTNORM_DOC.format(count="H * W" if image else "1", unit=unit),
        fields=(Field("channel", "log_scale"), Field("channel", "shift")),
        args={},
        params={"log_scale": Param((c,), ZEROS, Init.uniform(0.3)),
                "shift": Param((c,), ZEROS, Init.uniform(0.3))},  # fmt: skip
        constant_jacobian=True,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        data_init=_actnorm_data_init,
    )


def _actnorm_data_init(h: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """Glow's initialisation: the log-scale and shift that give the batch ``h`` zero mean
    and unit variance per channel (per entry of a vector) after the layer."""
    axes = (0, 2, 3) if h.ndim == 4 else (0,)
    log_scale = -np.log(h.std(axis=axes) + eps)
    return {"log_scale": log_scale, "shift": -h.mean(axis=axes) * np.exp(log_scale)}


_BATCH_NORM_DOC = """Batch normalization as a flow layer (Dinh et al. 2017, arXiv:1605.08803, sec. 3.7).

    forward:  y = (x - mean) * exp(log_gamma - log(var + eps) / 2) + beta,
              log|det J| = {count} * sum(log_gamma - log(var + eps) / 2)
    inverse:  x = (y - beta) * exp(log(var + eps) / 2 - log_gamma) + mean (running averages)
    Training mode (self.training): mean and var (biased) of the batch per {unit},
    and running_mean, running_log_var <- (1 - momentum) * running + momentum * batch
    (the variance averaged, its log stored). Evaluation mode and the inverse: the running
    averages, mean = running_mean and var = exp(running_log_var).
    {config}"""


@definition(S.BatchNorm)
def plan_batch_norm(layer: S.BatchNorm, shape: tuple[int, ...], context: int = 0) -> Plan:
    """The evaluation-mode forward and the inverse use the running averages; the
    training-mode forward measures the batch and updates them (two ``assign`` effects).
    ``log_gamma``, ``beta`` and both running averages start at zero; their test draws
    are uniform in +-0.3."""
    n, image = len(shape), len(shape) == 3
    count = shape[1] * shape[2] if image else 1
    eps, momentum = float(layer.eps), float(layer.momentum)

    def spread(v: Value) -> Value:
        return ops.per_channel(v) if image else v

    def normalise(p: View, x: Value, centred: Value, var: Value):
        log_std = ops.name(0.5 * ops.log(ops.name(var + eps, "var_eps")), "log_std")
        log_scale = ops.name(p.log_gamma - log_std, "log_scale")
        y = ops.name(centred * ops.name(spread(ops.exp(log_scale)), "scale"), "scaled")
        total = ops.name(ops.sum_all(log_scale) * float(count), "log_det_one")
        return y + ops.name(spread(p.beta), "beta_b"), ops.batch_fill(total, x, event_ndims=n)

    def forward(p: View, x: Value):
        centred = ops.name(x - ops.name(spread(p.running_mean), "mean_b"), "centred")
        return normalise(p, x, centred, ops.name(ops.exp(p.running_log_var), "var"))

    def training_forward(p: View, x: Value):
        mean = ops.name(ops.batch_mean(x, event_ndims=n), "mean")
        centred = ops.name(x - ops.name(spread(mean), "mean_b"), "centred")
        var = ops.name(ops.batch_mean(ops.name(centred * centred, "sq"), event_ndims=n), "var")
        y, log_det = normalise(p, x, centred, var)
        keep = 1.0 - momentum
        new_mean = ops.name(keep * p.running_mean + momentum * mean, "new_mean")
        running_var = ops.name(ops.exp(p.running_log_var), "running_var")
        new_var = ops.name(keep * running_var + momentum * var, "new_var")
        effects = [ops.assign(p.running_mean, new_mean),
                   ops.assign(p.running_log_var, ops.name(ops.log(new_var), "new_log_var"))]  # fmt: skip
        return y, log_det, effects

    def inverse(p: View, y: Value):
        var = ops.name(ops.exp(p.running_log_var), "var")
        log_std = ops.name(0.5 * ops.log(ops.name(var + eps, "var_eps")), "log_std")
        log_scale = ops.name(p.log_gamma - log_std, "log_scale")
        unshifted = ops.name(y - ops.name(spread(p.beta), "beta_b"), "unshifted")
        inv_scale = ops.name(spread(ops.exp(ops.name(-log_scale, "neg_log_scale"))), "inv_scale")
        x = ops.name(unshifted * inv_scale, "x_centred") + spread(p.running_mean)
        total = ops.name(ops.sum_all(log_scale) * float(-count), "log_det_one")
        return x, ops.batch_fill(total, y, event_ndims=n)

    c = shape[0]
    config = f"momentum {momentum!r}, eps {eps!r}"
    unit = "channel" if image else "entry"
    return Plan(
        class_name="BatchNorm",
        variant=(("", f"M{_word(momentum)}Eps{_word(eps)}"),),
        config=config,
        doc=_BATCH_NORM_DOC.format(count="H * W" if image else "1", unit=unit,
                                   config=_configuration(config)),  # fmt: skip
        fields=(Field("channel", "log_gamma"), Field("channel", "beta"),
                Field("state", "running_mean"), Field("state", "running_log_var")),  # fmt: skip
        args={},
        params={name: Param((c,), ZEROS, Init.uniform(0.3))
                for name in ("log_gamma", "beta", "running_mean", "running_log_var")},  # fmt: skip
        constant_jacobian=False,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        training_forward=training_forward,
    )


_LOGIT_DOC = """RealNVP's logit preprocessing (Dinh et al. 2017, arXiv:1605.08803, sec. 4.1).

    forward:  p = alpha + (1 - 2 alpha) x,  y = log(p) - log(1 - p),
              log|det J| = sum(log(1 - 2 alpha) - log(p) - log(1 - p))
    inverse:  x = (sigmoid(y) - alpha) / (1 - 2 alpha),
              log|det J^-1| = sum(log_sigmoid(y) + log_sigmoid(-y) - log(1 - 2 alpha))
    Its input is data in [0, 1]: dequantized pixels (flowbridge.dequantize).
    {config}"""


@definition(S.Logit)
def plan_logit(layer: S.Logit, shape: tuple[int, ...], context: int = 0) -> Plan:
    """The constants (``alpha``, ``1 - 2 alpha`` and its log and reciprocal) are
    computed here once, in float64, and written into the code as literals."""
    n, alpha = len(shape), float(layer.alpha)
    width = 1.0 - 2.0 * alpha
    log_width = float(np.log(width))

    def forward(p: View, x: Value):
        prob = ops.name(alpha + ops.name(width * x, "x_scaled"), "p")
        log_p = ops.name(ops.log(prob), "log_p")
        log_q = ops.name(ops.log(ops.name(1.0 - prob, "q")), "log_q")
        log_dydx = ops.name(log_width - log_p - log_q, "log_dydx")
        return log_p - log_q, ops.sum_event(log_dydx, event_ndims=n)

    def inverse(p: View, y: Value):
        log_p = ops.name(ops.log_sigmoid(y), "log_p")
        log_q = ops.name(ops.log_sigmoid(ops.name(-y, "neg_y")), "log_q")
        x = ops.name(ops.sigmoid(y) - alpha, "p_shifted") * (1.0 / width)
        log_dxdy = ops.name(log_p + log_q - log_width, "log_dxdy")
        return x, ops.sum_event(log_dxdy, event_ndims=n)

    config = _configuration(f"alpha {alpha!r}")
    return Plan(
        class_name="Logit",
        variant=(("", f"Alpha{_word(alpha)}"),),
        config=f"alpha {alpha!r}",
        doc=_LOGIT_DOC.format(config=config),
        fields=(),
        args={},
        params={},
        constant_jacobian=False,
        event_shape=shape,
        output_shape=shape,
        forward=forward,
        inverse=inverse,
        domain="unit_interval",
    )
