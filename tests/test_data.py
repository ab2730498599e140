"""flowbridge/data.py under hostile arguments: every one refused by name, never a division
by zero, a NaN or an infinite parameter. (Their results on good data are tested with the
image flows in tests/test_images.py.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import flowbridge as fb


@pytest.mark.parametrize(
    "dims, levels, message",
    [
        (0, 256, "dims: expected an integer >= 1, got 0"),
        (-64, 256, "dims: expected an integer >= 1, got -64"),
        (2.5, 256, "dims: expected an integer >= 1, got 2.5"),
        (True, 256, "dims: expected an integer >= 1, got True"),
        (64, 1, "levels: expected an integer >= 2, got 1"),
        (64, 0, "levels: expected an integer >= 2, got 0"),
        (64, 255.5, "levels: expected an integer >= 2, got 255.5"),
    ],
)
def test_bits_per_dim_refuses_a_bad_count_by_name(dims, levels, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero on the way
        with pytest.raises(ValueError, match=message):
            fb.bits_per_dim(np.zeros(3), dims=dims, levels=levels)
    assert fb.bits_per_dim([0.0], dims=np.int64(64), levels=np.int32(17)) == pytest.approx(
        np.log2(17))  # fmt: skip


def _actnorm_spec():
    layers = [fb.ActNorm(), fb.Scaling(), fb.ActNorm()]
    return fb.FlowSpec(name="a", event_shape=(3,), layers=layers)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_actnorm_init_refuses_data_that_is_not_finite(value):
    spec = _actnorm_spec()
    x = np.random.default_rng(0).standard_normal((10, 3))
    x[4, 1] = value
    with pytest.raises(fb.ParamError, match=rf"x: expected finite values, got {value} at index "
                                            r"\(4, 1\)"):  # fmt: skip
        fb.actnorm_init(spec, fb.init_params(spec), x)
    with pytest.raises(fb.ParamError, match="x: expected real numbers, got dtype complex128"):
        fb.actnorm_init(spec, fb.init_params(spec), x + 1j)


def test_actnorm_init_gives_a_constant_channel_a_finite_scale():
    """A channel without variance gets log_scale -log(eps) (scale 1 / eps) and an output
    of about 0; eps must be a positive number, and one so small that 1 / eps overflows is
    refused, never an infinite parameter."""
    spec = _actnorm_spec()
    x = np.random.default_rng(0).standard_normal((10, 3))
    x[:, 1] = 2.5
    params = fb.actnorm_init(spec, fb.init_params(spec), x)
    assert all(np.all(np.isfinite(v)) for v in params.values())
    assert params["layers.0.log_scale"][1] == pytest.approx(-np.log(1e-6))
    y = fb.to_numpy(spec, params).forward(x)
    np.testing.assert_allclose(y[:, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(y.std(axis=0)[[0, 2]], 1.0, rtol=1e-5)
    for eps in (0.0, -1e-6, float("nan"), float("inf"), True, "1e-6"):
        with pytest.raises(ValueError, match="eps: expected a positive finite number, got"):
            fb.actnorm_init(spec, fb.init_params(spec), x, eps=eps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's overflow warning; the error says it
        with pytest.raises(fb.ParamError,
                           match=r"layers\.0\.shift: overflows float64 when set from x"):
            fb.actnorm_init(spec, fb.init_params(spec), x, eps=1e-320)
