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
    leaves = jax.tree_util.tree_leaves(t)  # every weight once (a repeated block's stacked)
    assert sum(leaf.size for leaf in leaves) == sum(np.prod(s) for s in fb.param_shapes(SPEC).values())


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


# ------------------------------------------------- JAX's 64-bit mode (issue 25)


@pytest.fixture(params=[False, True], ids=["x64-off", "x64-on"])
def x64(request):
    """JAX's 64-bit mode on or off for the test, the previous mode restored after it."""
    with jax.enable_x64(request.param):
        yield request.param


def _mode_dtype():
    return "float64" if jax.config.jax_enable_x64 else "float32"


def _small_guide(**kwargs):
    return AutoNormalizingFlow(_model, lambda d: fb.realnvp(d, num_couplings=2, hidden=(8,)), **kwargs)


def _train(guide, steps=150):
    svi = SVI(_model, guide, numpyro.optim.Adam(0.01), Trace_ELBO(num_particles=4))
    return svi.run(jax.random.PRNGKey(0), steps, progress_bar=False)


def test_to_numpyro_follows_jaxs_mode_or_its_dtype(x64):
    want = _mode_dtype()
    t = fb.to_numpyro(SPEC, PARAMS)
    assert t.flow.dtype == want
    y = jnp.asarray(np.random.default_rng(5).standard_normal((4, 3)))  # JAX's default dtype
    q = dist.TransformedDistribution(dist.Normal(jnp.zeros(3), 1.0).to_event(1), [t])
    assert q.log_prob(y).dtype == want
    z, ildj = fb.to_numpy(SPEC, PARAMS).inverse_with_log_det(np.asarray(y, np.float64))
    ref = -0.5 * np.sum(z**2, -1) - 1.5 * np.log(2 * np.pi) + ildj
    np.testing.assert_allclose(np.asarray(q.log_prob(y)), ref, rtol=1e-4, atol=1e-4)
    # a float32 transform takes NumPyro's float64 draws in 64-bit mode (cast, as promoted)
    t32 = fb.to_numpyro(SPEC, PARAMS, dtype="float32")
    assert t32(y).dtype == jnp.float32 and t32.inv(y).dtype == jnp.float32
    for bad in ("float16", "double", True, 3):
        with pytest.raises(ValueError, match=r"dtype: expected 'float32', 'float64' or None"):
            fb.to_numpyro(SPEC, PARAMS, dtype=bad)
    if not x64:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            fb.to_numpyro(SPEC, PARAMS, dtype="float64")


def test_the_guide_trains_samples_predicts_and_gives_quantiles_in_either_mode(x64):
    """A model written with the 64-bit mode on (or off) trains with the guide, whose
    flow, weights, draws and quantiles are in that mode's dtype."""
    want = _mode_dtype()
    guide = _small_guide()
    assert guide.dtype == want
    result = _train(guide)
    assert {v.dtype.name for v in result.params.values()} == {want}
    assert np.isfinite(result.losses).all() and result.losses[-20:].mean() < result.losses[:20].mean()
    draws = guide.sample_posterior(jax.random.PRNGKey(2), result.params, sample_shape=(500,))
    assert draws["z"].shape == (500, 3) and draws["z"].dtype == want
    predictive = Predictive(_model, guide=guide, params=result.params, num_samples=20,
                            return_sites=["z"])  # fmt: skip
    assert predictive(jax.random.PRNGKey(3))["z"].shape == (20, 3)
    eager = guide.quantiles(result.params, [0.25, 0.75], num_samples=1000)
    assert eager["z"].shape == (2, 3) and eager["z"].dtype == want
    jitted = jax.jit(lambda p, q: guide.quantiles(p, q, num_samples=1000))(result.params, jnp.array([0.25, 0.75]))
    np.testing.assert_allclose(np.asarray(jitted["z"]), np.asarray(eager["z"]), rtol=1e-4, atol=1e-4)


