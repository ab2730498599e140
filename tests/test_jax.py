"""What JAX users rely on (``flowbridge/backends/jax``): flows that are pytrees of their
weights, so jit, grad and vmap transform every forward, inverse and log-det; dtypes
and JAX's 64-bit mode; functional batch-norm state; inputs refused at the door; gradients
equal to Pyro's; parameters that move between frameworks bit for bit. Conformance of
every case against the reference is in ``test_conformance.py``."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import flowbridge as fb

from .cases import CASES, IMAGE_CASES

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax_core = pytest.importorskip("jax.extend.core")

SPEC = CASES["example_mixed_d7_explicit"]()  # every vector layer type, gathers and slices
PARAMS = fb.init_params(SPEC, 11, init="random")
REF = fb.to_numpy(SPEC, PARAMS)
X = np.random.default_rng(0).standard_normal((5, 7))


def _f64(spec=SPEC, params=PARAMS):
    return fb.to_jax(spec, params, dtype="float64")


def test_float64_needs_the_64_bit_mode_and_flowbridge_never_switches_it_on():
    assert not jax.config.jax_enable_x64  # the default, and flowbridge leaves it so
    with pytest.raises(ValueError, match="jax_enable_x64"):
        fb.to_jax(SPEC, PARAMS, dtype="float64")
    with jax.enable_x64(True):
        y = _f64().forward(X)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(y), REF.forward(X), atol=1e-12)
    assert not jax.config.jax_enable_x64


@pytest.mark.parametrize("x64", [False, True])
def test_a_float32_flow_stays_float32_in_either_mode(x64):
    with jax.enable_x64(x64):
        flow = fb.to_jax(SPEC, PARAMS)
        y, ld = flow.forward_with_log_det(X)  # float64 NumPy input, converted as TFP does
        x, ild = flow.inverse_with_log_det(y)
        assert {a.dtype for a in (y, ld, x, ild)} == {jnp.dtype("float32")}
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(flow))
        np.testing.assert_allclose(np.asarray(y), REF.forward(X), rtol=1e-5, atol=1e-5)


def test_the_flow_is_a_pytree_of_its_neutral_weights():
    flow = fb.to_jax(SPEC, PARAMS)
    leaves = jax.tree_util.tree_leaves(flow)
    # every weight once: a repeated block's stacked on a leading axis (as flowjax stores them)
    assert sum(leaf.size for leaf in leaves) == sum(np.prod(s) for s in fb.param_shapes(SPEC).values())
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, flow)  # a flow of the same structure
    back = fb.params_from_jax(doubled)
    for name, value in fb.params_from_jax(flow).items():
        np.testing.assert_array_equal(back[name], 2 * value)
    # two flows of one spec have one structure: a jitted function is traced once
    other = fb.to_jax(SPEC, fb.init_params(SPEC, 3, init="random"))
    assert jax.tree_util.tree_structure(flow) == jax.tree_util.tree_structure(other)
    traces = []

    @jax.jit
    def forward(flow, x):
        traces.append(1)
        return flow.forward(x)

    a, b = forward(flow, X), forward(other, X)
    assert len(traces) == 1 and not np.allclose(np.asarray(a), np.asarray(b))


def test_jit_grad_and_vmap_of_every_direction():
    with jax.enable_x64(True):
        flow = _f64()
        x = jnp.asarray(X)
        y_ref, ld_ref = REF.forward_with_log_det(X)
        for fn, want in [(lambda f, v: f.forward(v), y_ref),
                         (lambda f, v: f.forward_log_det_jacobian(v), ld_ref),
                         (lambda f, v: f.inverse(v), REF.inverse(X)),
                         (lambda f, v: f.inverse_log_det_jacobian(v), REF.inverse_log_det_jacobian(X))]:  # fmt: skip
            np.testing.assert_allclose(np.asarray(jax.jit(fn)(flow, x)), want, atol=1e-12)
            # vmap over the batch: one event at a time gives the batched result
            np.testing.assert_allclose(np.asarray(jax.vmap(lambda v, fn=fn: fn(flow, v))(x)), want,
                                       atol=1e-12)  # fmt: skip
        # grad with respect to the input: the forward log-det's gradient by autodiff
        # against central differences of the reference
        g = jax.grad(lambda v: flow.forward_log_det_jacobian(v).sum())(x)
        eps, fd = 1e-6, np.zeros_like(X)
        for i in range(X.shape[1]):
            step = np.zeros_like(X)
            step[:, i] = eps
            fd[:, i] = (REF.forward_log_det_jacobian(X + step) - REF.forward_log_det_jacobian(X - step)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(g), fd, atol=1e-7)


def test_gradients_with_respect_to_the_weights_equal_pyros():
    """The loss of ``test_frameworks``' cross-framework check: the same gradient for
    every neutral parameter in JAX as in Pyro (float64), so training in one equals
    training in the other."""
    torch = pytest.importorskip("torch")
    import pyro.distributions as dist

    e = np.random.default_rng(0).standard_normal((64, 7))
    mean = np.arange(7.0) / 3
    pf = fb.to_pyro(SPEC, PARAMS, dtype="float64")
    qd = dist.TransformedDistribution(dist.Normal(torch.zeros(7, dtype=torch.float64), 1.0).to_event(1), [pf])
    z = pf(torch.tensor(e))
    loss = (qd.log_prob(z) + 0.5 * ((z - torch.tensor(mean)) ** 2).sum(-1)).mean()
    loss.backward()
    torch_grads = {k: v.grad.numpy() for k, v in fb.module_for(SPEC, "pyro").neutral_params(pf).items()}

    def jax_loss(flow):
        z, ld = flow.forward_with_log_det(e)  # log q(z) = log N(e) - log|det|
        log_q = -0.5 * jnp.sum(jnp.asarray(e) ** 2, -1) - 3.5 * jnp.log(2 * jnp.pi) - ld
        return jnp.mean(log_q + 0.5 * jnp.sum((z - mean) ** 2, -1))

    with jax.enable_x64(True):
        value, grads = jax.value_and_grad(jax_loss)(_f64())
        named = fb.params_from_jax(grads)
    assert float(value) == pytest.approx(loss.item(), rel=1e-12)
    assert named.keys() == torch_grads.keys()
    for name, g in named.items():
        scale = 1 + np.abs(torch_grads[name]).max()
        assert np.abs(g - torch_grads[name]).max() / scale < 1e-12, name


def test_batch_norm_state_is_returned_not_written():
    """The training-mode forward returns the new running averages by neutral name;
    ``replace`` makes the flow that has them; the flow it ran on is unchanged. Both
    equal the reference's, which moves its averages in place."""
    spec = IMAGE_CASES["image_batch_norm_coupling_c2_4x4"]()
    params = fb.init_params(spec, 5, init="random")
    x = np.random.default_rng(1).standard_normal((6, 2, 4, 4))
    ref = fb.to_numpy(spec, params)  # training mode: the default in the reference
    y_ref, ld_ref = ref.forward_with_log_det(x)
    with jax.enable_x64(True):
        flow = fb.to_jax(spec, params, dtype="float64")
        before = fb.params_from_jax(flow)
        y, ld, state = flow.forward_training(x)
        np.testing.assert_allclose(np.asarray(y), y_ref, atol=1e-12)
        np.testing.assert_allclose(np.asarray(ld), ld_ref, atol=1e-12)
        assert state and all(".running_" in name for name in state)
        after_ref = fb.module_for(spec, "numpy").neutral_params(ref)  # moved in place
        for name, value in state.items():
            np.testing.assert_allclose(np.asarray(value), after_ref[name], atol=1e-12)
        for name, value in fb.params_from_jax(flow).items():  # the flow itself is unchanged
            np.testing.assert_array_equal(value, before[name])
        module = fb.module_for(spec, "jax")
        updated = module.replace(flow, state)
        for name in state:
            np.testing.assert_array_equal(fb.params_from_jax(updated)[name], np.asarray(state[name]))
        # and the training step jits, state and all
        y_jit, _, state_jit = jax.jit(lambda f, v: f.forward_training(v))(flow, x)
        np.testing.assert_allclose(np.asarray(y_jit), y_ref, atol=1e-12)
        for name in state:
            np.testing.assert_allclose(np.asarray(state_jit[name]), np.asarray(state[name]), atol=1e-12)


