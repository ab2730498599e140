"""Layers that act on each entry by itself, without a conditioner: NICE's scaling,
Glow's ActNorm, batch normalization and RealNVP's logit preprocessing."""

from __future__ import annotations

import math
import typing
from typing import Literal

from ...limits import F32_TINY
from .fields import _constant, _schema_description
from .layer import _LayerModel


class Scaling(_LayerModel):
    """NICE's diagonal scaling layer (Dinh et al. 2015, arXiv:1410.8516, sec. 3.3).

    ``y = x * exp(s)`` with a learned vector ``s`` (the weight ``log_scale``, one entry
    per event entry, shaped as the event it acts on; it starts at zero, the identity):

    - forward: ``y = x * exp(s)``, log-det ``sum(s)``;
    - inverse: ``x = y * exp(-s)``, log-det ``-sum(s)``.

    Attributes:
        type: ``"scaling"``, the tag that picks this layer in a spec's dict (a dict must
            give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.FlowSpec.from_dict({"event_shape": [3], "layers": [{"type": "scaling"}]})
        >>> flow = fb.to_numpy(spec, {"layers.0.log_scale": np.log([1.0, 2.0, 4.0])})
        >>> y, log_det = flow.forward_with_log_det(np.ones((1, 3)))
        >>> y, np.allclose(log_det, np.log(8.0))
        (array([[1., 2., 4.]]), True)
    """

    model_config = _schema_description(
        "NICE's diagonal scaling layer: ``y = x * exp(s)`` with a learned vector ``s``."
    )

    type: Literal["scaling"] = "scaling"

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        return math.prod(shape)


class ActNorm(_LayerModel):
    """Glow's activation normalization (Kingma & Dhariwal 2018, arXiv:1807.03039).

    An affine map per channel of an image (``log_scale``, ``shift`` of shape ``(C,)``,
    broadcast over H and W) or per entry of a vector (shape ``(D,)``):

    - forward: ``y = x * exp(log_scale) + shift``, log-det ``H * W * sum(log_scale)``
      (``sum(log_scale)`` for vectors);
    - inverse: ``x = (y - shift) * exp(-log_scale)``, log-det ``-H * W * sum(log_scale)``.

    Both start at zero (the identity); Glow's data-dependent initialisation is an
    explicit step, :func:`flowbridge.actnorm_init`, which sets them so that the layer's
    output over a batch has zero mean and unit variance per channel.

    Attributes:
        type: ``"actnorm"``, the tag that picks this layer in a spec's dict (a dict must
            give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> layers = [{"type": "actnorm"}]
        >>> spec = fb.FlowSpec.from_dict({"event_shape": [2, 1, 1], "layers": layers})
        >>> params = {"layers.0.log_scale": np.log([2.0, 4.0]),
        ...           "layers.0.shift": np.array([1.0, -1.0])}
        >>> y, log_det = fb.to_numpy(spec, params).forward_with_log_det(np.ones((1, 2, 1, 1)))
        >>> y.ravel(), np.allclose(log_det, np.log(8.0))
        (array([3., 3.]), True)
    """

    model_config = _schema_description(
        """Glow's activation normalization (Kingma & Dhariwal 2018): ``y = x * exp(log_scale)
        + shift`` per channel of an image (``log_scale``, ``shift`` of shape ``(C,)``) or per
        entry of a vector; log-det ``H * W * sum(log_scale)`` (``sum(log_scale)`` for
        vectors). Both start at zero (the identity); Glow's data-dependent initialisation is
        an explicit step, :func:`flowbridge.actnorm_init`, which sets them so that the
        layer's output over a batch has zero mean and unit variance per channel."""
    )

    type: Literal["actnorm"] = "actnorm"

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        return 2 * shape[0]


