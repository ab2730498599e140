"""flowbridge's rational-quadratic spline against its peers' splines, where their
conventions allow agreement: TFP's ``RationalQuadraticSpline`` (given the same constrained
parameters), nflows' ``unconstrained_rational_quadratic_spline`` (given raw parameters
with the derivative offset), zuko's ``MonotonicRQSTransform`` (shown NOT to match), and
NumPyro (the autoguide trains a spline flow; ``to_numpyro``'s density equals the
float64 reference's). Pyro's ``_monotonic_rational_spline`` is covered elsewhere
(``tests/test_splines.py``).

flowbridge's conventions (:class:`flowbridge.RationalQuadraticSpline`): ``K`` bins on
``[-B, B]``; widths and heights ``min + (1 - min * K) * softmax(u)``; knots their running
sums scaled to ``[-B, B]``, the ends exact; inner derivatives ``min_d + softplus(u_d + c)``
with ``c = log(expm1(1 - min_d))``; edge derivative 1 (``"one"``) or ``1 - min_d``
(``"pyro"``); bin ``sum(x >= knots + eps) - 1`` clamped into ``[0, K - 1]``; identity
outside ``[-B, B]``.
"""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb
from flowbridge.splines import derivative_offset

#: (bins, bound) of the spline cases: the default and a non-default one.
CASES = [(8, 3.0), (5, 1.5)]
D = 3  # event size
N = 400  # inputs per direction


# ------------------------------------------------------------------ helpers


def _spec(bins: int, bound: float, edge: str = "one") -> fb.FlowSpec:
    spline = fb.RationalQuadraticSpline(bins=bins, bound=bound, edge_derivative=edge)
    return fb.FlowSpec(event_shape=(D,), layers=[fb.ElementwiseSpline(spline=spline)])