def test_inputs_are_refused_at_the_door():
    flow = fb.to_jax(SPEC, PARAMS)
    with pytest.raises(ValueError, match=r"expected shape \(\*batch, 7\), got \(2, 9\)"):
        flow.forward(np.zeros((2, 9)))
    with pytest.raises(TypeError, match="expected real numbers, got dtype complex"):
        flow.forward(np.zeros((2, 7), complex))
    with pytest.raises(TypeError, match="expected real numbers, got dtype bool"):
        flow.inverse(jnp.zeros((2, 7), bool))
    with jax.enable_x64(True):
        with pytest.raises(TypeError, match="expected dtype float32 .the flow's., got float64"):
            flow.forward(jnp.zeros((2, 7), jnp.float64))
    with pytest.raises(ValueError, match="dtype: expected 'float32' or 'float64'"):
        fb.to_jax(SPEC, PARAMS, dtype="float16")


def test_validate_args_checks_the_logit_domain_eagerly():
    spec = fb.realnvp_image((1, 4, 4), num_scales=1, blocks=1, channels=4, logit=0.05)
    x = np.full((2, 1, 4, 4), 0.5)
    x[1, 0, 2, 3] = 1.5
    assert np.isnan(np.asarray(fb.to_jax(spec).forward(x))).any()  # off: as TFP's default
    with pytest.raises(ValueError, match=r"Logit: x: expected values in \[0, 1\]"):
        fb.to_jax(spec, validate_args=True).forward(x)


