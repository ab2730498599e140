"""Layers that move entries: a fixed permutation, RealNVP's squeeze and factor-out."""

from __future__ import annotations

import typing
from typing import Literal

import numpy as np

from ...document import show as _show
from .fields import NonNegInt, _schema_description
from .layer import _LayerModel


class Permutation(_LayerModel):
    """A fixed permutation of a vector event's entries, ``y = x[..., indices]``.

    ``reverse``, ``random`` (``seed`` drawn with
    ``numpy.random.default_rng(seed).permutation(D)``) or ``explicit`` (``indices``). It
    takes vector events ``(D,)`` only and holds no weights:

    - forward: ``y[..., i] = x[..., indices[i]]``, log-det 0;
    - inverse: ``x = y[..., inverse_indices]`` (``indices`` inverted), log-det 0.

    Attributes:
        type: ``"permutation"``, the tag that picks this layer in a spec's dict (a dict
            must give it; the constructor fills it in).
        kind: ``"reverse"`` (default), ``"random"`` or ``"explicit"``.
        seed: a non-negative integer, required with ``kind="random"`` and refused
            otherwise; default ``None``.
        indices: a permutation of ``0..D-1``, required with ``kind="explicit"`` and
            refused otherwise; default ``None``.

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> layer = fb.Permutation(kind="explicit", indices=(2, 0, 1))
        >>> flow = fb.to_numpy(fb.FlowSpec(event_shape=(3,), layers=[layer]))
        >>> flow.forward(np.array([10.0, 20.0, 30.0]))
        array([30., 10., 20.])
        >>> fb.FlowSpec(event_shape=(3,), layers=[fb.Permutation(kind="random")])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0].seed: expected a non-negative integer ..., got None
    """

    model_config = _schema_description(
        """A fixed permutation ``y = x[..., indices]``: ``reverse``, ``random`` (``seed``
        drawn with ``numpy.random.default_rng(seed).permutation(D)``) or ``explicit``."""
    )

    type: Literal["permutation"] = "permutation"
    kind: Literal["reverse", "random", "explicit"] = "reverse"
    seed: NonNegInt | None = None
    indices: tuple[NonNegInt, ...] | None = None
    ranks: typing.ClassVar[tuple[int, ...]] = (1,)

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        (dim,) = shape
        if self.kind == "random" and self.seed is None:
            return [(f"{at}.seed", "expected a non-negative integer for kind 'random', got None")]
        if self.kind != "random" and self.seed is not None:
            return [(f"{at}.seed", f"expected no seed for kind {self.kind!r}, got {self.seed}")]
        if self.kind == "explicit":
            if self.indices is None:
                return [(f"{at}.indices", "expected a permutation of range(D) for kind "
                         "'explicit', got None")]  # fmt: skip
            if sorted(self.indices) != list(range(dim)):
                return [(f"{at}.indices", f"expected a permutation of 0..{dim - 1}, got "
                         f"{_show(list(self.indices))}")]  # fmt: skip
        elif self.indices is not None:
            return [(f"{at}.indices", f"expected no indices for kind {self.kind!r}")]
        return []