def _raw(bins: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random raw ``(u_w, u_h, u_d)``: ``(D, K)``, ``(D, K)``, ``(D, K - 1)``."""
    rng = np.random.default_rng(seed)
    return (1.5 * rng.standard_normal((D, bins)), 1.5 * rng.standard_normal((D, bins)),
            1.5 * rng.standard_normal((D, bins - 1)))  # fmt: skip


def _params(u_w, u_h, u_d) -> dict[str, np.ndarray]:
    return {"layers.0.widths": u_w, "layers.0.heights": u_h, "layers.0.derivatives": u_d}


def _knots(u: np.ndarray, minimum: float, bound: float) -> np.ndarray:
    """flowbridge's knots ``(..., K + 1)`` from raw ``u`` ``(..., K)``, written out in
    NumPy: ``share = min + (1 - min K) softmax(u)``, the inner knots ``cumsum(share) 2B - B``
    (the first ``K - 1`` running sums), the ends ``-B`` and ``B`` exactly."""
    k = u.shape[-1]
    e = np.exp(u - u.max(axis=-1, keepdims=True))
    share = minimum + (1.0 - minimum * k) * e / e.sum(axis=-1, keepdims=True)
    inner = np.cumsum(share, axis=-1)[..., : k - 1] * (2.0 * bound) - bound
    ends = np.ones(u.shape[:-1] + (1,))
    return np.concatenate([-bound * ends, inner, bound * ends], axis=-1)


def _inner_derivatives(u_d: np.ndarray, spline: fb.RationalQuadraticSpline) -> np.ndarray:
    """``min_d + softplus(u_d + c)``, ``c = log(expm1(1 - min_d))``."""
    return spline.min_derivative + np.logaddexp(0.0, u_d + derivative_offset(spline))


def _inputs(bound: float, seed: int) -> np.ndarray:
    """``(N, D)`` inputs on ``[-1.5B, 1.5B]`` (a third of them in the identity tails),
    with ``-B``, ``B`` and 0 in the first rows."""
    v = np.random.default_rng(seed).uniform(-1.5 * bound, 1.5 * bound, (N, D))
    v[0], v[1], v[2] = -bound, bound, 0.0
    return v


def _off_the_eps_window(v: np.ndarray, knots: np.ndarray, eps: float) -> bool:
    """No entry lies in ``[knot, knot + eps)`` of an inner knot of its own dimension: the
    only place where flowbridge's bin (eps on every knot) differs from a search without
    eps (there: the bin above at theta ~ 0; flowbridge: the bin below at theta ~ 1)."""
    gap = v[..., None] - knots[None, :, 1:-1]  # (N, D, K - 1)
    return not np.any((gap >= 0.0) & (gap < 2.0 * eps))


def _max_errors(got: dict, want: dict) -> dict[str, float]:
    return {name: float(np.max(np.abs(np.asarray(got[name]) - want[name]))) for name in want}


def _reference(bins: int, bound: float, seed: int, edge: str = "one"):
    """The float64 reference's forward and inverse (values and summed log-dets) on
    ``_inputs``, with the raw parameters, the spline and the inputs."""
    spec = _spec(bins, bound, edge)
    raw = _raw(bins, seed)
    ref = fb.to_numpy(spec, _params(*raw))
    v = _inputs(bound, seed + 100)
    y, ld = ref.forward_with_log_det(v)
    x, ild = ref.inverse_with_log_det(v)
    want = {"forward": y, "forward_log_det": ld, "inverse": x, "inverse_log_det": ild}
    return want, raw, spec.layers[0].spline, v


# ---------------------------------------------------------------------- TFP


def tfp_errors(bins: int, bound: float, seed: int = 0) -> dict[str, float]:
    """Max |TFP - flowbridge| of forward, inverse and both log-dets (float64)."""
    tfp = pytest.importorskip("tensorflow_probability")
    tf = pytest.importorskip("tensorflow")
    want, (u_w, u_h, u_d), spline, v = _reference(bins, bound, seed)
    x_knots = _knots(u_w, spline.min_bin_width, bound)
    y_knots = _knots(u_h, spline.min_bin_height, bound)
    assert _off_the_eps_window(v, x_knots, spline.eps)
    assert _off_the_eps_window(v, y_knots, spline.eps)
    bij = tfp.bijectors.RationalQuadraticSpline(
        bin_widths=tf.constant(np.diff(x_knots, axis=-1)),
        bin_heights=tf.constant(np.diff(y_knots, axis=-1)),
        knot_slopes=tf.constant(_inner_derivatives(u_d, spline)),
        range_min=-bound,
    )
    t = tf.constant(v)
    # TFP's log-dets are elementwise (event_ndims=0): summed over the event
    fldj = bij.forward_log_det_jacobian(t, event_ndims=0).numpy().sum(-1)
    ildj = bij.inverse_log_det_jacobian(t, event_ndims=0).numpy().sum(-1)
    got = {"forward": bij.forward(t).numpy(), "forward_log_det": fldj,
           "inverse": bij.inverse(t).numpy(), "inverse_log_det": ildj}  # fmt: skip
    assert all(g.dtype == np.float64 for g in got.values())
    return _max_errors(got, want)


@pytest.mark.parametrize(("bins", "bound"), CASES)
def test_tfp_rational_quadratic_spline_matches_the_reference(bins, bound):
    """TFP's bijector takes constrained parameters, so they are computed here with
    flowbridge's maps: ``bin_widths``/``bin_heights`` the differences of flowbridge's
    knots (TFP rebuilds its knots as ``range_min + cumsum``, the last knot not forced to
    B: round-off only), ``knot_slopes`` the K - 1 inner derivatives
    ``min_d + softplus(u_d + c)``, ``range_min = -B``. TFP pads the slopes with a literal
    1, so the edge derivative is ``"one"`` (``"pyro"``'s ``1 - min_d`` cannot be
    expressed). TFP's search has no eps, so no input lies within eps above an inner knot
    (asserted); its box is strict (``-B`` and ``B`` are identity there, the same value
    and log-det 0 as flowbridge's spline at its ends, checked). Its log-dets are
    elementwise (``event_ndims=0``), summed over the event."""
    errors = tfp_errors(bins, bound)
    assert max(errors.values()) < 1e-12, errors


# ------------------------------------------------------------------- nflows


def nflows_errors(bins: int, bound: float, seed: int = 1) -> dict[str, float]:
    """Max |nflows - flowbridge| of forward, inverse and both log-dets (float64)."""
    torch = pytest.importorskip("torch")
    rq = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
    want, (u_w, u_h, u_d), spline, v = _reference(bins, bound, seed)
    assert _off_the_eps_window(v, _knots(u_w, spline.min_bin_width, bound), spline.eps)
    assert _off_the_eps_window(v, _knots(u_h, spline.min_bin_height, bound), spline.eps)

    def per_input(a):  # nflows selects rows by a boolean mask: one set per input
        return torch.tensor(np.broadcast_to(a, (N,) + a.shape).copy(), dtype=torch.float64)

    got = {}
    for inverse, name in ((False, "forward"), (True, "inverse")):
        out, logabsdet = rq.unconstrained_rational_quadratic_spline(
            torch.tensor(v, dtype=torch.float64), per_input(u_w), per_input(u_h),
            per_input(u_d + derivative_offset(spline)), inverse=inverse, tails="linear",
            tail_bound=bound, min_bin_width=spline.min_bin_width,
            min_bin_height=spline.min_bin_height, min_derivative=spline.min_derivative,
        )  # fmt: skip
        got[name] = out.numpy()
        got[f"{name}_log_det"] = logabsdet.sum(-1).numpy()  # the inverse's: log|dx/dy|
    return _max_errors(got, want)


@pytest.mark.parametrize(("bins", "bound"), CASES)
def test_nflows_unconstrained_spline_matches_the_reference(bins, bound):
    """nflows' widths, heights (softmax with the same minimum, knots with forced ends)
    and identity tails on ``[-tail_bound, tail_bound]`` are flowbridge's. Differences
    handled: nflows' inner derivatives are ``min_d + softplus(u)`` with no offset, so it is
    given ``u_d + c``; it pads the K - 1 raw derivatives with ``c`` itself, so the edge
    derivative is 1 (``edge_derivative="one"``); it adds its eps to the last knot only,
    so no input lies within eps above an inner knot (asserted); it wants one parameter
    set per input (boolean row selection), so the ``(D, K)`` arrays are broadcast to
    ``(N, D, K)``; its log-det is elementwise, summed over the event, and its inverse's
    is log|dx/dy| as flowbridge's."""
    errors = nflows_errors(bins, bound)
    assert max(errors.values()) < 1e-12, errors


# --------------------------------------------------------------------- zuko


def zuko_difference(bins: int, bound: float, seed: int = 2, zero: bool = False) -> float:
    """Max |zuko - flowbridge| of the forward on the same raw arrays (zeros if ``zero``)."""
    torch = pytest.importorskip("torch")
    zuko = pytest.importorskip("zuko")
    spec = _spec(bins, bound)
    raw = _raw(bins, seed)
    if zero:
        raw = tuple(np.zeros_like(a) for a in raw)
    spline = spec.layers[0].spline
    v = _inputs(bound, seed + 100)
    want = fb.to_numpy(spec, _params(*raw)).forward(v)
    t = zuko.transforms.MonotonicRQSTransform(
        *(torch.tensor(a, dtype=torch.float64) for a in raw), bound=bound,
        slope=spline.min_derivative)  # fmt: skip
    got = t(torch.tensor(v, dtype=torch.float64)).numpy()
    return float(np.max(np.abs(got - want)))


@pytest.mark.parametrize(("bins", "bound"), CASES)
def test_zuko_monotonic_rqs_does_not_match_in_general(bins, bound):
    """zuko's parameterisation is NOT flowbridge's, and no map of the raw arrays
    reconciles them in general: zuko soft-clips the raw arrays
    (``u / (1 + |2u / log(slope)|)``, ``u_d / (1 + |u_d / log(slope)|)``) before the
    softmax, takes ``exp`` (not ``min_d + softplus(. + c)``) for the derivatives and has no
    minimum bin width or height. With the same random raw arrays (same B, slope = min_d)
    the outputs differ by more than 1e-3: the mismatch is real, not round-off. What they
    share: edge derivative 1 and zero raw arrays give the identity in both (checked, to
    1e-12)."""
    assert zuko_difference(bins, bound) > 1e-3
    assert zuko_difference(bins, bound, zero=True) < 1e-12


# ------------------------------------------------------------------ NumPyro


def _numpyro():
    jax = pytest.importorskip("jax")
    pytest.importorskip("numpyro")
    return jax


def test_numpyro_autoguide_trains_a_spline_flow():
    """``AutoNormalizingFlow`` takes a spline spec (a FlowSpec whose event shape is the
    model's latent size, ``fb.nsf(2, ...)``) as it takes a RealNVP one; the spline's
    conditioners start at zero (the identity, the guide a unit normal). 50 SVI steps in
    JAX's default float32 on a 2-d Gaussian: no NaN, the loss falls, the draws are
    finite and their dtype the mode's."""
    jax = _numpyro()
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO

    from flowbridge.numpyro import AutoNormalizingFlow

    def model():
        numpyro.sample("z", dist.Normal(jnp.array([1.0, -1.0]), 0.5).to_event(1))

    spec = fb.nsf(2, num_couplings=2, hidden=(8,))
    guide = AutoNormalizingFlow(model, spec)
    svi = SVI(model, guide, numpyro.optim.Adam(0.02), Trace_ELBO(num_particles=8))
    result = svi.run(jax.random.PRNGKey(0), 50, progress_bar=False)
    losses = np.asarray(result.losses)
    assert np.isfinite(losses).all(), losses
    assert losses[-10:].mean() < losses[:10].mean() - 0.1, (losses[:10], losses[-10:])
    assert sorted(result.params) == sorted(f"auto_flow.{n}" for n in fb.param_shapes(spec))
    assert all(np.isfinite(np.asarray(p)).all() for p in result.params.values())
    draws = guide.sample_posterior(jax.random.PRNGKey(1), result.params, sample_shape=(500,))
    assert draws["z"].shape == (500, 2) and draws["z"].dtype == jnp.float32
    assert np.isfinite(np.asarray(draws["z"])).all()


def numpyro_log_prob_error(seed: int = 3) -> float:
    """Max |log_prob(NumPyro, float64) - reference density| for a random-weight nsf."""
    jax = _numpyro()
    import jax.numpy as jnp
    import numpyro.distributions as dist

    spec = fb.nsf(3, num_couplings=3, hidden=(8,))
    params = fb.init_params(spec, seed, init="random")
    y = 2.0 * np.random.default_rng(seed).standard_normal((64, 3))  # some in the tails
    z, ildj = fb.to_numpy(spec, params).inverse_with_log_det(y)
    want = -0.5 * np.sum(z**2, -1) - 1.5 * np.log(2 * np.pi) + ildj
    with jax.enable_x64(True):
        t = fb.to_numpyro(spec, params, dtype="float64")
        base = dist.Normal(jnp.zeros(3, jnp.float64), 1.0).to_event(1)
        q = dist.TransformedDistribution(base, [t])
        got = np.asarray(q.log_prob(jnp.asarray(y)))
        assert got.dtype == np.float64 and np.isfinite(got).all()
        draws = q.sample(jax.random.PRNGKey(0), (16,))
        assert draws.dtype == jnp.float64 and np.isfinite(np.asarray(q.log_prob(draws))).all()
    return float(np.max(np.abs(got - want)))


def test_to_numpyro_spline_density_matches_the_reference_in_x64():
    """``to_numpyro`` of an nsf spec (float64, JAX's 64-bit mode on) as the transform of
    a ``TransformedDistribution`` over a unit normal: its ``log_prob`` equals the float64
    reference's density ``log N(f^-1(y)) + log|det df^-1/dy|`` to 1e-10, on
    ``init_params(..., init="random")`` weights (a flow far from the identity: max
    |f^-1(y) - y| is 2.4) and on inputs partly outside the spline's interval. No
    convention differs (the same generated spline); NumPyro's float64 base is given
    explicitly. Heavier random weights (0.7 * normal) make the inverse so ill-conditioned
    that a 1e-14 relative change of the weights moves the density by 2e-9, past 1e-10
    for any two float64 implementations; these weights keep that under 3e-12."""
    error = numpyro_log_prob_error()
    assert error < 1e-10, error