def test_a_flow_built_inside_jit_from_traced_params():
    """NumPyro's guides hand their parameters over traced: their names and shapes are
    checked, their values flow through, and the module is generated once."""
    spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
    params = {k: jnp.asarray(v, jnp.float32) for k, v in fb.init_params(spec, 0, init="random").items()}

    @jax.jit
    def forward(params, x):
        return fb.to_jax(spec, params).forward(x)

    x = np.random.default_rng(2).standard_normal((3, 4))
    np.testing.assert_allclose(np.asarray(forward(params, x)), fb.to_numpy(spec, params).forward(x),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    wrong = dict(params, **{"layers.0.conditioner.0.kernel": jnp.zeros((3, 8))})
    with pytest.raises(fb.ParamError, match=r"layers.0.conditioner.0.kernel: expected shape \(2, 8\), got \(3, 8\)"):
        forward(wrong, x)


def test_weights_move_between_jax_pyro_and_tfp_bit_for_bit():
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow_probability")
    trained = jax.tree_util.tree_map(lambda a: a * 1.5 + 0.01, fb.to_jax(SPEC, PARAMS))  # "trained"
    weights = fb.params_from_jax(trained)
    assert all(w.dtype == np.float32 for w in weights.values())
    through_pyro = fb.params_from_pyro(fb.to_pyro(SPEC, weights))
    backs = [through_pyro, fb.params_from_tfp(fb.to_tfp(SPEC, weights)),
             fb.params_from_jax(fb.to_jax(SPEC, through_pyro))]  # fmt: skip
    for back in backs:
        for name, value in weights.items():
            assert back[name].dtype == np.float32
            np.testing.assert_array_equal(back[name], value)


# ---------------------------------------------- hostile inputs (issue 25)


def test_inside_jit_concrete_params_are_checked_and_traced_ones_by_dtype_and_shape():
    """One traced parameter no longer switches off every value check: the concrete ones
    are checked in full (values too), the traced ones by dtype and shape."""
    spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
    params = fb.init_params(spec, 0, init="random")
    kernel, bias = "layers.0.conditioner.0.kernel", "layers.1.conditioner.0.bias"
    x = np.random.default_rng(2).standard_normal((3, 4))

    def forward(mix):  # the kernel traced, the others concrete
        return jax.jit(lambda k: fb.to_jax(spec, {**params, kernel: k, **mix(k)}).forward(x))(
            jnp.asarray(params[kernel], jnp.float32))

    with pytest.raises(fb.ParamError, match=f"{bias}: expected finite values, got NaN"):
        forward(lambda k: {bias: np.full(8, np.nan)})
    for dtype in (jnp.int32, jnp.bool_, jnp.complex64):
        with pytest.raises(fb.ParamError, match=f"{kernel}: expected a floating-point array, got dtype"):
            forward(lambda k, dtype=dtype: {kernel: k.astype(dtype)})
    with pytest.raises(fb.ParamError, match=rf"{kernel}: expected shape \(2, 8\), got \(8, 2\)"):
        forward(lambda k: {kernel: k.T})
    # a valid nested list beside a traced value is taken
    got = forward(lambda k: {bias: params[bias].tolist()})
    np.testing.assert_allclose(np.asarray(got), fb.to_numpy(spec, params).forward(x), rtol=1e-5, atol=1e-5)


def test_params_beyond_float32_range_are_refused_in_a_float32_flow_even_inside_jit():
    spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
    params = {**fb.init_params(spec, 0), "layers.1.conditioner.0.bias": np.full(8, 1e39)}
    with pytest.raises(fb.ParamError, match=r"layers.1.conditioner.0.bias: 1e\+39 overflows float32"):
        fb.to_jax(spec, params)
    kernel = "layers.0.conditioner.0.kernel"
    with pytest.raises(fb.ParamError, match="overflows float32"):
        jax.jit(lambda k: fb.to_jax(spec, {**params, kernel: k}).forward(np.zeros((1, 4))))(
            jnp.zeros((2, 8)))
    with jax.enable_x64(True):  # float64: in range
        assert np.asarray(fb.to_jax(spec, params, dtype="float64").forward(np.zeros((1, 4)))).shape == (1, 4)


def test_ragged_and_bfloat16_inputs_are_refused_naming_the_argument():
    flow = fb.to_jax(SPEC, PARAMS)
    for call, name in ((flow.forward, "x"), (flow.inverse, "y"), (flow.inverse_log_det_jacobian, "y")):
        with pytest.raises(ValueError, match=rf"Flow: {name}: expected a rectangular array .*ragged list"):
            call([[0.0] * 7, [0.0] * 6])
        with pytest.raises(TypeError, match=rf"Flow: {name}: bfloat16 is a floating dtype this flow "
                                            r"does not take: expected float32 \(the flow's dtype\)"):  # fmt: skip
            call(jnp.zeros((2, 7), jnp.bfloat16))
        with pytest.raises(TypeError, match=rf"Flow: {name}: bfloat16 is a floating dtype"):
            call(np.zeros((2, 7), jnp.bfloat16))  # NumPy's (ml_dtypes) bfloat16 too
        with pytest.raises(TypeError, match=rf"Flow: {name}: expected an array of real numbers, got None"):
            call(None)
    spec = fb.realnvp(2, num_couplings=2, hidden=(8,), context_dim=3)
    cond = fb.to_jax(spec)
    with pytest.raises(ValueError, match="ConditionalFlow: context: expected a rectangular array"):
        cond.forward(np.zeros((2, 2)), [[0.0] * 3, [0.0]])
    with pytest.raises(TypeError, match="ConditionalFlow: context: bfloat16 is a floating dtype"):
        cond.forward(np.zeros((2, 2)), jnp.zeros((2, 3), jnp.bfloat16))
    # integers and NumPy floats convert, as before
    np.testing.assert_allclose(np.asarray(flow.forward(np.zeros((2, 7), np.int64))),
                               REF.forward(np.zeros((2, 7))), rtol=1e-5, atol=1e-5)  # fmt: skip


def test_replace_names_the_parameter_it_refuses():
    flow = fb.to_jax(SPEC, PARAMS)
    module = fb.module_for(SPEC, "jax")
    name = "layers.0.conditioner.0.bias"
    shape = PARAMS[name].shape
    cases = [(np.ones(shape, complex), TypeError, "expected real numbers, got dtype complex128"),
             (np.ones(shape, bool), TypeError, "expected real numbers, got dtype bool"),
             ("abc", TypeError, "expected real numbers, got dtype <U3"),
             (None, TypeError, "expected real numbers, got dtype object"),
             ([[0.0], [0.0, 1.0]], ValueError, "expected an array, got a ragged list"),
             (np.ones(shape[0] + 1), ValueError, "expected shape")]  # fmt: skip
    for value, error, message in cases:
        with pytest.raises(error, match=f"^{name}: {message}"):
            module.replace(flow, {name: value})
    new = module.replace(flow, {name: np.ones(shape)})  # a float64 value: cast to the flow's
    assert fb.params_from_jax(new)[name].dtype == np.float32


# repeated blocks: a coupling and its permutation (three times), a NICE stack, a
# conditional flow behind its embedding, a multi-scale image flow's checkerboard pair
# (the last coupling scanned with its block, the permutation after it an identity)
_SCANNED = {"realnvp_preset_d4_perm": [(0, 2, 4, 1)],
            "nice_conditional_d4_c2": [(0, 1, 4, 0), (4, 1, 1, 0)],
            "realnvp_conditional_embedded_d4_c3": [(0, 2, 4, 1)],
            "image_preset_c1_8x8": "image"}  # fmt: skip


@pytest.mark.parametrize("name", list(_SCANNED))
def test_repeated_blocks_run_as_one_scan_with_the_unrolled_results(name, monkeypatch):
    """Inside a trace, a run of repeated blocks of layers is one ``lax.scan`` over their
    stacked weights (the index arrays that differ, a permutation's, scanned too), whether
    the input or only the weights are traced. Its
    forward, inverse, log-dets and gradients (weights and input) equal those of the same
    flow unrolled, layer by layer, in float64; eagerly nothing is scanned."""
    make = {**CASES, **IMAGE_CASES}[name]
    spec = make()
    params = fb.init_params(spec, 4, init="random")
    shape = (3, *spec.event_shape)
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    given = (rng.standard_normal((3, spec.context_dim)),) if spec.context_dim else ()
    if spec.layers[0].type == "logit":
        x = rng.uniform(0.1, 0.9, shape)
    with jax.enable_x64(True):
        flow = fb.to_jax(spec, params, dtype="float64")
        module = sys.modules[type(flow).__module__]  # the module that built it
        runs = module._runs(flow.layers)
        if _SCANNED[name] != "image":
            assert runs == _SCANNED[name]
        assert any(count > 1 for _, _, count, _ in runs)

        def loss(flow, x):
            y, ld = flow.forward_with_log_det(x, *given)
            x_back, ild = flow.inverse_with_log_det(y, *given)
            return jnp.sum(jnp.sin(y)) + jnp.sum(ld) + jnp.sum(ild * x_back.reshape(3, -1)[:, 0])

        def outputs(flow, x):
            y, ld = flow.forward_with_log_det(x, *given)
            y_new = y + 0.1  # not the very output: nothing is cached, but say what is inverted
            return y, ld, *flow.inverse_with_log_det(y_new, *given), jax.grad(loss, (0, 1))(flow, x)

        assert "scan" in str(jax.make_jaxpr(outputs)(flow, x))
        # traced weights and a concrete input (data closed over in a loss) scan too
        assert "scan" in str(jax.make_jaxpr(lambda f: f.forward(x, *given))(flow))
        scanned = jax.jit(outputs)(flow, x)
        eager = flow.forward_with_log_det(x, *given)
        monkeypatch.setattr(module, "_runs", lambda layers: [(i, 1, 1, 0) for i in range(len(layers))])
        flow.layers = flow.layers  # stored again, by the patched runs: one layer at a time
        jax.clear_caches()  # jit and make_jaxpr keep the traces of the scanned flow
        assert "scan" not in str(jax.make_jaxpr(outputs)(flow, x))
        unrolled = jax.jit(outputs)(flow, x)
    # the weights' gradients compared by neutral name: the scanned flow's come stacked
    (*got, (got_flow, got_x)), (*want, (want_flow, want_x)) = scanned, unrolled
    assert len(jax.tree_util.tree_leaves(got_flow)) < len(jax.tree_util.tree_leaves(want_flow))
    got = jax.tree_util.tree_leaves([*got, got_x, fb.params_from_jax(got_flow)])
    want = jax.tree_util.tree_leaves([*want, want_x, fb.params_from_jax(want_flow)])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(eager[0]), np.asarray(scanned[0]), rtol=1e-12, atol=1e-12)
    ref = fb.to_numpy(spec, params)
    np.testing.assert_allclose(np.asarray(scanned[0]), ref.forward(x, *given), rtol=1e-12, atol=1e-12)


