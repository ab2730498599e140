"""One conformance test over every case x backend x dtype x device, against the float64
NumPy reference, with random non-identity weights and fresh inputs (caches bypassed)."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B
from flowbridge.build import available
from flowbridge.check import TOLERANCES, measure, reference, runtime

from .cases import CASES

BACKENDS = [name for name, b in B.BACKENDS.items() if not b.reference]


def _setup(case: str, seed: int = 0):
    spec = CASES[case]()
    params = fb.init_params(spec, seed, init="random")
    x = np.random.default_rng(seed + 1).standard_normal((32, spec.dim))
    return spec, params, reference(spec, params, x)


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_is_not_the_identity(case):
    """The weights under test move every coupling: a do-nothing flow would fail here."""
    spec, _, ref = _setup(case)
    if all(layer.type == "permutation" for layer in spec.layers):
        assert not np.array_equal(ref["y"], ref["x"])
        return
    assert np.max(np.abs(ref["y"] - ref["x"])) > 0.05
    if any(layer.type in ("affine_coupling", "scaling") for layer in spec.layers):
        assert np.std(ref["fldj"]) > 0 or abs(ref["fldj"][0]) > 1e-3


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_against_finite_differences(case):
    spec, params, ref = _setup(case)
    rt = runtime("numpy")
    flow = rt.build(spec, params, "float64", "cpu")
    jac = rt.jacobian_log_det(flow, ref["x"][:8])
    err = np.max(np.abs(ref["fldj"][:8] - jac) / (1 + np.abs(jac)))
    assert err <= TOLERANCES["finite_difference"]
    np.testing.assert_allclose(ref["ildj"], -ref["fldj"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_backend_matches_reference(case, backend, dtype, device):
    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    rt = runtime(backend)
    if device in rt.unavailable_devices():
        pytest.skip(rt.unavailable_devices()[device])
    spec, params, ref = _setup(case)
    row, _ = measure(backend, dtype, device, spec, params, ref, jac_rows=4)
    over = {k: v for k, v in row.errors.items() if v > TOLERANCES[dtype]}
    assert not over, f"{backend}/{dtype}/{device} over {TOLERANCES[dtype]:.0e}: {over}"


def test_clamp_and_soft_clamp_are_active():
    """The clamp cases' bounds are tight enough that the clamp changes the output."""
    for case, kind in [("affine_clamp_d5_last", "clamp"), ("affine_soft_clamp_d6_ceil", "soft")]:
        spec, params, ref = _setup(case)
        unclamped = spec.model_copy(
            update={"layers": (spec.layers[0].model_copy(update={"scale": fb.ExpScale()}),)}
        )
        other = reference(unclamped, params, ref["x"])
        assert np.max(np.abs(other["y"] - ref["y"])) > 1e-3, kind