def test_a_guide_trained_in_one_mode_samples_predicts_and_quantiles_in_the_other(x64):
    """The issue's case: a float32-trained guide under ``jax_enable_x64`` (and back)."""
    guide = _small_guide()
    result = _train(guide, steps=20)
    with jax.enable_x64(not x64):
        other = "float32" if x64 else "float64"
        assert guide.dtype == other
        draws = guide.sample_posterior(jax.random.PRNGKey(2), result.params, sample_shape=(50,))
        assert draws["z"].shape == (50, 3) and draws["z"].dtype == other
        predictive = Predictive(_model, guide=guide, params=result.params, num_samples=5,
                                return_sites=["z"])  # fmt: skip
        assert predictive(jax.random.PRNGKey(3))["z"].shape == (5, 3)
        assert guide.quantiles(result.params, [0.5], num_samples=100)["z"].shape == (1, 3)


def test_the_guides_dtype_argument_fixes_it_and_is_checked_by_name(x64):
    guide = _small_guide(dtype="float32")
    assert guide.dtype == "float32"
    result = _train(guide, steps=20)  # in 64-bit mode NumPyro's float64 draws are cast
    assert {v.dtype.name for v in result.params.values()} == {"float32"}
    draws = guide.sample_posterior(jax.random.PRNGKey(2), result.params, sample_shape=(10,))
    assert draws["z"].dtype == jnp.float32
    with pytest.raises(ValueError, match=r"dtype: expected 'float32', 'float64' or None"):
        _small_guide(dtype="float16")
    if not x64:  # float64 needs the mode: refused, naming it, at the guide's first call
        with pytest.raises(ValueError, match="jax_enable_x64"):
            _train(_small_guide(dtype="float64"), steps=1)


def test_quantiles_jit_and_refusals(x64):
    """Values are checked where known (NaN included), dtypes and shapes always, under
    ``jax.jit`` too; traced values are not checked (they are unknown)."""
    guide = _small_guide()
    params = _train(guide, steps=5).params
    quantiles = lambda p, q: guide.quantiles(p, q, num_samples=200)  # noqa: E731
    for bad in ([float("nan")], [1.5], [-0.1, 0.5]):
        with pytest.raises(ValueError, match=r"quantiles: expected values in \[0, 1\]"):
            quantiles(params, bad)
        with pytest.raises(ValueError, match=r"quantiles: expected values in \[0, 1\]"):
            jax.jit(lambda p, bad=bad: quantiles(p, bad))(params)  # a constant: known
    traced = jax.jit(quantiles)(params, jnp.array([0.5, 1.5]))  # unknown: not checked
    assert traced["z"].shape == (2, 3)
    assert jax.jit(quantiles)(params, jnp.asarray(0.5))["z"].shape == (3,)
    with pytest.raises(ValueError, match=r"quantiles: expected a number or a list of numbers \(1-D\), got shape \(1, 2\)"):
        jax.jit(quantiles)(params, jnp.array([[0.25, 0.75]]))
    with pytest.raises(TypeError, match="quantiles: expected numbers in .0, 1., got dtype complex"):
        jax.jit(quantiles)(params, jnp.array([0.5 + 1j]))
    with pytest.raises(TypeError, match="quantiles: expected numbers"):
        quantiles(params, ["a"])
    with pytest.raises(ValueError, match="quantiles: .* got a ragged list"):
        quantiles(params, [[0.5], [0.1, 0.2]])
    with pytest.raises(ValueError, match="num_samples: expected a positive integer, got 0"):
        guide.quantiles(params, [0.5], num_samples=0)
    with pytest.raises(TypeError, match="num_samples: expected a positive integer"):
        guide.quantiles(params, [0.5], num_samples=10.0)