class BatchNorm(_LayerModel):
    """Batch normalization as a flow layer (Dinh et al. 2017, arXiv:1605.08803, sec. 3.7).

    As TFP's ``BatchNormalization`` bijector, per channel of an image (per entry of a
    vector), in the data-to-latent direction:

    - forward: ``y = (x - mean) / sqrt(var + eps) * exp(log_gamma) + beta``, log-det
      ``H * W * sum(log_gamma - log(var + eps) / 2)`` (without ``H * W`` for vectors);
    - inverse: ``x = (y - beta) * exp(-log_gamma) * sqrt(var + eps) + mean`` with the
      running averages, log-det the forward's negated.

    Training mode (Pyro's ``module.train()``; TFP's and NumPy's ``layer.training = True``,
    the default in all three, as a torch module's) takes ``mean`` and the biased ``var``
    of the batch, over every batch dimension and H and W, and moves the running averages:
    ``running = (1 - momentum) * running + momentum * batch`` (torch's convention; a
    Keras momentum ``m`` is ``1 - m`` here). Evaluation mode uses the running averages.
    The inverse always uses the running averages (it has no batch of ``x`` to measure),
    so it inverts the evaluation-mode forward exactly. The per-example log-det holds the
    batch statistics constant, as RealNVP and TFP do. State: ``running_mean`` and
    ``running_log_var`` (the log of the running variance, so both start at zero: mean 0,
    variance 1) are neutral parameters too, so they move between backends; they are
    buffers in Pyro and non-trainable variables in TFP. With ``log_gamma`` and ``beta``
    that is 4 weights per channel (per entry of a vector).

    Attributes:
        type: ``"batch_norm"``, the tag that picks this layer in a spec's dict (a dict
            must give it; the constructor fills it in).
        momentum: the running averages' update weight, a number in
            ``[1.175494e-38, 1]``, default ``0.1``.
        eps: added to the variance, a number in ``[1.175494e-38, 1]``, default ``1e-5``.

    Example:
        >>> import flowbridge as fb
        >>> layers = [{"type": "batch_norm", "momentum": 0.01}]
        >>> fb.param_count(fb.FlowSpec.from_dict({"event_shape": [3, 8, 8], "layers": layers}))
        12
        >>> fb.BatchNorm(momentum=0.0)
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: momentum: expected a number in [1.175494e-38, 1], got 0.0
    """

    model_config = _schema_description(
        """Batch normalization as a flow layer (Dinh et al. 2017, sec. 3.7; TFP's
        ``BatchNormalization`` bijector), per channel of an image (per entry of a vector),
        in the data-to-latent direction: ``y = (x - mean) / sqrt(var + eps) *
        exp(log_gamma) + beta``, log-det ``H * W * sum(log_gamma - log(var + eps) / 2)``.

        Training mode (Pyro's ``module.train()``; TFP's and NumPy's ``layer.training = True``,
        the default in all three, as a torch module's) takes ``mean`` and the biased ``var``
        of the batch, over every batch dimension and H and W, and moves the running averages:
        ``running = (1 - momentum) * running + momentum * batch`` (torch's convention; a
        Keras momentum ``m`` is ``1 - m`` here). Evaluation mode uses the running averages.
        The inverse always uses the running averages (it has no batch of ``x`` to measure),
        so it inverts the evaluation-mode forward exactly. The per-example log-det holds the
        batch statistics constant, as RealNVP and TFP do. State: ``running_mean`` and
        ``running_log_var`` (the log of the running variance, so both start at zero: mean 0,
        variance 1) are neutral parameters too, so they move between backends; they are
        buffers in Pyro and non-trainable variables in TFP."""
    )

    type: Literal["batch_norm"] = "batch_norm"
    momentum: _constant(F32_TINY, 1.0, positive=True) = 0.1
    eps: _constant(F32_TINY, 1.0, positive=True) = 1e-5

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        return 4 * shape[0]  # log_gamma, beta and the two running averages


class Logit(_LayerModel):
    """RealNVP's logit preprocessing (Dinh et al. 2017, arXiv:1605.08803, sec. 4.1).

    The first layer of a flow on data in (0, 1) (dequantized pixels,
    :func:`flowbridge.dequantize`); the flow refuses it anywhere else. ``alpha`` (the
    paper's 0.05) keeps ``p`` away from 0 and 1:

    - forward: ``y = logit(p)``, ``p = alpha + (1 - 2 alpha) x``, log-det
      ``sum(log(1 - 2 alpha) - log(p) - log(1 - p))``;
    - inverse: ``x = (sigmoid(y) - alpha) / (1 - 2 alpha)``, log-det the forward's
      negated.

    Attributes:
        type: ``"logit"``, the tag that picks this layer in a spec's dict (a dict must
            give it; the constructor fills it in).
        alpha: a number in ``[1.175494e-38, 0.49]``, default ``0.05``.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> flow = fb.to_numpy(fb.FlowSpec(event_shape=(1,), layers=[fb.Logit()]))
        >>> y, log_det = flow.forward_with_log_det(np.array([[0.5]]))  # p = 0.5
        >>> y, np.allclose(log_det, np.log(0.9 / 0.25))
        (array([[0.]]), True)
        >>> fb.FlowSpec(event_shape=(1,), layers=[fb.Scaling(), fb.Logit()])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[1]: expected a logit layer first ... at position 1
    """

    model_config = _schema_description(
        """RealNVP's logit preprocessing (Dinh et al. 2017, sec. 4.1), the first layer of a
        flow on data in (0, 1) (dequantized pixels, :func:`flowbridge.dequantize`):
        ``y = logit(p)``, ``p = alpha + (1 - 2 alpha) x``, log-det
        ``sum(log(1 - 2 alpha) - log(p) - log(1 - p))``; inverse
        ``x = (sigmoid(y) - alpha) / (1 - 2 alpha)``. ``alpha`` (the paper's 0.05) keeps
        ``p`` away from 0 and 1."""
    )

    type: Literal["logit"] = "logit"
    alpha: _constant(F32_TINY, 0.49, positive=True) = 0.05
    domain: typing.ClassVar[str] = "unit_interval"  # its input: data in (0, 1)
