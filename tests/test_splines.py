"""Neural spline layers beyond conformance: zero raw parameters are the identity, the
tails and the interval's edges give finite values and gradients in every autodiff
backend, the float32 figures stay within the tolerance the layer states, and the preset
builds them."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import splines

BOUND = 3.0
#: inputs in the tails, on the ends, just inside and outside them, and inside
EDGES = np.array([[-7.0, -3.0, -3.0 + 1e-7, 0.0], [3.0, 3.0 + 1e-7, 9.0, -2.5]])


def _spec(context_dim=0):
    layers = [fb.SplineCoupling(conditioner=fb.Conditioner(hidden=(8,)),
                                spline=fb.RationalQuadraticSpline(bins=5)),
              fb.ElementwiseSpline(conditioner=fb.Conditioner(hidden=(8,)),
                                   spline=fb.RationalQuadraticSpline(bins=4))]  # fmt: skip
    return fb.FlowSpec(event_shape=(4,), context_dim=context_dim, layers=layers)


@pytest.mark.parametrize("edge", ["one", "pyro"])
def test_zero_raw_parameters_are_the_identity_with_edge_derivative_one(edge):
    spline = fb.RationalQuadraticSpline(bins=6, edge_derivative=edge)
    spec = fb.FlowSpec(event_shape=(2,), layers=[fb.SplineCoupling(spline=spline),
                                                 fb.ElementwiseSpline(spline=spline)])  # fmt: skip
    flow = fb.to_numpy(spec)  # the conditioners' last layers and the raw tensors start at 0
    x = np.array([[-2.9, 0.4], [2.2, -1.3], [5.0, -0.01]])
    y, log_det = flow.forward_with_log_det(x)
    if edge == "one":
        np.testing.assert_allclose(y, x, atol=1e-14)
        np.testing.assert_allclose(log_det, 0.0, atol=1e-14)
    else:  # Pyro's edge derivative 1 - min_derivative bends the first and last bins
        assert not np.allclose(y, x, atol=1e-6)
    assert splines.derivative_offset(spline) == pytest.approx(np.log(np.expm1(0.999)))


def test_the_tails_are_the_identity_and_the_inverse_inverts_at_the_edges():
    spec = _spec()
    flow = fb.to_numpy(spec, fb.init_params(spec, 3, init="random"))
    y, log_det = flow.forward_with_log_det(EDGES)
    np.testing.assert_array_equal(y[0, :2], EDGES[0, :2])  # -7 and -3: the left tail, -B
    np.testing.assert_allclose(flow.inverse(y.copy()), EDGES, atol=1e-12)
    assert np.all(np.isfinite(log_det))


def test_gradients_stay_finite_in_the_tails_and_on_the_edges_in_torch():
    torch = pytest.importorskip("torch")
    spec = _spec()
    flow = fb.to_pyro(spec, fb.init_params(spec, 3, init="random"), dtype="float64")
    x = torch.tensor(EDGES, requires_grad=True)
    y = flow(x)
    (y.sum() + flow.log_abs_det_jacobian(x, y).sum()).backward()
    assert torch.isfinite(x.grad).all()
    z = torch.tensor(EDGES, requires_grad=True)
    back = flow.inv(z)
    (back.sum() + flow.log_abs_det_jacobian(back, z).sum()).backward()
    assert torch.isfinite(z.grad).all()


def test_gradients_stay_finite_in_the_tails_and_on_the_edges_in_jax():
    jax = pytest.importorskip("jax")
    spec = _spec()
    flow = fb.to_jax(spec, fb.init_params(spec, 3, init="random"))

    def loss(v, inverse):
        out, log_det = (flow.inverse_with_log_det if inverse else flow.forward_with_log_det)(v)
        return out.sum() + log_det.sum()

    for inverse in (False, True):
        grad = np.asarray(jax.grad(loss)(EDGES.astype(np.float32), inverse))
        assert np.all(np.isfinite(grad)), (inverse, grad)


def test_float32_figures_stay_within_the_stated_tolerance():
    """Three random draws of a conditional spline flow, every float32 row: the worst
    figure is printed (the number FLOAT32_TOLERANCE's docstring quotes) and must pass."""
    worst = 0.0
    for seed in range(3):
        report = fb.check(_spec(context_dim=2), seed=seed, dtypes=("float32",))
        assert report.ok, report.table()
        rows = [r for r in report.rows if r.dtype == "float32"]
        assert rows and all(r.tolerance == splines.FLOAT32_TOLERANCE for r in rows)
        worst = max(worst, *(v for r in rows for v in r.errors.values()))
    print(f"worst float32 figure: {worst:.2e}")
    assert worst <= splines.FLOAT32_TOLERANCE


def test_nsf_preset_builds_spline_couplings_and_one_dimension():
    spec = fb.nsf(5, num_couplings=3, hidden=(8,), permutation="reverse", context_dim=2)
    assert [layer.type for layer in spec.layers] == [
        "spline_coupling", "permutation", "spline_coupling", "permutation", "spline_coupling"]
    assert [layer.type for layer in fb.nsf(1).layers] == ["elementwise_spline"]
    with pytest.raises(fb.SpecError, match="spline.bound"):
        fb.nsf(3, spline={"bound": -1.0})


def test_spline_layers_take_vector_events_only():
    with pytest.raises(fb.SpecError, match="layers\\[0\\]"):
        fb.FlowSpec(event_shape=(4, 2, 2), layers=[fb.SplineCoupling()])


def _x_knots(raw_widths, spline):
    """The x knots of an elementwise spline's learned raw widths ``(D, K)``."""
    share = np.exp(raw_widths - raw_widths.max(-1, keepdims=True))
    share = spline.min_bin_width + (1 - spline.min_bin_width * spline.bins) * share / share.sum(
        -1, keepdims=True)  # fmt: skip
    inner = np.cumsum(share, -1)[:, :-1] * 2 * spline.bound - spline.bound
    return inner  # (D, K - 1), the inner knots


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_points_just_above_a_knot_round_trip_unless_the_search_has_an_eps(eps):
    """eps 0 (the default): a point and its image fall in the same bin, and the inverse
    gives the point back. Pyro's 1e-6: where the derivative at a knot is under 1, a point
    between eps and eps / derivative above it goes to the bin above, its image (less than
    eps above the height knot) to the bin below, and the round trip misses."""
    spline = fb.RationalQuadraticSpline(bins=6, eps=eps)
    spec = fb.FlowSpec(event_shape=(3,), layers=[fb.ElementwiseSpline(spline=spline)])
    params = fb.init_params(spec, 5, init="random")
    params["layers.0.derivatives"] = params["layers.0.derivatives"] - 3.0  # derivatives < 1
    flow = fb.to_numpy(spec, params)
    knots = _x_knots(params["layers.0.widths"], spline)
    x = (knots[None] + np.array([1e-9, 1e-7, 2e-6, 5e-6, 1e-5, 3e-5])[:, None, None]).transpose(0, 2, 1)
    x = x.reshape(-1, 3)
    y, log_det = flow.forward_with_log_det(x)
    back, inverse_log_det = flow.inverse_with_log_det(y.copy())
    miss = float(np.abs(back - x).max())
    print(f"eps {eps}: round trip {miss:.1e}, log-dets {np.abs(log_det + inverse_log_det).max():.1e}")
    if eps:
        assert miss > 1e-9
    else:
        assert miss < 1e-12 and np.abs(log_det + inverse_log_det).max() < 1e-10