def test_params_from_svi_gives_writable_arrays_and_refuses_a_non_mapping(x64):
    torch = pytest.importorskip("torch")
    import warnings

    guide = _small_guide()
    result = _train(guide, steps=5)
    weights = params_from_svi(result.params)
    assert weights and all(isinstance(v, np.ndarray) and v.flags.writeable for v in weights.values())
    assert {v.dtype.name for v in weights.values()} == {_mode_dtype()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "non-writable" warning would fail here
        flow = fb.to_pyro(guide.flow_spec(), weights, dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_allclose(flow(torch.tensor(x)).detach().numpy(),
                               fb.to_numpy(guide.flow_spec(), weights).forward(x), atol=1e-12)  # fmt: skip
    with pytest.raises(TypeError, match=r"params: expected SVI's parameter dict .*, got list"):
        params_from_svi([1, 2])
    with pytest.raises(TypeError, match="prefix: expected the guide's prefix, a string"):
        params_from_svi(result.params, prefix=3)
    with pytest.raises(KeyError, match="no site starts with 'other_flow.'"):
        params_from_svi(result.params, prefix="other")


# ---------------------------------------------- hostile inputs (issue 25)


def test_condition_checks_the_context_before_converting_it():
    spec = fb.realnvp(2, num_couplings=2, hidden=(8,), context_dim=3)
    t = fb.to_numpyro(spec, fb.init_params(spec, 1, init="random"))
    cases = [(None, TypeError, "context: expected an array of real numbers, got None"),
             ("abc", TypeError, "context: expected real numbers, got dtype <U3"),
             (np.ones(3, complex), TypeError, "context: expected real numbers, got dtype complex128"),
             (np.ones(3, bool), TypeError, "context: expected real numbers, got dtype bool"),
             (jnp.ones(3, jnp.bfloat16), TypeError, "context: bfloat16 is a floating dtype this flow does not take"),
             ([[1.0, 2.0, 3.0], [1.0]], ValueError, "context: expected a rectangular array"),
             (np.ones(4), ValueError, r"context: expected shape \(\*batch, 3\)")]  # fmt: skip
    for context, error, message in cases:
        with pytest.raises(error, match=message):
            t.condition(context)
    with pytest.raises(TypeError, match="context: .* reads no context"):
        FlowTransform(fb.to_jax(SPEC), context=np.ones(3))
    with jax.enable_x64(True):  # NumPyro's float64 arrays in a float32 transform: cast
        assert t.condition(jnp.ones(3))(jnp.zeros((4, 2))).dtype == jnp.float32


def test_to_numpyro_checks_mutable_against_the_flows_state_names():
    spec = fb.FlowSpec(event_shape=(2,), layers=[fb.BatchNorm(), fb.AffineCoupling()])
    with pytest.raises(TypeError, match=r"mutable: expected None or the dict .* \['layers.0.running_mean', "
                                        r"'layers.0.running_log_var'\].*got list"):  # fmt: skip
        fb.to_numpyro(spec, mutable=[])
    with pytest.raises(ValueError, match=r"mutable: unexpected key 'foo': expected the flow's state names "
                                         r"\(its keys among \['layers.0.running_mean'"):  # fmt: skip
        fb.to_numpyro(spec, mutable={"foo": 1})
    with pytest.raises(ValueError, match="mutable: unexpected key 'layers.0.running_mean'.*has none"):
        fb.to_numpyro(SPEC, mutable={"layers.0.running_mean": 1})
    with pytest.raises(TypeError, match="mutable: expected None or the dict"):
        FlowTransform(fb.to_jax(SPEC), mutable=("a",))
    assert fb.to_numpyro(spec, mutable={"layers.0.running_mean": jnp.zeros(2)}).mutable is not None


def test_flow_transform_refuses_a_flow_that_is_not_a_jax_flow():
    for flow in (fb.to_numpy(SPEC), None, SPEC, "flow"):
        with pytest.raises(TypeError, match="flow: expected a flowbridge JAX flow"):
            FlowTransform(flow)
    flow = fb.to_jax(SPEC)
    assert FlowTransform(flow).flow is flow


def test_the_guide_takes_a_spec_its_dict_or_a_function_and_refuses_a_conditional_flow():
    spec = fb.realnvp(3, num_couplings=2, hidden=(8,))
    for given in (spec, spec.to_dict(), lambda d: fb.realnvp(d, num_couplings=2, hidden=(8,)).to_dict()):
        guide = AutoNormalizingFlow(_model, given)
        result = _train(guide, steps=2)
        assert sorted(result.params) == sorted(f"auto_flow.{n}" for n in fb.param_shapes(spec))
    conditional = fb.realnvp(3, hidden=(8,), context_dim=2)
    for given in (conditional, conditional.to_dict()):  # refused at construction
        with pytest.raises(ValueError, match="spec: a guide's flow must be unconditional .*context_dim=2"):
            AutoNormalizingFlow(_model, given)
    guide = AutoNormalizingFlow(_model, lambda d: fb.realnvp(d, hidden=(8,), context_dim=2))
    with pytest.raises(ValueError, match="spec: a guide's flow must be unconditional"):
        _train(guide, steps=1)  # a function's spec: refused at the first call
    with pytest.raises(TypeError, match="spec: expected a FlowSpec, its dict, a function"):
        AutoNormalizingFlow(_model, 3)
    with pytest.raises(fb.SpecError):
        AutoNormalizingFlow(_model, {"event_shape": [3]})
    with pytest.raises(TypeError, match="model: expected a NumPyro model"):
        AutoNormalizingFlow(None)
    with pytest.raises(TypeError, match="prefix: expected a string"):
        AutoNormalizingFlow(_model, prefix=1)
    with pytest.raises(TypeError, match="seed: expected an integer"):
        AutoNormalizingFlow(_model, seed=0.5)


# ------------------------------------------------- the default paths run the flow once
def _dots(fn, *args):
    """The matrix products in the gradient's program: how often the flow runs."""
    return str(jax.make_jaxpr(jax.grad(fn))(*args)).count("dot_general")


def test_transformed_distribution_and_neutra_paths_run_the_flow_once():
    """``TransformedDistribution(base, [t]).log_prob`` (and ``[t.inv]``, and NeuTra's
    ``t(z)`` then ``log_abs_det_jacobian(z, t(z))``) take the log-det the direction just
    computed: their gradients hold as many matrix products as the direct call's and equal
    it; before the kept pair, [t] ran the inverse twice (70 products against 35)."""
    spec = fb.realnvp(6, num_couplings=4, hidden=(16, 16))
    flow = fb.to_jax(spec, fb.init_params(spec, seed=0, init="random"))
    base = dist.Normal(jnp.zeros(6), 1.0).to_event(1)
    v = jnp.asarray(np.random.default_rng(0).standard_normal((8, 6)), jnp.float32)

    def direct_density(flow, y):
        x, inverse_log_det = flow.inverse_with_log_det(y)
        return jnp.sum(base.log_prob(x) + inverse_log_det)

    def density(flow, y):
        return jnp.sum(dist.TransformedDistribution(base, [FlowTransform(flow)]).log_prob(y))

    def direct_pushforward(flow, z):
        y, log_det = flow.forward_with_log_det(z)
        return jnp.sum(y) + jnp.sum(log_det)

    def inverted_density(flow, z):  # [t.inv]: the density of z where t maps z to noise
        return jnp.sum(dist.TransformedDistribution(base, [FlowTransform(flow).inv]).log_prob(z))

    def neutra(flow, z):
        t = FlowTransform(flow)
        y = t(z)
        return jnp.sum(y) + jnp.sum(t.log_abs_det_jacobian(z, y))

    for fast, slow in ((density, direct_density), (neutra, direct_pushforward)):
        assert _dots(fast, flow, v) == _dots(slow, flow, v)
        np.testing.assert_allclose(fast(flow, v), slow(flow, v), rtol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(jax.grad(fast)(flow, v)),
                        jax.tree_util.tree_leaves(jax.grad(slow)(flow, v)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert _dots(inverted_density, flow, v) == _dots(direct_pushforward, flow, v)


def test_the_kept_pair_is_the_calls_own_and_never_outlives_its_trace():
    import gc

    spec = fb.realnvp(3, num_couplings=2, hidden=(8,))
    flow = fb.to_jax(spec, fb.init_params(spec, seed=1, init="random"))
    t = FlowTransform(flow)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 3)), jnp.float32)
    y = t(x)
    # a swapped pair, or another array of the same values, is not the kept pair
    fresh = -flow.inverse_log_det_jacobian(jnp.array(y))
    np.testing.assert_allclose(t.log_abs_det_jacobian(jnp.array(x), jnp.array(y)), fresh,
                               rtol=1e-5)  # fmt: skip
    assert t._kept(y, x) is None and t._kept(jnp.array(x), y) is None
    assert t._kept(x, y) is not None
    del y
    gc.collect()
    assert t._last is None  # dropped with its output
    jax.jit(lambda z: t(z))(x)  # a trace that samples only
    gc.collect()
    assert t._last is None  # no tracer kept past the trace
    y = t(x)  # kept, and pickled without it
    import pickle

    again = pickle.loads(pickle.dumps(t))
    assert t._kept(x, y) is not None and getattr(again, "_last", None) is None
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(y))
