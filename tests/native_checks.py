"""The measure the native-import tests assert, stated once: ``flowbridge.check``'s, a
relative max-norm for outputs and ``|a - b| / (1 + |b|)`` for log-dets, against 1e-12
(float64 ports are exact up to rounding)."""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-12


def error(got, want, log_det: bool = False) -> float:
    """The difference of ``got`` from ``want`` (shapes must agree): a log-det's largest
    ``|a - b| / (1 + |b|)``, an output's ``max|a - b| / max|b|``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    if log_det:
        return float(np.max(np.abs(got - want) / (1 + np.abs(want))))
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-300))


def assert_close(got, want, log_det: bool = False, tolerance: float = TOLERANCE) -> None:
    """``error(got, want, log_det) <= tolerance``."""
    difference = error(got, want, log_det)
    assert difference <= tolerance, difference