def _top_level(jaxpr, primitive):
    """How many ``primitive`` equations ``jaxpr`` holds outside its sub-jaxprs (a scan's
    body)."""
    return sum(eqn.primitive.name == primitive for eqn in jaxpr.eqns)


_ALTERNATING = fb.realnvp(4, num_couplings=5, hidden=(8,))  # masks alternate: no permutation
_PERMUTED = fb.realnvp(4, num_couplings=3, hidden=(8,), permutation="random")
_LEADING = fb.FlowSpec(event_shape=(4,), layers=[fb.Permutation(), fb.AffineCoupling()] * 2
                       + [fb.Permutation()])  # fmt: skip


@pytest.mark.parametrize(("spec", "runs", "outside"), [
    (_PERMUTED, [(0, 2, 3, 1)], 0),  # C P C P C: three scanned, the last permutation padded
    (_ALTERNATING, [(0, 2, 2, 0), (4, 1, 1, 0)], 1),  # a coupling cannot be padded in
    (_LEADING, [(0, 2, 2, 0), (4, 1, 1, 0)], 0),  # the missing layer would be a coupling
], ids=["permuted", "alternating", "leading"])  # fmt: skip
def test_the_last_coupling_joins_the_scan_where_the_missing_layers_are_identities(spec, runs, outside):
    """A run of repeated blocks followed by the start of one more takes it in as a last
    repeat padded with identities (a permutation whose indices are ``0..n-1``), as
    flowjax's scan ends on an identity permutation; only layers that say they can be
    (``_IDENTITY_AT_ARANGE``) and hold no weights pad. The padding is in no view: the
    layers, the neutral names and the leaves are the flow's. In float64 the scanned
    flow equals the reference, forward and inverse, with no coupling left outside the
    scan where the padding applies."""
    params = fb.init_params(spec, 5, init="random")
    with jax.enable_x64(True):
        flow = fb.to_jax(spec, params, dtype="float64")
        module = sys.modules[type(flow).__module__]
        assert module._runs(flow.layers) == runs
        parts = jax.tree_util.tree_map(lambda a: a, flow)._packed()  # unflattened: from the stored parts
        stack = next(part for part in parts if isinstance(part, module._Stack))
        assert stack.pad == runs[0][3] and stack.count == runs[0][2]
        rebuilt = jax.tree_util.tree_map(lambda a: a, flow)
        assert [type(layer) for layer in rebuilt.layers] == [type(layer) for layer in flow.layers]
        assert len(rebuilt.layers) == len(spec.layers)
        assert fb.params_from_jax(rebuilt).keys() == params.keys()
        x = np.random.default_rng(2).standard_normal((3, 4))
        forward = jax.make_jaxpr(lambda f: f.forward_with_log_det(x))(flow).jaxpr
        assert _top_level(forward, "dot_general") == outside * 2  # two dense layers each
        ref = fb.to_numpy(spec, params)
        y, ld = jax.jit(lambda f, v: f.forward_with_log_det(v))(flow, x)
        back, ild = jax.jit(lambda f, v: f.inverse_with_log_det(v))(flow, np.asarray(y) + 0.1)
        want_y, want_ld = ref.forward_with_log_det(x)
        want_back, want_ild = ref.inverse_with_log_det(np.asarray(y) + 0.1)
    for got, want in [(y, want_y), (ld, want_ld), (back, want_back), (ild, want_ild)]:
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def test_a_layer_that_says_it_is_the_identity_at_arange_is():
    """Every generated layer class flagged ``_IDENTITY_AT_ARANGE`` (from its plan's
    ``identity_at_arange``) is the identity map, log-det 0 both ways, with its index
    fields ``0..n-1``; a layer class with index fields but other math (an LU-factored
    1x1 convolution's) is not flagged."""
    spec = fb.FlowSpec(event_shape=(5,), layers=[fb.Permutation(kind="random", seed=1), fb.Conv1x1()])
    flow = fb.to_jax(spec, fb.init_params(spec, 0, init="random"))
    module = sys.modules[type(flow).__module__]
    permutation, linear = flow.layers
    assert permutation._IDENTITY_AT_ARANGE and linear._INDEX_FIELDS
    assert not getattr(linear, "_IDENTITY_AT_ARANGE", False) and not module._paddable(linear)
    identity = module._as_identity(permutation)
    x = np.random.default_rng(4).standard_normal((2, 5)).astype(np.float32)
    for out, log_det in (identity.forward_with_log_det(x), identity.inverse_with_log_det(x)):
        np.testing.assert_array_equal(np.asarray(out), x)
        np.testing.assert_array_equal(np.asarray(log_det), np.zeros(2))
    assert not np.array_equal(np.asarray(permutation.forward(x)), x)  # the original is not


