"""Layers that mix the entries by a learned invertible matrix: Glow's invertible 1x1
convolution, an LU linear layer on vectors."""

from __future__ import annotations

from typing import Literal

from .fields import NonNegInt, _schema_description
from .layer import _LayerModel


class Conv1x1(_LayerModel):
    """Glow's invertible 1x1 convolution (Kingma & Dhariwal 2018, arXiv:1807.03039), in
    its LU parameterisation; on vectors, the same map as an LU linear layer.

    ``W = P L U`` mixes the channels of every pixel of an image ``(C, H, W)`` (the
    entries of a vector ``(D,)``, with ``C = D``): ``P`` a fixed permutation, ``L``
    lower triangular with ones on its diagonal, ``U`` upper triangular. The learned
    ``lower_upper`` ``(C, C)`` packs both: ``L`` is its strictly lower part, ``U`` its
    upper part, diagonal included (``diagonal="direct"``, as Pyro's
    ``GeneralizedChannelPermute`` and TFP's ``ScaleMatvecLU`` store them), or its
    strictly upper part with the diagonal ``signs * exp(log_abs_diag)``
    (``diagonal="log"``, Glow's paper: ``W`` cannot become singular in training; the
    signs are fixed, and ``lower_upper``'s own diagonal is then unused). The other
    libraries' conventions: normflows keeps sign and log-magnitude as here, nflows a
    softplus diagonal, zuko the diagonal on ``L``.

    - forward: ``y[..., i, h, w] = sum_j W[i, j] x[..., j, h, w]`` with
      ``W = P L U``, ``(P M)[i] = M[permutation[i]]``; log-det
      ``H * W * sum(log|diag U|)`` (``sum(log|diag U|)`` for vectors);
    - inverse: ``x = U^-1 L^-1 P^T y``, through two triangular solves (never a general
      matrix inverse); log-det minus the forward's.

    ``lower_upper`` starts at the identity (``L = U = I``), so the layer starts as its
    permutation: ``"reverse"`` (the default, Glow's fixed reversal), ``"identity"`` or
    explicit indices. A port from Pyro reads ``permutation[i] = argmax(P[i])`` of its
    permutation matrix; from TFP, ``permutation = invert_permutation(perm)``.

    Attributes:
        type: ``"conv1x1"``, the tag that picks this layer in a spec's dict (a dict must
            give it; the constructor fills it in).
        diagonal: ``"direct"`` (default) or ``"log"``, how ``U``'s diagonal is stored.
        permutation: ``"reverse"`` (default), ``"identity"`` or a permutation of
            ``0..C-1``, ``P`` as indices.
        signs: with ``diagonal="log"``, ``U``'s fixed diagonal signs, one ``1`` or ``-1``
            per channel; default ``None``: all ``1``. Refused with ``"direct"``.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.FlowSpec(event_shape=(2, 1, 1), layers=[fb.Conv1x1(permutation="identity")])
        >>> lu = np.array([[2.0, 1.0], [0.5, 3.0]])  # L = [[1, 0], [0.5, 1]], U = [[2, 1], [0, 3]]
        >>> y, log_det = fb.to_numpy(spec, {"layers.0.lower_upper": lu}).forward_with_log_det(
        ...     np.ones((1, 2, 1, 1)))
        >>> y.ravel(), bool(np.isclose(log_det[0], np.log(6.0)))  # W = [[2, 1], [1, 3.5]]
        (array([3. , 4.5]), True)
    """

    model_config = _schema_description(
        """Glow's invertible 1x1 convolution in its LU parameterisation, ``W = P L U``
        mixing the channels of each pixel (the entries of a vector): ``lower_upper``
        ``(C, C)`` packs ``L`` (unit diagonal) and ``U``, whose diagonal is stored
        directly (``"direct"``, as Pyro and TFP) or as fixed ``signs`` times
        ``exp(log_abs_diag)`` (``"log"``, Glow's paper); ``P`` is a fixed
        permutation. Log-det ``H * W * sum(log|diag U|)``; the inverse is two triangular
        solves."""
    )

    type: Literal["conv1x1"] = "conv1x1"
    diagonal: Literal["direct", "log"] = "direct"
    permutation: Literal["reverse", "identity"] | tuple[NonNegInt, ...] = "reverse"
    signs: tuple[Literal[-1, 1], ...] | None = None

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        c = shape[0]
        problems = []
        if not isinstance(self.permutation, str) and sorted(self.permutation) != list(range(c)):
            problems.append((f"{at}.permutation", f"expected a permutation of 0..{c - 1} (one "
                             f"index per channel), got {list(self.permutation)}"))  # fmt: skip
        if self.signs is not None and self.diagonal != "log":
            problems.append((f"{at}.signs", "expected no signs with diagonal 'direct' (the "
                             "diagonal holds its own signs)"))  # fmt: skip
        elif self.signs is not None and len(self.signs) != c:
            problems.append((f"{at}.signs", f"expected {c} signs (one per channel), got "
                             f"{len(self.signs)}"))  # fmt: skip
        return problems

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        c = shape[0]
        return c * c + (c if self.diagonal == "log" else 0)


def conv1x1_permutation(layer: Conv1x1, channels: int) -> list[int]:
    """``P`` as indices: ``(P M)[i] = M[permutation[i]]``."""
    if layer.permutation == "reverse":
        return list(range(channels - 1, -1, -1))
    if layer.permutation == "identity":
        return list(range(channels))
    return list(layer.permutation)
