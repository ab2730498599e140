"""Conditional flows q(x | c): the spec field, the context checks at the door, and each
framework's conditional API (Pyro's ConditionalTransformModule and
ConditionalTransformedDistribution, TFP's conditional_input and bijector_kwargs)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import flowbridge as fb

from .cases import CASES, EXAMPLES

CASE = "realnvp_conditional_d5_c3"
LOG_2PI = float(np.log(2 * np.pi))


def _setup(case: str = CASE):
    spec = CASES[case]()
    params = fb.init_params(spec, 0, init="random")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, spec.dim))
    c = rng.standard_normal((6, spec.context_dim))
    return spec, params, fb.to_numpy(spec, params), x, c


def _ref_log_prob(ref, x, c):
    z, ildj = ref.inverse_with_log_det(x, c)
    return -0.5 * np.sum(z**2, -1) - 0.5 * z.shape[-1] * LOG_2PI + ildj


# ------------------------------------------------------------------ spec
def test_an_unconditional_spec_keeps_its_hash_and_its_file():
    spec = fb.realnvp(4, hidden=(8,))
    assert "context_dim" not in spec.to_dict() and "context_dim" not in spec.to_yaml()
    assert fb.FlowSpec.from_dict({**spec.to_dict(), "context_dim": 0}).hash == spec.hash
    # the hash this spec had before context_dim existed (the committed example's header)
    header = (EXAMPLES.parent / "generated" / "nice_d2_numpy.py").read_text().splitlines()[1]
    assert header == f"# Spec sha256:{fb.load_spec(EXAMPLES / 'nice_d2.yaml').hash}"


def test_context_dim_is_part_of_the_spec():
    spec = fb.realnvp(4, hidden=(8,), context_dim=2)
    assert spec.to_dict()["context_dim"] == 2
    assert fb.FlowSpec.from_yaml(spec.to_yaml()) == spec
    assert spec.hash != fb.realnvp(4, hidden=(8,)).hash
    first = fb.param_shapes(spec)["layers.0.conditioner.0.kernel"]
    assert first == (2 + 2, 8)  # rows: [x_a | context]
    assert fb.param_count(spec) == sum(int(np.prod(s)) for s in fb.param_shapes(spec).values())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: fb.realnvp(4, context_dim=-1), "context_dim: expected a non-negative integer"),
        (lambda: fb.nice(4, context_dim=1.5), "context_dim: expected a non-negative integer"),
        (lambda: fb.FlowSpec.from_dict({"event_shape": [4], "context_dim": "3",
                                        "layers": [{"type": "scaling"}]}), "context_dim"),
        (lambda: fb.FlowSpec.from_dict({"event_shape": [4], "context_dim": 2**21,
                                        "layers": [{"type": "scaling"}]}),
         "context_dim: expected at most 1048576"),
    ],
)  # fmt: skip
def test_bad_context_dims_are_refused_by_name(make, message):
    with pytest.raises(fb.SpecError, match=message):
        make()


def test_reference_reads_the_context():
    spec, _, ref, x, c = _setup()
    y1, y2 = ref.forward(x, c), ref.forward(x, c + 1.0)
    assert np.max(np.abs(y1 - y2)) > 1e-2  # the context moves the output
    np.testing.assert_allclose(ref.inverse(y1, c), x, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ Pyro
@pytest.fixture
def torch():
    pytest.importorskip("pyro")
    return pytest.importorskip("torch")


def test_pyro_conditional_distribution_matches_the_reference(torch):
    import pyro.distributions as dist

    spec, params, ref, x, c = _setup()
    flow = fb.to_pyro(spec, params, dtype=torch.float64)
    assert isinstance(flow, dist.conditional.ConditionalTransformModule)
    base = dist.Normal(torch.zeros(spec.dim, dtype=torch.float64), 1.0).to_event(1)
    cond = dist.ConditionalTransformedDistribution(base, [flow])
    log_prob = cond.condition(torch.tensor(c)).log_prob(torch.tensor(x))
    np.testing.assert_allclose(log_prob.detach().numpy(), _ref_log_prob(ref, x, c), rtol=1e-12)
    one = cond.condition(torch.tensor(c[0]))  # one context for a batch of samples
    sample = one.sample((9,))
    assert sample.shape == (9, spec.dim)
    assert isinstance(flow.condition(torch.tensor(c)), dist.torch_transform.ComposeTransformModule)


def test_pyro_gradients_reach_every_weight_and_the_context(torch):
    import pyro
    import pyro.distributions as dist

    spec, params, _, x, c = _setup()
    flow = fb.to_pyro(spec, params, dtype=torch.float64)
    pyro.clear_param_store()
    pyro.module("flow", flow)
    assert any("kernels" in name for name in pyro.get_param_store())
    context = torch.tensor(c, requires_grad=True)
    base = dist.Normal(torch.zeros(spec.dim, dtype=torch.float64), 1.0).to_event(1)
    dist.ConditionalTransformedDistribution(base, [flow]).condition(context).log_prob(
        torch.tensor(x)).sum().backward()  # fmt: skip
    assert all(p.grad is not None for p in flow.parameters())
    assert context.grad is not None and context.grad.abs().sum() > 0
    assert set(flow.state_dict()) == {k for k in flow.state_dict() if k.split(".")[0].isdigit()}
    assert fb.params_from_pyro(flow).keys() == params.keys()


@pytest.mark.parametrize(
    "context, error, message",
    [
        (lambda t: t.zeros(6, 2, dtype=t.float64), ValueError, r"expected shape \(\*batch, 3\)"),
        (lambda t: t.zeros(4, 3, dtype=t.float64), ValueError, "does not broadcast"),
        (lambda t: t.zeros(6, 3, dtype=t.float32), TypeError, "expected dtype torch.float64"),
        (lambda t: t.zeros(6, 3, dtype=t.long), TypeError, "real floating-point"),
        (lambda t: np.zeros((6, 3)), TypeError, "expected a torch.Tensor"),
    ],
)
def test_pyro_refuses_a_context_that_does_not_fit(torch, context, error, message):
    spec, params, _, x, _ = _setup()
    flow = fb.to_pyro(spec, params, dtype=torch.float64)
    with pytest.raises(error, match=message):
        flow.condition(context(torch))(torch.tensor(x))


@pytest.mark.parametrize("case", [CASE, "realnvp_conditional_embedded_d4_c3"])
def test_pyro_conditional_flow_without_a_context_says_to_condition_it(torch, case):
    """A conditional flow or layer called like a plain transform (no context): a
    TypeError that says to call .condition(c) first, with the context's shape, not
    torch's "missing the required forward function"; .inv still conditions."""
    import pyro.distributions as dist

    spec, params, _, x, c = _setup(case)
    flow = fb.to_pyro(spec, params, dtype=torch.float64)
    xt = torch.tensor(x)
    name = type(flow).__name__
    coupling = next(layer for layer in (flow.layers if case != CASE else flow)
                    if hasattr(layer, "context_dim"))  # fmt: skip
    calls = {
        "flow(x)": (name, lambda: flow(xt)),
        "flow.inv(y)": (name, lambda: flow.inv(xt)),
        "flow.log_abs_det_jacobian(x, y)": (name, lambda: flow.log_abs_det_jacobian(xt, xt)),
        "layer(x)": (type(coupling).__name__, lambda: coupling(xt)),
        "layer.inv(y)": (type(coupling).__name__, lambda: coupling.inv(xt)),
        "layer.log_abs_det_jacobian(x, y)": (
            type(coupling).__name__, lambda: coupling.log_abs_det_jacobian(xt, xt)),
    }  # fmt: skip
    for call, (owner, run) in calls.items():
        t = call.split("(")[0].split(".")[0]
        width = 3 if t == "flow" else coupling.context_dim  # an embedding's input is the context
        message = (rf"{owner}: {re.escape(call)} needs a context: call {t}.condition\(c\) first, "
                   rf"with c of shape \(\*batch, {width}\)")  # fmt: skip
        with pytest.raises(TypeError, match=message):
            run()
    base = dist.Normal(torch.zeros(spec.dim, dtype=torch.float64), 1.0).to_event(1)
    q = dist.ConditionalTransformedDistribution(base, [flow.inv]).condition(torch.tensor(c))
    assert flow.inv.inv is flow and torch.isfinite(q.log_prob(xt)).all()


