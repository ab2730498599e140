"""One conformance test over every case x backend x dtype x device, against the float64
NumPy reference, with random non-identity weights and fresh inputs (caches bypassed)."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B
from flowbridge.build import available
from flowbridge.check import TOLERANCES, inputs, measure, reference, runtime

from .cases import CASES, IMAGE_CASES

BACKENDS = [name for name, b in B.BACKENDS.items() if not b.reference]
#: vector and image cases: the conformance checks below hold every event shape alike
ALL = {**CASES, **IMAGE_CASES}


def _setup(case: str, seed: int = 0):
    """(spec, random params, reference): 32 fresh inputs, and for a conditional case one
    random context per input."""
    spec = ALL[case]()
    params = fb.init_params(spec, seed, init="random")
    rng = np.random.default_rng(seed + 1)
    x = inputs(spec, 32, rng)  # in (0, 1) for a flow that starts with a logit layer
    context = rng.standard_normal((32, spec.context_dim)) if spec.context_dim else None
    return spec, params, reference(spec, params, x, context)


@pytest.mark.parametrize("case", sorted(ALL))
def test_reference_is_not_the_identity(case):
    """The weights under test move every coupling: a do-nothing flow would fail here."""
    spec, _, ref = _setup(case)
    if all(layer.type in ("permutation", "squeeze") for layer in spec.layers):
        assert not np.array_equal(ref["y"].reshape(-1), ref["x"].reshape(-1))
        return
    assert np.max(np.abs(ref["y"].reshape(-1) - ref["x"].reshape(-1))) > 0.05
    if any(layer.type in ("affine_coupling", "scaling") for layer in spec.layers):
        assert np.std(ref["fldj"]) > 0 or abs(ref["fldj"][0]) > 1e-3


@pytest.mark.parametrize("case", sorted(ALL))
def test_reference_against_finite_differences(case):
    spec, params, ref = _setup(case)
    rt = runtime("numpy")
    flow = rt.build(fb.module_for(spec, "numpy"), params, "float64", "cpu")
    context = ref.get("context")
    jac = rt.jacobian_log_det(flow, ref["x"][:8], None if context is None else context[:8])
    err = np.max(np.abs(ref["fldj"][:8] - jac) / (1 + np.abs(jac)))
    assert err <= TOLERANCES["finite_difference"]
    np.testing.assert_allclose(ref["ildj"], -ref["fldj"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(ALL))
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


CONDITIONAL = [c for c in sorted(CASES) if CASES[c]().context_dim]
#: (batch shape of x, batch shape of the context): one context for every input, a
#: singleton batch, one per input, and contexts broadcast over a 2-D batch.
BROADCASTS = [((6,), ()), ((6,), (1,)), ((6,), (6,)), ((2, 3), (3,)), ((2, 3), (2, 1)), ((), ())]


@pytest.mark.parametrize("backend", [*BACKENDS, "numpy"])
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("case", CONDITIONAL)
def test_contexts_broadcast_against_the_batch(case, shapes, backend, dtype):
    """Every backend at contexts that broadcast to x's batch, against the reference fed
    the contexts broadcast by hand (same tolerances as every figure)."""
    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    if backend == "numpy" and dtype == "float32":
        pytest.skip("the reference runs in float64 only")
    spec = CASES[case]()
    params = fb.init_params(spec, 0, init="random")
    (x_batch, c_batch), rng = shapes, np.random.default_rng(2)
    x = rng.standard_normal((*x_batch, spec.dim))
    context = rng.standard_normal((*c_batch, spec.context_dim))
    full = np.broadcast_to(context, (*x_batch, spec.context_dim))
    ref = reference(spec, params, x.reshape(-1, spec.dim), full.reshape(-1, spec.context_dim))
    rt = runtime(backend)
    flow = rt.build(fb.module_for(spec, backend), params, dtype, "cpu")
    y, fldj = rt.forward(flow, x, context)
    x2, ildj = rt.inverse(flow, ref["y"].reshape(x.shape), context)
    assert y.shape == x.shape and fldj.shape == x_batch and ildj.shape == x_batch
    tol = TOLERANCES[dtype]
    for got, want in ((y, ref["y"]), (x2, ref["x"])):
        err = np.max(np.abs(got.reshape(want.shape) - want)) / np.max(np.abs(want))
        assert err <= tol
    for got, want in ((fldj, ref["fldj"]), (ildj, ref["ildj"])):
        assert np.max(np.abs(got.reshape(-1) - want) / (1 + np.abs(want))) <= tol