def _stacking_shapes(jaxpr):
    """The shapes that every ``stack``, ``unstack`` or ``concatenate`` in ``jaxpr`` (and
    its sub-jaxprs) takes or gives."""
    shapes = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("stack", "unstack", "concatenate"):
            shapes |= {tuple(v.aval.shape) for v in [*eqn.invars, *eqn.outvars]}
        for sub in jax_core.jaxprs_in_params(eqn.params):
            shapes |= _stacking_shapes(sub)
    return shapes


def test_repeated_blocks_are_stored_stacked_and_a_training_step_keeps_them_so():
    """A run of repeated blocks keeps each weight once, its repeats stacked (as flowjax
    stores them): the gradient comes back in that layout, and neither the loss nor its
    gradient stacks or unstacks the weights (no ``stack``, ``unstack`` or ``concatenate``
    of a stacked weight's shape); by neutral name the weights are the flow's, and the view is per layer."""
    spec = fb.realnvp(4, num_couplings=6, hidden=(8,))
    params = fb.init_params(spec, 2, init="random")
    flow = fb.to_jax(spec, params)
    leaves = jax.tree_util.tree_leaves(flow)
    stacked = {leaf.shape for leaf in leaves if leaf.shape[0] == 3}  # 3 blocks of 2 couplings
    assert stacked and len(leaves) < len(params)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((6, 4)), jnp.float32)

    def loss(f):
        z, ld = f.inverse_with_log_det(x)
        return jnp.mean(0.5 * jnp.sum(z**2, -1) - ld)

    grads = jax.jit(jax.grad(loss))(flow)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(flow)
    assert not _stacking_shapes(jax.make_jaxpr(jax.grad(loss))(flow).jaxpr) & stacked
    for name, value in fb.params_from_jax(flow).items():
        np.testing.assert_array_equal(value, np.asarray(params[name], np.float32))
    assert isinstance(flow.layers, tuple) and len(flow.layers) == len(spec.layers)
    with pytest.raises(TypeError):
        flow.layers[0] = flow.layers[1]