# ------------------------------------------------------------------ TFP
@pytest.fixture
def tfp():
    pytest.importorskip("tensorflow")
    return pytest.importorskip("tensorflow_probability")


@pytest.mark.parametrize("mode", ["eager", "tf_function", "xla"])
def test_tfp_transformed_distribution_routes_conditional_input(tfp, mode):
    import tensorflow as tf

    spec, params, ref, x, c = _setup()
    bijector = fb.to_tfp(spec, params, dtype="float64")
    base = tfp.distributions.MultivariateNormalDiag(tf.zeros(spec.dim, tf.float64))
    td = tfp.distributions.TransformedDistribution(base, bijector)

    def log_prob(x, c):
        return td.log_prob(x, bijector_kwargs={"conditional_input": c})

    if mode != "eager":
        log_prob = tf.function(log_prob, jit_compile=mode == "xla")
    got = log_prob(tf.constant(x), tf.constant(c)).numpy()
    np.testing.assert_allclose(got, _ref_log_prob(ref, x, c), rtol=1e-12)
    sample = td.sample(9, seed=(1, 2), bijector_kwargs={"conditional_input": c[0]})
    assert sample.shape == (9, spec.dim)


def test_tfp_gradients_reach_every_variable(tfp):
    import tensorflow as tf

    spec, params, _, x, c = _setup()
    bijector = fb.to_tfp(spec, params, dtype="float64")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(bijector.forward_log_det_jacobian(x, event_ndims=1,
                                                               conditional_input=c))  # fmt: skip
        loss += tf.reduce_sum(bijector.forward(x, conditional_input=c))
    grads = tape.gradient(loss, bijector.trainable_variables)
    assert len(grads) == len(params) and all(g is not None for g in grads)
    assert fb.params_from_tfp(bijector).keys() == params.keys()


