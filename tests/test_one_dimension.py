"""Flows on a one-dimensional event: the presets give one ElementwiseAffine layer (no
coupling splits one entry), and it trains as a Pyro and a NumPyro autoguide, as a TFP
TransformedDistribution and, with a context, as a conditional Gaussian."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb


@pytest.mark.parametrize("preset", [fb.realnvp, fb.nice])
@pytest.mark.parametrize("context_dim", [0, 3])
def test_the_presets_give_one_elementwise_affine_for_one_dimension(preset, context_dim):
    spec = preset(1, hidden=(8,), context_dim=context_dim)
    assert [layer.type for layer in spec.layers] == ["elementwise_affine"]
    assert spec.layers[0].conditioner.hidden == (8,)
    want = {0: 2, 3: 3 * 8 + 8 + 8 * 2 + 2}[context_dim]
    assert fb.param_count(spec) == want == sum(p.size for p in fb.init_params(spec).values())


def test_a_one_dimensional_nice_without_scaling_is_refused_by_name():
    with pytest.raises(fb.SpecError, match="scaling: a one-dimensional NICE flow"):
        fb.nice(1, scaling=False)


def test_elementwise_affine_takes_vector_events_only():
    with pytest.raises(fb.SpecError, match=r"layers\[0\]"):
        fb.FlowSpec(event_shape=(1, 4, 4), layers=[fb.ElementwiseAffine()])


def test_the_identity_at_init_for_every_scale_map_but_sigmoid():
    for scale in (fb.ExpScale(), fb.ClampScale(), fb.SoftClampScale()):
        for context_dim in (0, 2):
            spec = fb.FlowSpec(event_shape=(1,), context_dim=context_dim,
                               layers=[fb.ElementwiseAffine(scale=scale)])  # fmt: skip
            flow = fb.to_numpy(spec, fb.init_params(spec))
            x = np.linspace(-2, 2, 5)[:, None]
            given = (np.ones((5, 2)),) if context_dim else ()
            y, log_det = flow.forward_with_log_det(x, *given)
            np.testing.assert_array_equal(y, x)
            np.testing.assert_array_equal(log_det, 0.0)


def test_pyro_autoguide_fits_a_one_dimensional_posterior():
    """Normal(0, 1) prior, three observations of Normal(z, 0.5): the posterior is
    Normal(mean, sd) in closed form; the flow guide's samples match it."""
    torch = pytest.importorskip("torch")
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormalizingFlow

    data = torch.tensor([1.2, 0.7, 1.6])
    pyro.clear_param_store()
    pyro.set_rng_seed(0)

    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(z, 0.5), obs=data)

    guide = AutoNormalizingFlow(model, lambda dim: fb.to_pyro(fb.realnvp(dim, hidden=(8,))))
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.995})
    svi = SVI(model, guide, optim, Trace_ELBO(num_particles=8))
    for _ in range(600):
        svi.step()
    precision = 1.0 + len(data) / 0.25
    mean, sd = float(data.sum() / 0.25 / precision), precision**-0.5
    with torch.no_grad():
        z = torch.stack([guide()["z"] for _ in range(2000)])
    assert abs(float(z.mean()) - mean) < 0.05 and abs(float(z.std()) - sd) < 0.05


def test_numpyro_autoguide_runs_on_a_one_dimensional_latent():
    jax = pytest.importorskip("jax")
    pytest.importorskip("numpyro")
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO

    from flowbridge.numpyro import AutoNormalizingFlow

    def model():
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(z, 0.5), obs=1.0)

    guide = AutoNormalizingFlow(model, lambda dim: fb.realnvp(dim, hidden=(8,)))
    svi = SVI(model, guide, numpyro.optim.Adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 300, progress_bar=False)
    samples = guide.sample_posterior(jax.random.PRNGKey(1), result.params, sample_shape=(2000,))
    # posterior Normal(0.8, sqrt(0.2))
    assert abs(float(samples["z"].mean()) - 0.8) < 0.08
    assert abs(float(samples["z"].std()) - 0.2**0.5) < 0.08


def test_tfp_transformed_distribution_on_a_one_dimensional_event():
    pytest.importorskip("tensorflow_probability")
    import tensorflow as tf
    import tensorflow_probability as tfp

    spec = fb.realnvp(1, hidden=(8,), context_dim=2)
    params = fb.init_params(spec, 0, init="random")
    bij = fb.to_tfp(spec, params, dtype="float64")
    base = tfp.distributions.MultivariateNormalDiag(tf.zeros(1, tf.float64))
    q = tfp.distributions.TransformedDistribution(base, bij)
    x, c = np.array([[0.3], [-1.1]]), np.array([[0.5, -0.2], [1.0, 0.1]])
    got = q.log_prob(x, bijector_kwargs={"conditional_input": c}).numpy()
    ref = fb.to_numpy(spec, params)
    z, log_det = ref.inverse_with_log_det(x, c)
    want = -0.5 * (z**2).sum(-1) - 0.5 * np.log(2 * np.pi) + log_det
    np.testing.assert_allclose(got, want, rtol=1e-12)