class Squeeze(_LayerModel):
    """RealNVP's squeeze (Dinh et al. 2017, arXiv:1605.08803), 2x2 space-to-depth on images.

    It takes image events ``(C, H, W)`` with an even height and width to
    ``(4C, H/2, W/2)``, moving the whole tensor (channels factored out before it too):

    - forward: ``y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]`` (each channel's 2x2 blocks
      become four consecutive channels, row-major within the block; torch's
      ``pixel_unshuffle`` order), log-det 0;
    - inverse: the matching depth-to-space, log-det 0.

    Attributes:
        type: ``"squeeze"``, the tag that picks this layer in a spec's dict (a dict must
            give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> import numpy as np
        >>> spec = fb.FlowSpec(event_shape=(1, 4, 4), layers=[fb.Squeeze()])
        >>> y = fb.to_numpy(spec).forward(np.arange(16.0).reshape(1, 1, 4, 4))
        >>> spec.output_shape, y[0, :, 0, 0]  # x[0, 0, 0], x[0, 0, 1], x[0, 1, 0], x[0, 1, 1]
        ((4, 2, 2), array([0., 1., 4., 5.]))
        >>> fb.FlowSpec(event_shape=(1, 3, 4), layers=[fb.Squeeze()])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0]: expected an even height and width to squeeze, ...
    """

    model_config = _schema_description(
        """RealNVP's squeeze, 2x2 space-to-depth on image events: ``(C, H, W)`` to
        ``(4C, H/2, W/2)`` with ``y[4c + 2i + j, h, w] = x[c, 2h + i, 2w + j]`` (each
        channel's 2x2 blocks become four consecutive channels, row-major within the block;
        torch's ``pixel_unshuffle`` order), log-det 0."""
    )

    type: Literal["squeeze"] = "squeeze"
    ranks: typing.ClassVar[tuple[int, ...]] = (3,)
    whole: typing.ClassVar[bool] = True

    def active_after(self, active: int) -> int:
        return 4 * active  # channel c's four children are 4c .. 4c + 3: still the first

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        if shape[1] % 2 or shape[2] % 2:
            return [(at, f"expected an even height and width to squeeze, got events of "
                     f"shape {shape}")]  # fmt: skip
        return []

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        return (4 * c, h // 2, w // 2)


class FactorOut(_LayerModel):
    """RealNVP's multi-scale factor-out (Dinh et al. 2017, arXiv:1605.08803, sec. 3.6).

    Of the ``A`` channels of an image event still active, the last ``A - floor(A / 2)``
    leave the flow and pass to the output unchanged; every later layer but a squeeze acts
    on the first ``floor(A / 2)``. An identity map, log-det 0 (forward ``y = x``, inverse
    ``x = y``): what it changes is what the layers after it see. It needs at least 2
    active channels.

    Output layout: the flow keeps one tensor. Factored channels stay where they are,
    after the active ones; a later squeeze moves every channel alike (channel ``c``'s four
    children are ``4c .. 4c + 3``), so the active channels stay first and each factored
    block is squeezed with the rest, a fixed permutation of latent coordinates (log-det
    0) that RealNVP's separate outputs do not make; with an i.i.d. base density the
    density of every image is the same. The flow's output holds the last scale's latent
    in its first channels, then the factored blocks, latest first.

    Attributes:
        type: ``"factor_out"``, the tag that picks this layer in a spec's dict (a dict
            must give it; the constructor fills it in).

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.FlowSpec(event_shape=(1, 4, 4),
        ...                    layers=[fb.Squeeze(), fb.FactorOut(), fb.ActNorm()])
        >>> spec.output_shape, fb.param_count(spec)  # the ActNorm sees 2 of the 4 channels
        ((4, 2, 2), 4)
        >>> fb.FlowSpec(event_shape=(1, 4, 4), layers=[fb.FactorOut()])
        Traceback (most recent call last):
            ...
        flowbridge.errors.SpecError: layers[0]: expected at least 2 active channels ..., got 1
    """

    model_config = _schema_description(
        """RealNVP's multi-scale factor-out (Dinh et al. 2017, sec. 3.6): of the ``A``
        channels still active, the last ``A - floor(A / 2)`` leave the flow and pass to the
        output unchanged; every later layer but a squeeze acts on the first ``floor(A / 2)``.
        An identity map, log-det 0: what it changes is what the layers after it see.

        Output layout: the flow keeps one tensor. Factored channels stay where they are,
        after the active ones; a later squeeze moves every channel alike (channel ``c``'s four
        children are ``4c .. 4c + 3``), so the active channels stay first and each factored
        block is squeezed with the rest, a fixed permutation of latent coordinates (log-det
        0) that RealNVP's separate outputs do not make; with an i.i.d. base density the
        density of every image is the same. The flow's output holds the last scale's latent
        in its first channels, then the factored blocks, latest first."""
    )

    type: Literal["factor_out"] = "factor_out"
    ranks: typing.ClassVar[tuple[int, ...]] = (3,)

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        if shape[0] < 2:
            return [(at, f"expected at least 2 active channels to factor half out, got "
                     f"{shape[0]}")]  # fmt: skip
        return []

    def active_after(self, active: int) -> int:
        return active // 2


def permutation_indices(layer: Permutation, dim: int) -> list[int]:
    """The permutation as explicit indices: ``y[..., i] = x[..., indices[i]]``."""
    if layer.kind == "reverse":
        return list(range(dim - 1, -1, -1))
    if layer.kind == "random":
        return [int(i) for i in np.random.default_rng(layer.seed).permutation(dim)]
    return list(layer.indices)