@pytest.mark.parametrize(
    "context, error, message",
    [
        (np.zeros((6, 2)), ValueError, r"expected shape \(\*batch, 3\)"),
        (np.zeros((4, 3)), ValueError, "does not broadcast"),
        (np.zeros((6, 3), np.int32), TypeError, "real floating-point"),
        (None, TypeError, "pass conditional_input="),
    ],
)
def test_tfp_refuses_a_context_that_does_not_fit(tfp, context, error, message):
    spec, params, _, x, _ = _setup()
    bijector = fb.to_tfp(spec, params, dtype="float64")
    kwargs = {} if context is None else {"conditional_input": context}
    with pytest.raises(error, match=message):
        bijector.forward(x, **kwargs)


# ------------------------------------------------------------------ native import
def _native_conditional(torch, contexts=(3, 3, 3), hypernet=None):
    from pyro.distributions.conditional import ConditionalComposeTransformModule
    from pyro.distributions.transforms import ConditionalAffineCoupling, Permute
    from pyro.nn import ConditionalDenseNN

    torch.manual_seed(0)
    parts = []
    for i, context in enumerate(contexts):
        net = hypernet or ConditionalDenseNN(2, context, [16, 16], param_dims=[3, 3])
        for p in net.parameters():
            p.data.normal_(0, 0.3)
        parts.append(ConditionalAffineCoupling(2, net, log_scale_min_clip=-0.5))
        if i < len(contexts) - 1:
            parts.append(Permute(torch.randperm(5)))
    return ConditionalComposeTransformModule(parts).double()


