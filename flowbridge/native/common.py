"""What every native import shares: its error and the activations it reads."""

from __future__ import annotations

from typing import Any


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
