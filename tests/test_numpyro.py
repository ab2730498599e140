"""flowbridge flows in NumPyro (``flowbridge/numpyro.py``): the Transform against the
reference, as a pytree through jit and vmap, conditioned on a context; the autoguide
under SVI with ``sample_posterior``, ``Predictive`` and ``quantiles``; a guide's flow
built inside the jitted step from the module cache; trained weights into Pyro and TFP."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import codegen

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
numpyro = pytest.importorskip("numpyro")
dist = pytest.importorskip("numpyro.distributions")

from numpyro.infer import SVI, Predictive, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoNormal  # noqa: E402

from flowbridge.numpyro import AutoNormalizingFlow, FlowTransform, params_from_svi  # noqa: E402

SPEC = fb.realnvp(3, num_couplings=4, hidden=(16,), scale={"kind": "clamp"})
PARAMS = fb.init_params(SPEC, 4, init="random")


def test_transformed_distribution_log_prob_and_sample_against_the_reference():
    ref = fb.to_numpy(SPEC, PARAMS)
    y = np.random.default_rng(0).standard_normal((6, 3))
    z, ildj = ref.inverse_with_log_det(y)
    want = -0.5 * np.sum(z**2, -1) - 1.5 * np.log(2 * np.pi) + ildj
    with jax.enable_x64(True):
        t = fb.to_numpyro(SPEC, PARAMS, dtype="float64")
        q = dist.TransformedDistribution(dist.Normal(jnp.zeros(3, jnp.float64), 1.0).to_event(1), [t])
        np.testing.assert_allclose(np.asarray(q.log_prob(jnp.asarray(y))), want, atol=1e-12)
        # a sample's log_prob from the forward's intermediates equals the inverse route
        draws, inter = q.sample_with_intermediates(jax.random.PRNGKey(0), (5,))
        from_inter = q.log_prob(draws, inter)
        np.testing.assert_allclose(np.asarray(from_inter), np.asarray(q.log_prob(draws)), atol=1e-12)
    assert t.domain.event_dim == t.codomain.event_dim == 1
    assert t.forward_shape((4, 3)) == (4, 3) and t.inverse_shape((3,)) == (3,)


def test_the_transform_is_a_pytree_through_jit_and_vmap():
    t = fb.to_numpyro(SPEC, PARAMS)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 3)), jnp.float32)
    direct = t(x)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda t, x: t(x))(t, x)), np.asarray(direct), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(t)(x)), np.asarray(direct), atol=1e-6)
    np.testing.assert_allclose(np.asarray(t.inv(direct)), np.asarray(x), atol=1e-5)
    leaves = jax.tree_util.tree_leaves(t)
    assert len(leaves) == len(fb.param_shapes(SPEC))


def test_a_conditional_flow_is_conditioned_as_in_pyro():
    spec = fb.realnvp(2, num_couplings=2, hidden=(8,), context_dim=3)
    params = fb.init_params(spec, 1, init="random")
    t = fb.to_numpyro(spec, params)
    with pytest.raises(TypeError, match=r"needs a context: call .condition\(c\) first"):
        t(jnp.zeros((4, 2)))
    c = np.random.default_rng(2).standard_normal(3)
    x = np.random.default_rng(3).standard_normal((4, 2))
    got = t.condition(c)(jnp.asarray(x, jnp.float32))  # one context for the whole batch
    np.testing.assert_allclose(np.asarray(got), fb.to_numpy(spec, params).forward(x, c), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="reads no context"):
        fb.to_numpyro(SPEC).condition(c)


def _model():
    # a correlated 3-d Gaussian: the exact posterior, which AutoNormal cannot represent
    cov = jnp.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]])
    numpyro.sample("z", dist.MultivariateNormal(jnp.array([1.0, -1.0, 0.5]), cov))


def _fit(guide, steps=1500):
    svi = SVI(_model, guide, numpyro.optim.Adam(0.01), Trace_ELBO(num_particles=8))
    result = svi.run(jax.random.PRNGKey(0), steps, progress_bar=False)
    elbo = Trace_ELBO(num_particles=4000).loss(jax.random.PRNGKey(1), result.params, _model, guide)
    return result, float(elbo)


@pytest.fixture(scope="module")
def fitted():
    guide = AutoNormalizingFlow(_model, lambda d: fb.realnvp(d, hidden=(32, 32)))
    result, loss = _fit(guide)
    return guide, result, loss


def test_autoguide_trains_under_svi_and_beats_autonormal(fitted):
    """The exact posterior is the prior: the optimal loss is 0 (KL = 0). The flow guide
    gets close (0.05 after 1500 steps); AutoNormal stops at the KL of the best diagonal
    Gaussian (0.63)."""
    _, result, loss = fitted
    _, normal_loss = _fit(AutoNormal(_model))
    assert loss < 0.1 and normal_loss > 0.3 and loss < normal_loss / 5, (loss, normal_loss)
    names = sorted(result.params)
    assert names == sorted(f"auto_flow.{n}" for n in fb.param_shapes(fb.realnvp(3, hidden=(32, 32))))


def test_sample_posterior_predictive_quantiles_and_transform(fitted):
    guide, result, _ = fitted
    draws = guide.sample_posterior(jax.random.PRNGKey(2), result.params, sample_shape=(2000,))
    assert draws["z"].shape == (2000, 3)
    np.testing.assert_allclose(np.asarray(draws["z"].mean(0)), [1.0, -1.0, 0.5], atol=0.1)
    predictive = Predictive(_model, guide=guide, params=result.params, num_samples=50,
                            return_sites=["z"])  # fmt: skip
    assert predictive(jax.random.PRNGKey(3))["z"].shape == (50, 3)
    q = guide.quantiles(result.params, [0.5])
    np.testing.assert_allclose(np.asarray(q["z"][0]), [1.0, -1.0, 0.5], atol=0.1)
    transform = guide.get_transform(result.params)  # from the unit normal to the latent
    parts = getattr(transform, "parts", [transform])
    assert any(isinstance(p, FlowTransform) for p in parts), parts
    with pytest.raises(ValueError, match=r"quantiles: expected values in \[0, 1\]"):
        guide.quantiles(result.params, [1.5])


def test_the_jitted_step_builds_the_flow_from_the_module_cache(monkeypatch):
    """Code is generated once per spec: the guide's transform is rebuilt at every trace,
    from the module cache, and the compiled step runs the flow's operations alone."""
    calls = []
    original = codegen.generate
    monkeypatch.setattr(codegen, "generate", lambda *a, **k: calls.append(1) or original(*a, **k))
    spec_of = lambda d: fb.realnvp(d, hidden=(12,), num_couplings=3)  # noqa: E731
    guide = AutoNormalizingFlow(_model, spec_of)
    svi = SVI(_model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    svi.run(jax.random.PRNGKey(0), 50, progress_bar=False)
    assert len(calls) <= 1  # none where an earlier test generated this spec's module


def test_weights_trained_in_numpyro_run_in_pyro_and_tfp():
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow_probability")
    guide = AutoNormalizingFlow(_model, lambda d: fb.realnvp(d, hidden=(16,)))
    result, _ = _fit(guide, 200)
    weights = params_from_svi(result.params)
    spec = guide.flow_spec()
    x = np.random.default_rng(4).standard_normal((5, 3))
    ref = fb.to_numpy(spec, weights).forward(x)
    import torch

    y_pyro = fb.to_pyro(spec, weights)(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    y_tfp = fb.to_tfp(spec, weights).forward(x.astype(np.float32)).numpy()
    y_jax = np.asarray(fb.to_jax(spec, weights).forward(x))
    for y in (y_pyro, y_tfp, y_jax):
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    for name, value in fb.params_from_pyro(fb.to_pyro(spec, weights)).items():
        np.testing.assert_array_equal(value, weights[name])  # bit for bit


def test_batch_norm_trains_through_numpyro_mutable_state():
    """Density estimation in NumPyro with a batch norm: the running averages live in a
    ``numpyro.mutable`` site, the transform's training-mode forward writes them, and one
    SVI step moves them exactly as the reference's training-mode forward moves its own
    on the same batch."""
    from flowbridge.numpyro import state_names

    spec = fb.FlowSpec(event_shape=(2,), layers=[
        fb.BatchNorm(momentum=0.2), fb.AffineCoupling(conditioner=fb.Conditioner(hidden=(8,))),
        fb.Permutation(), fb.AffineCoupling(conditioner=fb.Conditioner(hidden=(8,)))])  # fmt: skip
    start = fb.init_params(spec, 0, init="random")
    names = state_names(spec)
    assert names == ["layers.0.running_mean", "layers.0.running_log_var"]
    data = np.random.default_rng(0).standard_normal((256, 2)) * [2.0, 0.5] + [1.0, -1.0]

    def model(data):
        params = {n: numpyro.param(f"flow.{n}", jnp.asarray(v, jnp.float32))
                  for n, v in start.items() if n not in names}  # fmt: skip
        state = numpyro.primitives.mutable("flow_state", {n: jnp.asarray(start[n], jnp.float32) for n in names})
        t = fb.to_numpyro(spec, {**params, **state}, mutable=state)
        base = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
        numpyro.sample("x", dist.TransformedDistribution(base, [t.inv]), obs=data)

    svi = SVI(model, lambda data: None, numpyro.optim.Adam(1e-3), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), jnp.asarray(data, jnp.float32))
    state, _ = svi.update(state, jnp.asarray(data, jnp.float32))
    moved = state.mutable_state["flow_state"]
    ref = fb.to_numpy(spec, start)  # training mode, the reference's default
    ref.forward(data)
    expected = fb.module_for(spec, "numpy").neutral_params(ref)
    for name in names:
        assert not np.allclose(np.asarray(moved[name]), start[name])
        np.testing.assert_allclose(np.asarray(moved[name]), expected[name], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="a batch norm in a guide's flow"):
        guide = AutoNormalizingFlow(_model, lambda d: fb.FlowSpec(
            event_shape=(d,), layers=[fb.BatchNorm(), fb.AffineCoupling()]))  # fmt: skip
        with numpyro.handlers.seed(rng_seed=0):
            guide()