def test_native_pyro_conditional_flow_converts_exactly(torch):
    native = _native_conditional(torch)
    spec, params = fb.from_pyro_native(native)
    assert spec.context_dim == 3 and [la.type for la in spec.layers].count("permutation") == 2
    assert all(la.scale.low == -0.5 for la in spec.layers if la.type == "affine_coupling")
    rng = np.random.default_rng(3)
    x, c = rng.standard_normal((7, 5)), rng.standard_normal((7, 3))
    at = native.condition(torch.tensor(c))
    y = at(torch.tensor(x))
    ref_y, ref_ld = fb.to_numpy(spec, params).forward_with_log_det(x, c)
    np.testing.assert_allclose(y.detach().numpy(), ref_y, rtol=1e-12, atol=1e-12)
    log_det = at.log_abs_det_jacobian(torch.tensor(x), y).detach().numpy()
    np.testing.assert_allclose(log_det, ref_ld, rtol=1e-12, atol=1e-12)
    ours = fb.to_pyro(spec, params, dtype=torch.float64).condition(torch.tensor(c))
    np.testing.assert_allclose(ours(torch.tensor(x)).detach().numpy(), ref_y, rtol=1e-12)


def test_native_pyro_conditional_refusals_name_the_piece(torch):
    from pyro.distributions.transforms import AffineCoupling
    from pyro.nn import DenseNN

    with pytest.raises(fb.NativeError, match="contexts of sizes \\[2, 3\\]"):
        fb.from_pyro_native(_native_conditional(torch, contexts=(3, 2)))
    mixed = [*_native_conditional(torch).transforms,
             AffineCoupling(2, DenseNN(2, [8], param_dims=[3, 3]))]  # fmt: skip
    with pytest.raises(fb.NativeError, match=r"parts\[5\] \(AffineCoupling\): an unconditional"):
        fb.from_pyro_native(mixed)


def test_pyro_conditional_flow_compiles_without_graph_breaks_and_moves(torch):
    import torch._dynamo as dynamo

    spec, params, ref, x, c = _setup("nice_conditional_d4_c2")
    flow = fb.to_pyro(spec, params)

    def forward(x, c):
        at = flow.condition(c)
        y = at(x)
        return y, at.log_abs_det_jacobian(x, y)

    xt, ct = torch.tensor(x, dtype=torch.float32), torch.tensor(c, dtype=torch.float32)
    explained = dynamo.explain(forward)(xt, ct)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    y, ld = torch.compile(forward)(xt, ct)
    y0, ld0 = forward(xt.clone(), ct.clone())
    torch.testing.assert_close(y, y0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ld, ld0, rtol=1e-6, atol=1e-6)
    flow64 = flow.to(torch.float64)  # .to() moves every weight; the result is the reference's
    y64 = flow64.condition(torch.tensor(c))(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(y64, ref.forward(x, c), rtol=1e-6, atol=1e-6)


def test_tfp_context_of_an_input_of_unknown_rank(tfp):
    import tensorflow as tf

    spec, params, ref, _, _ = _setup()
    bijector = fb.to_tfp(spec, params, dtype="float64")
    rng = np.random.default_rng(4)
    x, c = rng.standard_normal((2, 5, spec.dim)), rng.standard_normal((2, 5, spec.context_dim))
    spec_any = tf.TensorSpec(None, tf.float64)
    forward = tf.function(lambda x, c: bijector.forward(x, conditional_input=c),
                          input_signature=[spec_any, spec_any])  # fmt: skip
    got = forward(tf.constant(x), tf.constant(c)).numpy()
    want = ref.forward(x.reshape(-1, spec.dim), c.reshape(-1, spec.context_dim))
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-12, atol=1e-12)


def test_native_pyro_conditional_coupling_with_another_hypernet_is_refused(torch):
    from pyro.distributions.transforms import ConditionalAffineCoupling
    from pyro.nn import DenseNN

    odd = ConditionalAffineCoupling(2, DenseNN(2, [8], param_dims=[3, 3]))
    with pytest.raises(fb.NativeError, match=r"parts\[0\] \(ConditionalAffineCoupling\)\.nn: "
                       "a DenseNN hypernet cannot be converted"):  # fmt: skip
        fb.from_pyro_native([odd], dim=5)
    with pytest.raises(fb.NativeError, match="DenseNN hypernet cannot be converted"):
        fb.from_pyro_native([odd])


