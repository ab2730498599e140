"""What every native import shares: its error and the activations it reads."""

from __future__ import annotations

from typing import Any

from .. import spec as S
from ..errors import SpecError


class NativeError(ValueError):
    """A native flow piece cannot be converted; the message names it and says why.

    A ``ValueError``, raised by :func:`flowbridge.from_pyro_native` and
    :func:`flowbridge.from_tfp_native` for anything they do not take over exactly: a
    custom hypernet or ``shift_and_log_scale_fn``, a ``bijector_fn``, another bijector or
    transform, a conditioner without biases or an unsupported activation. The message
    starts with where the piece is, e.g. ``parts[0] (ExpTransform): ...``.

    Example:
        >>> import flowbridge as fb
        >>> from torch.distributions.transforms import ExpTransform
        >>> try:
        ...     fb.from_pyro_native(ExpTransform(), dim=2)
        ... except fb.NativeError as err:
        ...     print(err)
        parts[0] (ExpTransform): cannot be converted; expected pyro AffineCoupling ...
    """


_TORCH_ACTIVATIONS = {"ReLU": "relu", "Tanh": "tanh", "ELU": "elu", "LeakyReLU": "leaky_relu",
                      "GELU": "gelu"}  # fmt: skip


def _tf_activation(fn: Any, at: str) -> tuple[str, float]:
    import tensorflow as tf

    table = {tf.nn.relu: "relu", tf.math.tanh: "tanh", tf.nn.elu: "elu", tf.nn.gelu: "gelu",
             tf.nn.leaky_relu: "leaky_relu"}  # fmt: skip
    for known, name in table.items():
        if fn is known:
            return name, 0.2  # tf.nn.leaky_relu's default alpha
    name = getattr(fn, "__name__", type(fn).__name__)
    raise NativeError(f"{at}: activation {name} cannot be converted; expected tf.nn.relu, "
                      "tf.math.tanh, tf.nn.elu, tf.nn.gelu or tf.nn.leaky_relu")  # fmt: skip


def _pyro_spline(source: Any, at: str) -> Any:
    """The spline map of a Pyro spline (``Spline``, ``ConditionalSpline``):
    :class:`RationalQuadraticSpline` for ``order="quadratic"``,
    :class:`RationalLinearSpline` for ``order="linear"`` (Pyro's default); its bins and
    bound, Pyro's edge derivative ``1 - min_derivative`` and bin search epsilon 1e-6
    (Pyro's other constants, the minima 1e-3 and ``min_lambda`` 0.025, are flowbridge's
    defaults)."""
    order = getattr(source, "order", None)
    models = {"quadratic": S.RationalQuadraticSpline, "linear": S.RationalLinearSpline}
    if order not in models:
        raise NativeError(f"{at}: order={order!r} cannot be converted; expected 'linear' or "
                          "'quadratic'")  # fmt: skip
    try:
        return models[order](bins=int(source.count_bins), bound=float(source.bound),
                             edge_derivative="pyro", eps=1e-6)  # fmt: skip
    except SpecError as exc:
        raise NativeError(f"{at}: count_bins={source.count_bins}, bound={source.bound} cannot "
                          f"be converted: {exc}") from None  # fmt: skip


def _shift_derivative_bias(weights: dict, n: int, spline: Any) -> dict:
    """The hypernet's weights with its last bias's ``u_d`` block (outputs ``2nK`` to
    ``2nK + n(K - 1)``) less :func:`flowbridge.splines.derivative_offset`: the layout
    ``[u_w | u_h | u_d (| u_l)]`` is flowbridge's already."""
    from ..splines import derivative_offset

    last = max(int(k.split(".")[1]) for k in weights)
    bias = weights[f"conditioner.{last}.bias"]
    start = 2 * n * spline.bins
    bias[start : start + n * (spline.bins - 1)] -= derivative_offset(spline)
    return weights
