"""What Pyro and TFP users rely on: module plumbing, caches, devices, dtypes, variables,
and TransformedDistribution log_prob / sample against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb

from .cases import CASES, D7

SPEC = CASES["example_mixed_d7_explicit"]()  # every layer type, gather and slice masks
PARAMS = fb.init_params(SPEC, 11, init="random")
REF = fb.to_numpy(SPEC, PARAMS)


def _base_log_prob(x):
    return -0.5 * np.sum(x**2, -1) - 0.5 * x.shape[-1] * np.log(2 * np.pi)


def _ref_log_prob(x):
    z, ildj = REF.inverse_with_log_det(x)
    return _base_log_prob(z) + ildj


# ------------------------------------------------------------------------------ Pyro
@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_pyro_transform_module_plumbing(torch):
    from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule

    flow = fb.to_pyro(SPEC, PARAMS, dtype="float64")
    assert isinstance(flow, ComposeTransformModule)
    for layer in flow:
        assert isinstance(layer, TransformModule) and layer.bijective
        assert layer.domain.event_dim == layer.codomain.event_dim == 1
    assert len(list(flow.parameters())) == len(fb.param_shapes(SPEC))
    buffers = dict(flow.named_buffers())
    assert any(k.endswith("merge_idx") for k in buffers) and any(k.endswith("indices") for k in buffers)


def test_pyro_batch_shapes_and_log_det(torch):
    flow = fb.to_pyro(SPEC, PARAMS, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 7))
    xt = torch.tensor(x)
    yt = flow(xt)
    ld = flow.log_abs_det_jacobian(xt, yt)
    assert yt.shape == (2, 3, 7) and ld.shape == (2, 3)
    y_ref, ld_ref = REF.forward_with_log_det(x)
    np.testing.assert_allclose(yt.detach().numpy(), y_ref, atol=1e-12)
    np.testing.assert_allclose(ld.detach().numpy(), ld_ref, atol=1e-12)


def test_pyro_cache_is_honoured_and_bypassable(torch):
    flow = fb.to_pyro(SPEC, PARAMS, dtype="float64")
    x = torch.randn(5, 7, dtype=torch.float64)
    y = flow(x)
    layer = flow[0]
    y0 = layer(x)
    assert layer.inv(y0) is x  # cache hit: the very tensor comes back
    assert layer.inv(y0.clone()) is not x  # fresh tensor: computed
    torch.testing.assert_close(layer.inv(y0.clone()), x)
    torch.testing.assert_close(flow.inv(y.clone()), x)


def test_pyro_to_moves_every_tensor(torch):
    flow = fb.to_pyro(SPEC, PARAMS).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in flow.parameters())
    assert all(b.dtype == torch.long for b in flow.buffers())  # indices stay integer
    meta = flow.to("meta")
    assert all(t.device.type == "meta" for t in [*meta.parameters(), *meta.buffers()])


def test_pyro_transformed_distribution(torch):
    import pyro
    import pyro.distributions as dist

    flow = fb.to_pyro(SPEC, PARAMS, dtype="float64")
    base = dist.Normal(torch.zeros(7, dtype=torch.float64), 1.0).to_event(1)
    d = dist.TransformedDistribution(base, [flow])
    x = np.random.default_rng(1).standard_normal((6, 7))
    np.testing.assert_allclose(d.log_prob(torch.tensor(x)).detach().numpy(), _ref_log_prob(x),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    pyro.set_rng_seed(3)
    sample = d.sample((4,))
    pyro.set_rng_seed(3)
    z = base.sample((4,))
    np.testing.assert_allclose(sample.numpy(), REF.forward(z.numpy()), atol=1e-12)


def test_pyro_gradients_flow_to_every_parameter(torch):
    import pyro.distributions as dist

    flow = fb.to_pyro(SPEC, PARAMS, dtype="float64")
    base = dist.Normal(torch.zeros(7, dtype=torch.float64), 1.0).to_event(1)
    loss = -dist.TransformedDistribution(base, [flow]).log_prob(torch.randn(16, 7).double()).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


# ------------------------------------------------------------------------------- TFP
@pytest.fixture
def tfp():
    return pytest.importorskip("tensorflow_probability")


def test_tfp_bijector_plumbing(tfp):
    flow = fb.to_tfp(SPEC, PARAMS, dtype="float64")
    assert isinstance(flow, tfp.bijectors.Composition) and "Chain" in type(flow).__name__
    layers = list(reversed(flow.bijectors))
    assert [type(b).__name__ for b in layers] == [
        "AdditiveCoupling", "Permutation", "AffineCouplingDepth1GeluExp",
        "AffineCouplingDepth0ReluSigmoid", "Scaling"]  # fmt: skip
    assert all(b.forward_min_event_ndims == 1 for b in layers)
    assert [b.is_constant_jacobian for b in layers] == [True, True, False, False, True]
    assert len(flow.trainable_variables) == len(fb.param_shapes(SPEC))
    assert not any("keras" in type(v).__module__ for v in flow.trainable_variables)


def test_tfp_batch_shapes_and_log_dets(tfp):
    flow = fb.to_tfp(SPEC, PARAMS, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 7))
    y = flow.forward(x)
    assert tuple(y.shape) == (2, 3, 7)
    y_ref, ld_ref = REF.forward_with_log_det(x)
    np.testing.assert_allclose(y.numpy(), y_ref, atol=1e-12)
    ld = np.broadcast_to(flow.forward_log_det_jacobian(x, event_ndims=1).numpy(), (2, 3))
    np.testing.assert_allclose(ld, ld_ref, atol=1e-12)
    ild = np.broadcast_to(flow.inverse_log_det_jacobian(np.array(y_ref), event_ndims=1), (2, 3))
    np.testing.assert_allclose(ild, -ld_ref, atol=1e-12)


def test_tfp_constant_jacobian_cache_does_not_leak_batch_shape(tfp):
    nice = CASES["nice_preset_d5"]()
    flow = fb.to_tfp(nice, fb.init_params(nice, 0, init="random"), dtype="float64")
    a = flow.forward_log_det_jacobian(np.zeros((64, 5)), event_ndims=1)
    b = flow.forward_log_det_jacobian(np.zeros((3, 5)), event_ndims=1)
    assert np.broadcast_shapes(np.shape(b), (3,)) == (3,)
    np.testing.assert_allclose(np.mean(a), np.mean(b), atol=1e-12)


def test_tfp_transformed_distribution(tfp):
    import tensorflow as tf

    tfd = tfp.distributions
    flow = fb.to_tfp(SPEC, PARAMS, dtype="float64")
    base = tfd.MultivariateNormalDiag(loc=tf.zeros(7, tf.float64))
    d = tfd.TransformedDistribution(base, flow)
    x = np.random.default_rng(1).standard_normal((6, 7))
    np.testing.assert_allclose(d.log_prob(x).numpy(), _ref_log_prob(x), rtol=1e-12, atol=1e-12)
    sample = d.sample(4, seed=(1, 2))
    z = base.sample(4, seed=(1, 2))
    np.testing.assert_allclose(sample.numpy(), REF.forward(z.numpy()), atol=1e-12)


def test_tfp_gradients_reach_every_variable(tfp):
    import tensorflow as tf

    flow = fb.to_tfp(SPEC, PARAMS, dtype="float64")
    d = tfp.distributions.TransformedDistribution(
        tfp.distributions.MultivariateNormalDiag(loc=tf.zeros(7, tf.float64)), flow)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(d.log_prob(tf.random.normal((16, 7), dtype=tf.float64)))
    grads = tape.gradient(loss, flow.trainable_variables)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_tfp_inside_tf_function(tfp):
    import tensorflow as tf

    flow = fb.to_tfp(SPEC, PARAMS, dtype="float64")
    fn = tf.function(lambda x: flow.inverse(flow.forward(x)))
    x = np.random.default_rng(2).standard_normal((4, 7))
    np.testing.assert_allclose(fn(tf.constant(x)).numpy(), x, atol=1e-12)


# ----------------------------------------------------------------------- both at once
def test_gradients_agree_across_frameworks(torch, tfp):
    """The same loss on the same base draws gives the same gradient for every neutral
    parameter in Pyro and TFP (float64): training in one equals training in the other."""
    import pyro.distributions as dist
    import tensorflow as tf

    e = np.random.default_rng(0).standard_normal((64, 7))
    target_mean = np.arange(7.0) / 3

    pf = fb.to_pyro(SPEC, PARAMS, dtype="float64")
    qd = dist.TransformedDistribution(dist.Normal(torch.zeros(7, dtype=torch.float64), 1.0).to_event(1), [pf])
    z = pf(torch.tensor(e))
    loss = (qd.log_prob(z) + 0.5 * ((z - torch.tensor(target_mean)) ** 2).sum(-1)).mean()
    loss.backward()
    torch_grads = {k: v.grad.numpy() for k, v in fb.module_for(SPEC, "pyro").neutral_params(pf).items()}

    tf_flow = fb.to_tfp(SPEC, PARAMS, dtype="float64")
    base = tfp.distributions.MultivariateNormalDiag(loc=tf.zeros(7, tf.float64))
    q = tfp.distributions.TransformedDistribution(base, tf_flow)
    named = fb.module_for(SPEC, "tfp").neutral_params(tf_flow)
    with tf.GradientTape() as tape:
        z = tf_flow.forward(tf.constant(e))
        tf_loss = tf.reduce_mean(q.log_prob(z) + 0.5 * tf.reduce_sum((z - target_mean) ** 2, -1))
    grads = tape.gradient(tf_loss, list(named.values()))
    assert float(tf_loss) == pytest.approx(loss.item(), rel=1e-12)
    for (name, _), g in zip(named.items(), grads, strict=True):
        scale = 1 + np.abs(torch_grads[name]).max()
        assert np.abs(g.numpy() - torch_grads[name]).max() / scale < 1e-12, name


def test_tfp_log_det_memo_is_graph_only(tfp):
    """Eagerly, a log-det always reflects the current variables, even for the same
    tensor; inside tf.function the reused log-det equals a fresh one, gradients too."""
    import tensorflow as tf

    flow = fb.to_tfp(SPEC, PARAMS, dtype="float64")
    x = tf.constant(np.random.default_rng(4).standard_normal((6, 7)))
    flow.forward(x)
    before = flow.forward_log_det_jacobian(x, event_ndims=1).numpy()
    for v in flow.trainable_variables:
        v.assign(v * 1.5)
    after = flow.forward_log_det_jacobian(x, event_ndims=1).numpy()
    fresh = fb.to_numpy(SPEC, fb.params_from_tfp(flow)).forward_log_det_jacobian(x.numpy())
    assert not np.allclose(before, after)
    np.testing.assert_allclose(np.broadcast_to(after, (6,)), fresh, atol=1e-12)

    base = tfp.distributions.MultivariateNormalDiag(loc=tf.zeros(7, tf.float64))
    d = tfp.distributions.TransformedDistribution(base, flow)

    def loss_and_grads(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(d.log_prob(x))
        return loss, tape.gradient(loss, flow.trainable_variables)

    eager = loss_and_grads(x)
    graph = tf.function(loss_and_grads)(x)
    np.testing.assert_allclose(graph[0].numpy(), eager[0].numpy(), rtol=1e-12)
    for a, b in zip(graph[1], eager[1], strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


ONE_PASS = {
    "every layer type": (SPEC, PARAMS),
    "conditional, embedded context": (fb.realnvp(3, hidden=(8,), context_dim=2,
                                                 context_embedding={"features": 4}), None),
    "image, channels last": (fb.realnvp_image((1, 4, 4), num_scales=2, blocks=1, channels=4,
                                              actnorm=True), None),
}  # fmt: skip


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("case", ONE_PASS)
def test_tfp_flow_runs_its_layers_once_per_call(tfp, case, mode):
    """The generated chain's one pass: log_prob (the inverse, then its log-det), a
    forward then its log-det, and a log-det asked alone each run every layer's body
    once, eagerly and traced; the values and the gradients equal a plain tfb.Chain's of
    the same layers, which walks them one by one (fresh inputs: no cache between them)."""
    import tensorflow as tf

    spec, params = ONE_PASS[case]
    params = params or fb.init_params(spec, 3, init="random")
    flow = fb.to_tfp(spec, params, dtype="float64")
    plain = tfp.bijectors.Chain(list(flow.bijectors))
    layers = fb.module_for(spec, "tfp").layers_of(flow)
    calls = []

    def counting(body, name):
        def counted(*args):
            calls.append(name)
            return body(*args)

        return counted

    for layer in layers:
        for name in ("_forward_with_log_det", "_inverse_with_log_det"):
            object.__setattr__(layer, name, counting(getattr(layer, name), name))
    rng = np.random.default_rng(5)
    shape = (6, *spec.event_shape[1:], spec.event_shape[0]) if len(spec.event_shape) == 3 else (
        6, *spec.event_shape)  # channels last, build_flow's default  # fmt: skip
    kwargs, ndims = {}, len(spec.event_shape)
    if spec.context_dim:
        context = tf.constant(rng.standard_normal((6, spec.context_dim)))
        kwargs = {"conditional_input": context}
    out_shape = tuple(flow.forward(tf.zeros(shape, tf.float64), **kwargs).shape)
    calls.clear()
    base = tfp.distributions.Independent(tfp.distributions.Normal(tf.zeros(shape[1:], tf.float64), 1.0),
                                         reinterpreted_batch_ndims=ndims)  # fmt: skip
    dists = [tfp.distributions.TransformedDistribution(base, f) for f in (flow, plain)]

    def run(fn, *args):
        return tf.function(fn)(*args) if mode == "graph" else fn(*args)

    def routed(f):  # a plain Chain takes conditional_input per layer, embedded first
        if not kwargs or f is flow:
            return kwargs
        embedding = getattr(flow, "embedding", None)
        features = {"conditional_input": embedding(context) if embedding else context}
        return {la.name: features for la in layers if hasattr(la, "context_dim")}

    ops = {
        "log_prob": ("_inverse_with_log_det", lambda f, d, v: d.log_prob(v, bijector_kwargs=routed(f))),
        "forward": ("_forward_with_log_det", lambda f, d, v: (
            f.forward(v, **routed(f)), f.forward_log_det_jacobian(v, event_ndims=ndims, **routed(f)))),
        "log_det alone": ("_inverse_with_log_det", lambda f, d, v: f.inverse_log_det_jacobian(
            v, event_ndims=ndims, **routed(f))),
    }  # fmt: skip
    for op, (body, fn) in ops.items():
        v = tf.constant(rng.standard_normal(shape if op == "forward" else out_shape))
        calls.clear()
        ours = run(lambda v, fn=fn: fn(flow, dists[0], v), v)
        assert calls == [body] * len(layers), (op, calls)
        theirs = run(lambda v, fn=fn: fn(plain, dists[1], v), tf.identity(v))
        for a, b in zip(tf.nest.flatten(ours), tf.nest.flatten(theirs), strict=True):
            np.testing.assert_allclose(np.broadcast_to(a.numpy(), b.shape), b.numpy(), rtol=1e-10, atol=1e-10)

    def grads(f, d, v):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(d.log_prob(v, bijector_kwargs=routed(f)))
        return tape.gradient(loss, flow.trainable_variables)

    v = tf.constant(rng.standard_normal(out_shape))
    ours = run(lambda v: grads(flow, dists[0], v), v)
    theirs = run(lambda v: grads(plain, dists[1], v), tf.identity(v))
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-10)
    # over more event dims than the flow's, the extra ones are summed, as a Chain does
    wide = tf.constant(rng.standard_normal((2, *shape)))
    if not spec.context_dim:
        a = run(lambda v: flow.forward_log_det_jacobian(v, event_ndims=ndims + 1), wide)
        b = run(lambda v: plain.forward_log_det_jacobian(v, event_ndims=ndims + 1), tf.identity(wide))
        assert a.shape == (2,)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10)


def test_tfp_flows_with_other_weights_never_share_cached_results():
    """TFP shares caches between bijectors that compare equal: two flows of one spec
    with other weights must not."""
    tf = pytest.importorskip("tensorflow")
    spec = fb.realnvp(4, hidden=(8,))
    pa, pb = fb.init_params(spec, 0, init="random"), fb.init_params(spec, 1, init="random")
    a, b = fb.to_tfp(spec, pa, dtype="float64"), fb.to_tfp(spec, pb, dtype="float64")
    assert a != b and a.bijectors[0] != b.bijectors[0] and a == a
    x = tf.constant(np.random.default_rng(0).standard_normal((5, 4)))
    want = fb.to_numpy(spec, pb).forward(x.numpy())

    @tf.function
    def both(x):
        return a.forward(x), b.forward(x)

    for ya, yb in [(a.forward(x), b.forward(x)), both(x)]:
        np.testing.assert_allclose(yb.numpy(), want, rtol=1e-12)
        assert np.max(np.abs(ya.numpy() - yb.numpy())) > 1e-3
    tfd = pytest.importorskip("tensorflow_probability").distributions
    base = tfd.MultivariateNormalDiag(loc=tf.zeros(4, tf.float64))
    lp_a = tfd.TransformedDistribution(base, a).log_prob(x)
    lp_b = tfd.TransformedDistribution(base, b).log_prob(x)
    ref = fb.to_numpy(spec, pb)
    z = ref.inverse(x.numpy())
    want_lp = -0.5 * np.sum(z**2, -1) - 2 * np.log(2 * np.pi) + ref.inverse_log_det_jacobian(x.numpy())
    np.testing.assert_allclose(lp_b.numpy(), want_lp, rtol=1e-12)
    assert np.max(np.abs(lp_a.numpy() - lp_b.numpy())) > 1e-3


def test_tfp_takes_a_single_event_and_any_batch_rank():
    tf = pytest.importorskip("tensorflow")
    tfd = pytest.importorskip("tensorflow_probability").distributions
    params = fb.init_params(D7, 0, init="random")
    flow, ref = fb.to_tfp(D7, params, dtype="float64"), fb.to_numpy(D7, params)
    x = np.random.default_rng(1).standard_normal((2, 3, 7))
    for xs in (x[0, 0], x):
        np.testing.assert_allclose(flow.forward(xs).numpy(), ref.forward(xs), rtol=1e-12)
        ld = flow.forward_log_det_jacobian(xs, event_ndims=1).numpy()
        assert ld.shape == xs.shape[:-1]
        np.testing.assert_allclose(ld, ref.forward_log_det_jacobian(xs), rtol=1e-12)
        np.testing.assert_allclose(flow.inverse(tf.constant(xs)).numpy(), ref.inverse(xs),
                                   rtol=1e-12)  # fmt: skip
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc=tf.zeros(7, tf.float64)), flow)
    one = dist.sample(seed=1)
    assert one.shape == (7,) and dist.log_prob(one).shape == ()
    assert np.isfinite(dist.log_prob(x[0, 0]).numpy())


def test_clamp_gradient_is_straight_through():
    """The clamp's gradient is 1 inside and outside the bounds, in Pyro and in TFP
    (Pyro's ``clamp_preserve_gradients``)."""
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    spec = fb.FlowSpec(event_shape=(2,), layers=[fb.AffineCoupling(
        conditioner=fb.Conditioner(hidden=()), scale=fb.ClampScale(low=-1.0, high=1.0))])  # fmt: skip
    params = {"layers.0.conditioner.0.kernel": np.array([[0.0, 1.0]]),
              "layers.0.conditioner.0.bias": np.array([0.0, 0.0])}
    flow = fb.to_pyro(spec, params, dtype="float64")
    x = torch.tensor([[0.5, 0.0], [4.0, 0.0]], dtype=torch.float64)  # inside, outside the clamp
    flow.log_abs_det_jacobian(x, flow(x)).sum().backward()
    kernel = flow.parts[0].kernels[0]
    assert kernel.grad[0, 1].item() == pytest.approx(4.5)  # d sum(l)/dw = sum(x_a): 1 everywhere
    bij = fb.to_tfp(spec, params, dtype="float64")
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(bij.forward_log_det_jacobian(x.numpy(), event_ndims=1))
    grad = tape.gradient(total, bij.bijectors[0].kernels[0])
    assert grad.numpy()[0, 1] == pytest.approx(4.5)