def test_tfp_log_det_memo_is_keyed_on_the_context_too(tfp):
    """Inside tf.function a layer reuses the log-det traced with its transform only for
    the very input and the very context: another context at the same x is recomputed."""
    import tensorflow as tf

    spec, params, ref, x, c = _setup()
    bijector = fb.to_tfp(spec, params, dtype="float64")
    other = c + 1.0

    @tf.function
    def log_dets(x, c1, c2):
        bijector.forward(x, conditional_input=c1)
        same = bijector.forward_log_det_jacobian(x, event_ndims=1, conditional_input=c1)
        moved = bijector.forward_log_det_jacobian(x, event_ndims=1, conditional_input=c2)
        return same, moved

    same, moved = log_dets(tf.constant(x), tf.constant(c), tf.constant(other))
    np.testing.assert_allclose(same.numpy(), ref.forward_with_log_det(x, c)[1], rtol=1e-12)
    np.testing.assert_allclose(moved.numpy(), ref.forward_with_log_det(x, other)[1], rtol=1e-12)


# ------------------------------------------------------------------ context embedding
EMBEDDED = "realnvp_conditional_embedded_d4_c3"


def _embedding_by_hand(params, c):
    """The embedding 3 -> 6 -> 5 (tanh, linear output) written out in NumPy here."""
    h = np.tanh(c @ params["context_embedding.0.kernel"] + params["context_embedding.0.bias"])
    return h @ params["context_embedding.1.kernel"] + params["context_embedding.1.bias"]


def test_context_embedding_is_part_of_the_spec():
    spec = CASES[EMBEDDED]()
    plain = fb.realnvp(4, hidden=(8,), context_dim=3, permutation="reverse")
    assert "context_embedding" not in plain.to_dict()  # absent: the hash is unchanged
    assert spec.to_dict()["context_embedding"]["features"] == 5 and spec.hash != plain.hash
    assert fb.FlowSpec.from_yaml(spec.to_yaml()) == spec
    shapes = fb.param_shapes(spec)
    assert list(shapes)[:4] == ["context_embedding.0.kernel", "context_embedding.0.bias",
                                "context_embedding.1.kernel", "context_embedding.1.bias"]  # fmt: skip
    assert shapes["context_embedding.1.kernel"] == (6, 5)
    assert shapes["layers.0.conditioner.0.kernel"] == (2 + 5, 8)  # rows: [x_a | features]
    assert fb.param_count(spec) == sum(int(np.prod(s)) for s in shapes.values())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: fb.realnvp(4, context_embedding={"features": 2}),
         "context_embedding: expected context_dim > 0"),
        (lambda: fb.realnvp(4, context_dim=2, context_embedding={"features": 0}),
         "context_embedding.features: expected a positive integer"),
        (lambda: fb.nice(4, context_dim=2, context_embedding={"hidden": [4]}),
         "context_embedding.features: required field is missing"),
        (lambda: fb.nice(4, context_dim=2, context_embedding=8),
         "context_embedding: expected a ContextEmbedding, its dict or None"),
        (lambda: fb.FlowSpec.from_dict({"event_shape": [4], "context_dim": 2,
                                        "context_embedding": {"features": 3, "hidden": [2**17]},
                                        "layers": [{"type": "scaling"}]}),
         r"context_embedding.hidden\[0\]: expected at most 65536 units"),
        (lambda: fb.FlowSpec.from_dict({"event_shape": [4], "context_dim": 2,
                                        "context_embedding": {"features": 3, "activation": "x"},
                                        "layers": [{"type": "scaling"}]}),
         "context_embedding.activation: expected one of"),
    ],
)  # fmt: skip
def test_bad_context_embeddings_are_refused_by_name(make, message):
    with pytest.raises(fb.SpecError, match=message):
        make()