def test_the_stored_layout_takes_any_leaves_and_keeps_no_tracer():
    """A pytree transform may put anything in the leaves (None, shapes): unflattening
    never slices them. A flow used inside a trace, closed over, keeps no tracer; a flow
    made inside one is rebuilt there each time."""
    flow = fb.to_jax(fb.realnvp(4, num_couplings=4, hidden=(8,)), None)
    nothing = jax.tree_util.tree_map(lambda a: None, flow)
    assert jax.tree_util.tree_leaves(nothing) == []
    shapes = jax.eval_shape(lambda f: f, flow)
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(flow)
    fresh = jax.tree_util.tree_map(lambda a: a, flow)  # stored parts only: no view yet
    x = jnp.ones((2, 4))
    jax.jit(lambda v: fresh.forward(v) + fresh.layers[0].forward(v))(x)
    kept = jax.tree_util.tree_leaves([v for k, v in fresh.__dict__.items() if k in ("_layers", "_parts")])
    assert kept and not any(isinstance(v, jax.core.Tracer) for v in kept)
    np.testing.assert_allclose(np.asarray(fresh.forward(x)), np.asarray(flow.forward(x)))


def test_validate_args_survives_a_pytree_round_trip():
    """The flags reach the stored stack (four couplings: two repeats of a block of two)
    and come back through a tree_map and a jit."""
    spec = fb.FlowSpec(event_shape=(2,), layers=[fb.Logit(), *[fb.AffineCoupling()] * 4])
    flow = jax.tree_util.tree_map(lambda a: a, fb.to_jax(spec, None, validate_args=True))
    module = sys.modules[type(flow).__module__]
    assert any(isinstance(part, module._Stack) for part in flow._packed())
    flow = jax.jit(lambda f: f)(flow)
    assert len(flow.layers) == 5 and all(layer.validate_args for layer in flow.layers)
    with pytest.raises(ValueError, match="expected values in"):
        flow.forward(np.full((1, 2), 1.5))
