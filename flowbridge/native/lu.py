"""Pyro's invertible 1x1 convolution in LU form (``GeneralizedChannelPermute``), read as
flowbridge's :class:`flowbridge.Conv1x1`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import spec as S
from .common import NativeError


def pyro_channel_permute(part: Any, at: str, channels: int) -> tuple[S.Conv1x1, dict]:
    """``(layer, weights)`` of a ``GeneralizedChannelPermute``: its packed ``LU`` is
    ``lower_upper`` as it is (``L`` below the diagonal with ones on it, ``U`` on and
    above it, its diagonal stored directly, as flowbridge's ``"direct"`` form), and its
    permutation matrix ``P`` (``W = P L U``) becomes ``permutation[i] = argmax(P[i])``,
    checked to give ``P`` back."""
    lu = part.LU.detach().cpu().double().numpy()
    matrix = part.permutation.detach().cpu().double().numpy()
    if lu.shape != (channels, channels) or matrix.shape != (channels, channels):
        raise NativeError(f"{at}: LU {tuple(lu.shape)} and permutation "
                          f"{tuple(matrix.shape)}; expected ({channels}, {channels}) each, "
                          f"for the event's {channels} channels")  # fmt: skip
    indices = matrix.argmax(axis=1)
    if not np.array_equal(np.eye(channels)[indices], matrix):
        raise NativeError(f"{at}: permutation is not a permutation matrix")
    return S.Conv1x1(permutation=tuple(int(i) for i in indices)), {"lower_upper": lu}