def test_the_embedding_is_applied_once_before_the_couplings():
    """The embedded flow equals the flow without an embedding whose context is the
    features computed by hand: the couplings read [x_a | e(c)], e as the spec says."""
    spec, params, ref, x, c = _setup(EMBEDDED)
    plain = fb.realnvp(4, hidden=(8,), context_dim=5, permutation="reverse")
    layer_params = {k: v for k, v in params.items() if k.startswith("layers.")}
    features = _embedding_by_hand(params, c)
    want = fb.to_numpy(plain, layer_params).forward_with_log_det(x, features)
    got = ref.forward_with_log_det(x, c)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-13)
    one = ref.forward(x, c[0])  # one context for the batch broadcasts after the embedding
    np.testing.assert_allclose(one, ref.forward(x, np.broadcast_to(c[0], c.shape)), rtol=1e-14)
    with pytest.raises(ValueError, match=r"expected shape \(\*batch, 3\)"):
        ref.forward(x, features)  # the features are not a context


def test_pyro_embedded_flow(torch):
    import pyro
    import pyro.distributions as dist
    import torch._dynamo as dynamo

    spec, params, ref, x, c = _setup(EMBEDDED)
    flow = fb.to_pyro(spec, params, dtype=torch.float64)
    assert isinstance(flow, dist.conditional.ConditionalTransformModule)
    assert {k.split(".")[0] for k in flow.state_dict()} == {"embedding", "layers"}
    pyro.clear_param_store()
    pyro.module("flow", flow)
    assert any("embedding.kernels" in name for name in pyro.get_param_store())
    context = torch.tensor(c, requires_grad=True)
    base = dist.Normal(torch.zeros(spec.dim, dtype=torch.float64), 1.0).to_event(1)
    log_prob = dist.ConditionalTransformedDistribution(base, [flow]).condition(context).log_prob(
        torch.tensor(x))  # fmt: skip
    np.testing.assert_allclose(log_prob.detach().numpy(), _ref_log_prob(ref, x, c), rtol=1e-12)
    log_prob.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.embedding.parameters())
    assert context.grad is not None and context.grad.abs().sum() > 0
    assert fb.params_from_pyro(flow).keys() == params.keys()
    with pytest.raises(ValueError, match=r"ContextEmbedding: context: expected shape \(\*batch, 3\)"):
        flow.condition(torch.zeros(6, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="expected dtype torch.float64"):
        flow.condition(torch.zeros(6, 3))

    flow32 = fb.to_pyro(spec, params)

    def forward(x, c):
        at = flow32.condition(c)
        y = at(x)
        return y, at.log_abs_det_jacobian(x, y)

    xt, ct = torch.tensor(x, dtype=torch.float32), torch.tensor(c, dtype=torch.float32)
    explained = dynamo.explain(forward)(xt, ct)
    assert explained.graph_count == 1 and explained.graph_break_count == 0


@pytest.mark.parametrize("mode", ["eager", "tf_function", "xla"])
def test_tfp_embedded_flow(tfp, mode):
    import tensorflow as tf

    spec, params, ref, x, c = _setup(EMBEDDED)
    bijector = fb.to_tfp(spec, params, dtype="float64")
    assert len(bijector.trainable_variables) == len(params)
    assert fb.params_from_tfp(bijector).keys() == params.keys()
    base = tfp.distributions.MultivariateNormalDiag(tf.zeros(spec.dim, tf.float64))
    td = tfp.distributions.TransformedDistribution(base, bijector)
    embedded = []  # embeddings traced or run, one per call of the embedding
    inner = bijector.embedding._embed
    bijector.embedding._embed = lambda v: embedded.append(1) or inner(v)

    def log_prob(x, c):
        return td.log_prob(x, bijector_kwargs={"conditional_input": c})

    if mode != "eager":
        log_prob = tf.function(log_prob, jit_compile=mode == "xla")
    got = log_prob(tf.constant(x), tf.constant(c)).numpy()
    np.testing.assert_allclose(got, _ref_log_prob(ref, x, c), rtol=1e-12)
    if mode != "eager":  # traced once: the inverse and its log-det share the features
        assert len(embedded) == 1
    one = bijector.forward(x, conditional_input=c[0])  # one context (3,) for the batch
    np.testing.assert_allclose(one.numpy(), ref.forward(x, c[0]), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"expected shape \(\*batch, 3\)"):
        bijector.forward(x, conditional_input=np.zeros((6, 5)))
