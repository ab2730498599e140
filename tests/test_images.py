"""Image flows, events (C, H, W): the spec's rules, each image layer's semantics against
an independent statement of it, and each framework's API on image events (Pyro's
channels-first TransformedDistribution, TFP's channels-last default and channels-first
option). Conformance of every image case in every backend and dtype is in
tests/test_conformance.py (the cases are tests/cases.py's IMAGE_CASES)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import spec as S

from .cases import IMAGE_CASES


def _setup(case: str, n: int = 3, seed: int = 0):
    spec = IMAGE_CASES[case]()
    params = fb.init_params(spec, seed, init="random")
    x = np.random.default_rng(seed + 1).standard_normal((n, *spec.event_shape))
    return spec, params, fb.to_numpy(spec, params), x


# ------------------------------------------------------------------ spec
def _coupling(mask, conditioner=None, kind="affine_coupling"):
    layer = {"type": kind, "mask": mask}
    return layer if conditioner is None else {**layer, "conditioner": conditioner}


RESNET = {"kind": "resnet", "blocks": 1, "channels": 4}


@pytest.mark.parametrize(
    "shape, layers, message",
    [
        ([2, 4], [{"type": "scaling"}], r"event_shape: expected a vector event shape \(D,\) or"),
        ([2, 4, 4], [_coupling({"kind": "half"}, RESNET)],
         r"layers\[0\].mask.kind: expected a checkerboard or channel mask"),
        ([2, 4, 4], [_coupling({"kind": "checkerboard"})],
         r"layers\[0\].conditioner: expected a resnet conditioner"),
        ([4], [_coupling({"kind": "channel"}, RESNET)],
         r"layers\[0\].mask.kind: expected a half, split, parity or explicit mask"),
        ([4], [_coupling({"kind": "half"}, RESNET)],
         r"layers\[0\].conditioner: expected an MLP conditioner"),
        ([2, 4, 4], [{"type": "permutation"}], r"layers\[0\]: expected vector \(D,\) events"),
        ([4], [{"type": "squeeze"}], r"layers\[0\]: expected image \(C, H, W\) events"),
        ([2, 3, 4], [{"type": "squeeze"}], "expected an even height and width"),
        ([1, 4, 4], [_coupling({"kind": "channel"}, RESNET)], "at least 2 channels"),
        ([2, 4, 4], [_coupling({"kind": "checkerboard"}, {**RESNET, "kernel_size": 2})],
         r"layers\[0\].conditioner.kernel_size: expected an odd kernel size"),
        ([2, 4, 4], [_coupling({"kind": "checkerboard"}, {**RESNET, "channels": 2**17})],
         r"layers\[0\].conditioner.channels: expected at most 65536 channels"),
        ([2, 4, 4], [_coupling({"kind": "checkerboard"}, {**RESNET, "depth": 3})],
         r"layers\[0\].conditioner.depth: unknown field"),
        # a squeeze changes the shape the next layer is checked against: (8, 2, 2)
        ([2, 4, 4], [{"type": "squeeze"}, _coupling({"kind": "half"}, RESNET)],
         r"layers\[1\].mask.kind: .* for events of shape \(8, 2, 2\)"),
        ([2, 4, 4], [{"type": "squeeze"}, {"type": "squeeze"}, {"type": "squeeze"}],
         r"layers\[2\]: expected an even height and width .* \(32, 1, 1\)"),
    ],
)  # fmt: skip
def test_image_specs_that_do_not_fit_are_refused_by_name(shape, layers, message):
    with pytest.raises(fb.SpecError, match=message):
        fb.FlowSpec.from_dict({"event_shape": shape, "layers": layers})


def test_conditional_image_flows_are_refused_by_name():
    with pytest.raises(fb.SpecError, match="context_dim: expected 0 for image events"):
        fb.FlowSpec.from_dict({"event_shape": [1, 2, 2], "context_dim": 2,
                               "layers": [{"type": "scaling"}]})  # fmt: skip


def test_image_spec_round_trips_and_counts_its_weights():
    spec = IMAGE_CASES["image_scale_block_c1_4x4"]()
    assert fb.FlowSpec.from_yaml(spec.to_yaml()) == spec
    assert fb.FlowSpec.from_json(spec.to_json()).hash == spec.hash
    assert spec.output_shape == (4, 2, 2) and spec.dim == 16
    assert S.layer_shapes(spec)[4] == (4, 2, 2)  # the first coupling after the squeeze
    shapes = fb.param_shapes(spec)
    assert shapes["layers.0.conditioner.0.kernel"] == (3, 3, 1, 6)  # (k, k, in, out)
    assert shapes["layers.0.conditioner.3.kernel"] == (3, 3, 6, 2)  # [shift | s] x 1 channel
    assert shapes["layers.4.conditioner.0.kernel"] == (3, 3, 2, 6)  # half of 4 channels
    assert fb.param_count(spec) == sum(int(np.prod(s)) for s in shapes.values())
    # an MLP conditioner is written without a kind, as before images existed
    assert "kind" not in fb.realnvp(4).to_dict()["layers"][0]["conditioner"]


# ------------------------------------------------------------------ semantics
def test_squeeze_order_is_the_stated_one_and_torchs_pixel_unshuffle():
    spec, _, ref, x = _setup("image_squeeze_c1_4x6")
    y = ref.forward(x)
    c, h, w = spec.event_shape
    for i in range(2):
        for j in range(2):
            np.testing.assert_array_equal(y[:, 4 * 0 + 2 * i + j], x[:, 0, i::2, j::2])
    assert y.shape == (3, 4, 2, 3)
    np.testing.assert_array_equal(ref.inverse(y), x)
    torch = pytest.importorskip("torch")
    unshuffled = torch.nn.functional.pixel_unshuffle(torch.tensor(x), 2).numpy()
    np.testing.assert_array_equal(y, unshuffled)


def test_checkerboard_passes_its_squares_and_transforms_the_others():
    spec, params, ref, x = _setup("image_checkerboard_affine_c2_4x4")
    y = ref.forward(x)
    h, w = np.indices(spec.event_shape[1:])
    passed = (h + w) % 2 == 0  # parity even
    np.testing.assert_array_equal(y[:, :, passed], x[:, :, passed])  # exactly unchanged
    assert np.min(np.abs(y[:, :, ~passed] - x[:, :, ~passed])) > 0
    # the transformed entries depend on the passed ones, never on each other
    moved = x.copy()
    moved[:, :, ~passed] += 1.0
    shift_only = ref.forward(moved) - y  # = scale * 1 at transformed entries
    assert np.all(shift_only[:, :, ~passed] > 0)
    nudged = x.copy()
    nudged[:, 0, 0, 0] += 0.5  # (0, 0) is a passed square
    assert not np.allclose(ref.forward(nudged)[:, :, ~passed], y[:, :, ~passed])
    # parity odd: the other squares pass (a 4 x 6 image, so rows and columns both count)
    spec, _, ref, x = _setup("image_checkerboard_odd_additive_c1_4x6_k1_tanh")
    y = ref.forward(x)
    h, w = np.indices(spec.event_shape[1:])
    odd = (h + w) % 2 == 1
    np.testing.assert_array_equal(y[:, :, odd], x[:, :, odd])
    assert np.min(np.abs(y[:, :, ~odd] - x[:, :, ~odd])) > 0


def test_channel_mask_passes_its_channels():
    spec, _, ref, x = _setup("image_channel_last_sigmoid_c4_2x2_leaky")
    y = ref.forward(x)
    np.testing.assert_array_equal(y[:, 2:], x[:, 2:])  # part "last": the last 2 of 4 pass
    assert np.min(np.abs(y[:, :2] - x[:, :2])) > 0


def test_reference_convolution_against_torch():
    torch = pytest.importorskip("torch")
    spec = IMAGE_CASES["image_channel_first_soft_clamp_c3_4x4_k5"]()
    module = fb.module_for(spec, "numpy")
    rng = np.random.default_rng(2)
    x, kernel = rng.standard_normal((2, 5, 3, 4, 4)), rng.standard_normal((5, 5, 3, 7))
    bias = rng.standard_normal(7)
    got = module._conv2d(x, kernel, bias)  # (*batch, C, H, W) with a 2-D batch
    want = torch.nn.functional.conv2d(torch.tensor(x.reshape(10, 3, 4, 4)), torch.tensor(
        kernel.transpose(3, 2, 0, 1)), torch.tensor(bias), padding="same")  # fmt: skip
    assert got.shape == (2, 5, 7, 4, 4)
    np.testing.assert_allclose(got.reshape(10, 7, 4, 4), want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_image_flows_start_as_the_identity(case):
    """The generated modules' own initialisation (PARAM_INIT): each coupling's last
    convolution at zero, so the flow is the identity up to its squeezes (but for Glow's
    sigmoid scale map, which starts at sigmoid(offset)); a spline's identity is exact up to
    rounding."""
    spec = IMAGE_CASES[case]()
    if any(getattr(getattr(la, "scale", None), "kind", "") == "sigmoid" for la in spec.layers):
        pytest.skip("a sigmoid scale map does not start at 1")
    if spec.layers[0].type == "logit":
        pytest.skip("the logit preprocessing is no identity")
    if any(la.type == "batch_norm" for la in spec.layers):
        pytest.skip("a batch norm divides by sqrt(var + eps) (and trains on batch statistics)")
    flow = fb.module_for(spec, "numpy").build_flow()
    x = np.random.default_rng(3).standard_normal((2, *spec.event_shape))
    y, log_det = flow.forward_with_log_det(x)
    squeezes = [la for la in spec.layers if la.type == "squeeze"]
    want = x
    for _ in squeezes:
        want = fb.module_for(IMAGE_CASES["image_squeeze_c1_4x6"](), "numpy")._squeeze2x2(want)
    if any(la.type == "spline_coupling" for la in spec.layers):  # the identity up to rounding:
        np.testing.assert_allclose(y, want, rtol=0, atol=1e-14)  # y_k + w * (x - x_k) / w
        np.testing.assert_allclose(log_det, 0.0, rtol=0, atol=1e-13)
        return
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(log_det, 0.0)


# ------------------------------------------------------------------ Pyro
def test_pyro_image_flow(torch_or_skip):
    import pyro.distributions as dist

    torch = torch_or_skip
    spec, params, ref, x = _setup("image_scale_block_c1_4x4")
    flow = fb.to_pyro(spec, params, dtype=torch.float64)
    base = dist.Normal(torch.zeros(spec.event_shape, dtype=torch.float64), 1.0).to_event(3)
    q = dist.TransformedDistribution(base, [flow])
    assert q.event_shape == spec.output_shape and q.sample((5,)).shape == (5, *spec.output_shape)
    y = ref.forward(x)
    z, ildj = ref.inverse_with_log_det(y)
    want = -0.5 * np.sum(z**2, axis=(1, 2, 3)) - 0.5 * z[0].size * np.log(2 * np.pi) + ildj
    log_prob = q.log_prob(torch.tensor(y))
    np.testing.assert_allclose(log_prob.detach().numpy(), want, rtol=1e-12)
    log_prob.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters()
               if p.dim() == 4)  # fmt: skip  (every convolution kernel)
    # torch's own (out, in, k, k) kernels; the neutral export is (k, k, in, out)
    assert flow.parts[0].kernels[0].shape == (6, 1, 3, 3)
    exported = fb.params_from_pyro(flow)
    assert all(np.array_equal(exported[k], params[k]) for k in params)


@pytest.fixture
def torch_or_skip():
    pytest.importorskip("pyro")
    return pytest.importorskip("torch")


# ------------------------------------------------------------------ TFP
@pytest.fixture
def tf():
    pytest.importorskip("tensorflow_probability")
    return pytest.importorskip("tensorflow")


@pytest.mark.parametrize("mode", ["eager", "tf_function", "xla"])
def test_tfp_image_flow_channels_last_and_first(tf, mode):
    import tensorflow_probability as tfp

    spec, params, ref, x = _setup("image_scale_block_c1_4x4")
    y_ref, ld_ref = ref.forward_with_log_det(x)
    last = fb.to_tfp(spec, params, dtype="float64")
    first = fb.to_tfp(spec, params, dtype="float64", data_format="channels_first")
    to_last = (0, 2, 3, 1)

    def run(v_last, v_first):  # the flows closed over, not arguments (see the README)
        return (last.forward(v_last), last.forward_log_det_jacobian(v_last, event_ndims=3),
                first.forward(v_first), first.forward_log_det_jacobian(v_first, event_ndims=3))

    if mode != "eager":
        run = tf.function(run, jit_compile=mode == "xla")
    y_last, ld_last, y_first, ld_first = run(tf.constant(x.transpose(to_last)), tf.constant(x))
    np.testing.assert_allclose(y_first.numpy(), y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_last.numpy(), y_ref.transpose(to_last), rtol=1e-12, atol=1e-12)
    for ld in (ld_last, ld_first):
        np.testing.assert_allclose(ld.numpy(), ld_ref, rtol=1e-12)
    base = tfp.distributions.Sample(tfp.distributions.Normal(tf.constant(0.0, tf.float64), 1.0),
                                    [4, 4, 1])  # fmt: skip
    q = tfp.distributions.TransformedDistribution(base, last)
    assert tuple(q.event_shape) == (2, 2, 4)
    assert q.sample(2, seed=(1, 2)).shape == (2, 2, 2, 4)
    assert fb.params_from_tfp(last).keys() == params.keys()
    assert len(last.trainable_variables) == len(params)


def test_tfp_refuses_a_layout_it_does_not_know(tf):
    spec = IMAGE_CASES["image_squeeze_c1_4x6"]()
    with pytest.raises(ValueError, match="data_format: expected 'channels_last' or"):
        fb.to_tfp(spec, data_format="NCHW")
    flow = fb.to_tfp(spec)
    with pytest.raises(ValueError, match=r"expected shape \(\*batch, 4, 6, 1\)"):
        flow.forward(np.zeros((2, 1, 4, 6), np.float32))  # channels first into channels last


# ------------------------------------------------------------------ multi-scale
def test_factored_channels_pass_to_the_output_unchanged():
    """After a factor-out, the later layers act on the active channels only: the factored
    ones come out bit-exactly as they went in (moved by later squeezes alone)."""
    spec, _, ref, x = _setup("image_multiscale_c1_8x8")
    scopes = S.layer_scopes(spec)
    # from the first factor-out: it splits 4 active channels; the coupling after it acts on
    # 2; a squeeze moves all 4 (to 16, of which 8 active); the factor-out leaves 4 active
    assert [acted for _, acted in scopes][3:] == [(4, 4, 4), (2, 4, 4), (4, 4, 4), (8, 2, 2),
                                                  (8, 2, 2), (4, 2, 2)]  # fmt: skip
    squeeze = fb.module_for(spec, "numpy")._squeeze2x2
    head = fb.to_numpy(fb.FlowSpec(name="h", event_shape=(1, 8, 8), layers=spec.layers[:4]),
                       {k: v for k, v in fb.init_params(spec, 0, init="random").items()
                        if int(k.split(".")[1]) < 4})  # fmt: skip
    at_factor_out = head.forward(x)  # (4, 4, 4): channels 2, 3 leave here
    y = ref.forward(x)  # (16, 2, 2): those two, squeezed once more, are channels 8 .. 15
    np.testing.assert_array_equal(y[:, 8:], squeeze(at_factor_out)[:, 8:])
    assert not np.allclose(y[:, :8], squeeze(at_factor_out)[:, :8])


def test_factor_out_needs_two_active_channels():
    layers = [{"type": "factor_out"}]
    with pytest.raises(fb.SpecError, match=r"layers\[0\]: expected at least 2 active channels"):
        fb.FlowSpec.from_dict({"event_shape": [1, 4, 4], "layers": layers})
    with pytest.raises(fb.SpecError, match=r"layers\[1\]: expected at least 2 active channels "
                       "to factor half out, got 1"):  # fmt: skip
        fb.FlowSpec.from_dict({"event_shape": [2, 4, 4], "layers": layers * 2})


def test_realnvp_image_preset_has_the_papers_structure():
    spec = fb.realnvp_image((3, 32, 32), num_scales=3, blocks=1, channels=8)
    kinds = [la.mask.kind[:5] if la.type.endswith("coupling") else la.type for la in spec.layers]
    scale = ["check"] * 3 + ["squeeze"] + ["chann"] * 3 + ["factor_out"]
    assert kinds == scale * 2 + ["check"] * 4
    assert [la.mask.parity for la in spec.layers[-4:]] == ["even", "odd", "even", "odd"]
    assert spec.output_shape == (48, 8, 8) and S.layer_shapes(spec)[-1] == (12, 8, 8)
    with pytest.raises(fb.SpecError, match="expected an even height and width"):
        fb.realnvp_image((3, 30, 30), num_scales=3)
    with pytest.raises(fb.SpecError, match=r"event_shape: expected \(C, H, W\)"):
        fb.realnvp_image((4,))
    with pytest.raises(fb.SpecError, match="channels: expected a positive integer"):
        fb.realnvp_image((3, 8, 8), channels=0)


@pytest.mark.parametrize("backend", ["pyro", "tfp"])
def test_cifar10_sized_preset_passes_conformance_at_a_small_batch(backend, dtype):
    """fb.realnvp_image((3, 32, 32)) with its defaults (1.57M weights), two images, every
    figure but the Jacobian (3072 x 3072; the small image cases check it) within the
    tolerances of the vector flows."""
    from flowbridge.backends import BACKENDS
    from flowbridge.check import TOLERANCES, reference, runtime

    if not BACKENDS[backend].available():
        pytest.skip(f"{backend} is not installed")
    spec = fb.realnvp_image((3, 32, 32))
    params = fb.init_params(spec, 0, init="random")
    ref = _cifar_reference(spec, params, reference)
    rt = runtime(backend)
    flow = rt.build(fb.module_for(spec, backend), params, dtype, "cpu")
    (y, fldj), (x, ildj) = rt.forward(flow, ref["x"]), rt.inverse(flow, ref["y"])
    rel = [np.max(np.abs(a - b)) / np.max(np.abs(b)) for a, b in
           ((y, ref["y"]), (x, ref["x"]), (rt.round_trip(flow, ref["x"]), ref["x"]))]  # fmt: skip
    lds = [np.max(np.abs(a - b) / (1 + np.abs(b))) for a, b in
           ((fldj, ref["fldj"]), (ildj, ref["ildj"]))]  # fmt: skip
    assert max(rel + lds) <= TOLERANCES[dtype], (rel, lds)


_CIFAR = {}


def _cifar_reference(spec, params, reference):
    if "ref" not in _CIFAR:  # one float64 reference for every backend and dtype
        x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
        _CIFAR["ref"] = reference(spec, params, x)
    return _CIFAR["ref"]


# ------------------------------------------------------------------ the data side
def test_actnorm_init_normalises_each_channel_from_data():
    spec = IMAGE_CASES["image_logit_actnorm_c2_4x4"]()
    params = fb.init_params(spec, 0, init="random")
    x = np.random.default_rng(4).uniform(0.02, 0.98, (40, *spec.event_shape))
    started = fb.actnorm_init(spec, params, x)
    flow = fb.to_numpy(spec, started)
    h = x
    for i, layer in enumerate(flow.layers):
        h = layer.forward(h)
        if spec.layers[i].type == "actnorm":
            active = h[:, : S.layer_shapes(spec)[i][0]]  # the last one: 4 of 8 channels
            np.testing.assert_allclose(active.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
            np.testing.assert_allclose(active.std(axis=(0, 2, 3)), 1.0, atol=1e-5)
    assert {k for k in started if not np.array_equal(started[k], params[k])} == {
        "layers.1.log_scale", "layers.1.shift", "layers.5.log_scale", "layers.5.shift"}
    with pytest.raises(fb.ParamError, match=r"x: expected at least 2 examples of shape"):
        fb.actnorm_init(spec, params, x[:, :1])


def test_logit_layer_maps_unit_interval_data_and_back():
    spec = IMAGE_CASES["image_logit_actnorm_c2_4x4"]()
    logit = fb.to_numpy(fb.FlowSpec(name="l", event_shape=(2, 4, 4), layers=[spec.layers[0]]))
    x = np.random.default_rng(5).uniform(0.0, 1.0, (3, 2, 4, 4))
    y, log_det = logit.forward_with_log_det(x)
    p = 0.1 + 0.8 * x
    np.testing.assert_allclose(y, np.log(p / (1 - p)), rtol=1e-13)
    np.testing.assert_allclose(log_det, np.sum(np.log(0.8 / (p * (1 - p))), axis=(1, 2, 3)),
                               rtol=1e-13)  # fmt: skip
    back = logit.inverse(y * 50.0)  # far out in the tails: still strictly inside (0.1/0.8 ...)
    assert np.all(back >= -0.125) and np.all(back <= 1.125) and np.all(np.isfinite(back))
    with pytest.raises(fb.SpecError, match=r"layers\[1\]: expected a logit layer first"):
        fb.FlowSpec(name="l", event_shape=(4,), layers=[fb.ActNorm(), fb.Logit()])
    with pytest.raises(fb.SpecError, match=r"layers\[0\].alpha: expected a number in"):
        fb.FlowSpec.from_dict({"event_shape": [4], "layers": [{"type": "logit", "alpha": 0.5}]})


#: a logit reads data in [0, 1]: the reference refuses anything else (NaN included, and
#: the values in (-alpha / (1 - 2 alpha), 0) it used to map to finite numbers); Pyro and TFP
#: refuse it with validate_args=True (off by default, so the default path pays nothing)
LOGIT = fb.FlowSpec(name="logit", event_shape=(2, 2, 2),
                    layers=[fb.Logit(alpha=0.1), fb.ActNorm()])  # fmt: skip
OUTSIDE = [-0.5, -0.01, 1.25, float("nan")]


def _outside(value: float) -> np.ndarray:
    """A batch of 3 images in (0, 1) but one entry, ``value``."""
    x = np.random.default_rng(8).uniform(0.0, 1.0, (3, 2, 2, 2))
    x[1, 0, 1, 1] = value
    return x


def _refusal(value: float) -> str:
    return (r"Logit: x: expected values in \[0, 1\] \(the layer's domain\), got "
            rf"{value:g} \(1 of 24 entries outside\)")  # fmt: skip


@pytest.mark.parametrize("value", OUTSIDE)
def test_reference_logit_refuses_data_outside_the_unit_interval(value):
    flow = fb.to_numpy(LOGIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the way either
        for call in (flow.forward, flow.forward_log_det_jacobian, flow.layers[0].forward):
            with pytest.raises(ValueError, match=_refusal(value)):
                call(_outside(value))
        ends = np.array([0.0, 1.0] * 4).reshape(1, 2, 2, 2)  # the interval is closed
        assert np.all(np.isfinite(flow.forward_with_log_det(ends)[0]))


@pytest.mark.parametrize("value", OUTSIDE)
def test_pyro_logit_refuses_data_outside_the_unit_interval_with_validate_args(torch_or_skip,
                                                                              value):  # fmt: skip
    import pyro.distributions as dist

    torch = torch_or_skip
    x = torch.tensor(_outside(value))
    fast = fb.to_pyro(LOGIT, dtype=torch.float64)  # the default: no check, no cost
    assert not fast.validate_args and not fast[0].validate_args
    flow = fb.to_pyro(LOGIT, dtype=torch.float64, validate_args=True)
    base = dist.Normal(torch.zeros(2, 2, 2, dtype=torch.float64), 1.0).to_event(3)
    q = dist.TransformedDistribution(base, [flow.inv], validate_args=False)  # flowbridge's check
    for call in (flow, flow[0], lambda v: flow.log_abs_det_jacobian(v, v), q.log_prob):
        with pytest.raises(ValueError, match=_refusal(value)):
            call(x)
    inside = _outside(0.0)
    np.testing.assert_allclose(flow(torch.tensor(inside)).detach().numpy(),
                               fb.to_numpy(LOGIT).forward(inside),
                               rtol=1e-12)  # fmt: skip
    # a conditional flow checks at its door too, at any context
    spec = fb.FlowSpec(name="c", event_shape=(4,), context_dim=2,
                       layers=[fb.Logit(), fb.AffineCoupling(mask=fb.HalfMask())])  # fmt: skip
    conditional = fb.to_pyro(spec, dtype=torch.float64, validate_args=True)
    with pytest.raises(ValueError, match=r"Logit: x: expected values in \[0, 1\]"):
        conditional.condition(torch.zeros(2, dtype=torch.float64))(x.reshape(6, 4))
    with pytest.raises(TypeError, match="validate_args: expected True or False, got 1"):
        fb.to_pyro(LOGIT, validate_args=1)


@pytest.mark.parametrize("mode", ["eager", "tf_function"])
def test_tfp_logit_refuses_data_outside_the_unit_interval_with_validate_args(tf, mode):
    import tensorflow_probability as tfp

    x = tf.constant(_outside(-0.01))
    fast = fb.to_tfp(LOGIT, dtype="float64", data_format="channels_first")
    assert not any(layer.validate_args for layer in fast.bijectors)  # the default: no check
    flow = fb.to_tfp(LOGIT, dtype="float64", data_format="channels_first", validate_args=True)
    assert flow.validate_args and all(layer.validate_args for layer in flow.bijectors)
    base = tfp.distributions.Sample(tfp.distributions.Normal(tf.constant(0.0, tf.float64), 1.0),
                                    [2, 2, 2])  # fmt: skip
    q = tfp.distributions.TransformedDistribution(base, tfp.bijectors.Invert(flow))
    calls = [flow.forward, lambda v: flow.forward_log_det_jacobian(v, event_ndims=3), q.log_prob]
    if mode == "eager":
        for call in calls:
            with pytest.raises(ValueError, match=_refusal(-0.01)):
                call(x)
    else:  # traced: TFP's way, a tf.debugging assertion that fails when the graph runs
        for call in calls:
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=r"Logit: x: expected values in \[0, 1\]"):  # fmt: skip
                tf.function(call)(x)
    inside = _outside(0.0)
    run = flow.forward if mode == "eager" else tf.function(flow.forward)
    np.testing.assert_allclose(run(tf.constant(inside)).numpy(),
                               fb.to_numpy(LOGIT).forward(inside), rtol=1e-12)  # fmt: skip


def test_dequantize_and_bits_per_dim():
    rng = np.random.default_rng(6)
    k = rng.integers(0, 17, (1000, 64))
    x = fb.dequantize(k, 17, rng)
    assert np.all(np.floor(x * 17) == k) and x.min() >= 0 and x.max() < 1
    # the uniform density on [0, 1)^D: p = 1, log p = 0, so log2(17) bits per entry
    np.testing.assert_allclose(fb.bits_per_dim(np.zeros(3), 64, 17), np.log2(17))
    # a density twice as high everywhere it lives is one bit less in all, 1/64 per entry
    np.testing.assert_allclose(fb.bits_per_dim([np.log(2.0)], 64, 17), np.log2(17) - 1 / 64)
    with pytest.raises(ValueError, match=r"values: expected integers in \[0, 17\)"):
        fb.dequantize([0, 17], 17, rng)
    with pytest.raises(ValueError, match="levels: expected an integer >= 2"):
        fb.dequantize([0], 1, rng)


# ------------------------------------------------------------------ batch normalization
BN = "image_batch_norm_coupling_c2_4x4"


def _bn_reference_step(spec, params, x):
    """The reference in training mode, one forward: (y, log_det, state after it)."""
    flow = fb.to_numpy(spec, params)  # layers start in training mode
    y, log_det = flow.forward_with_log_det(x)
    state = {k: v.copy() for k, v in fb.module_for(spec, "numpy").neutral_params(flow).items()
             if "running" in k}  # fmt: skip
    return y, log_det, state


def test_batch_norm_training_mode_by_hand():
    """The reference's training mode against batch norm written out here: batch mean and
    biased variance per channel, the running averages moved by momentum."""
    spec = IMAGE_CASES["image_batch_norm_c3_4x4"]()  # momentum 0.2, eps 1e-3
    params = fb.init_params(spec, 0, init="random")
    x = np.random.default_rng(7).standard_normal((5, 3, 4, 4)) * 2.0 + 1.0
    y, log_det, state = _bn_reference_step(spec, params, x)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    log_scale = params["layers.0.log_gamma"] - 0.5 * np.log(var + 1e-3)
    want = (x - mean[:, None, None]) * np.exp(log_scale)[:, None, None] \
        + params["layers.0.beta"][:, None, None]  # fmt: skip
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(log_det, 16 * log_scale.sum(), rtol=1e-12)
    running_var = 0.8 * np.exp(params["layers.0.running_log_var"]) + 0.2 * var
    np.testing.assert_allclose(state["layers.0.running_mean"],
                               0.8 * params["layers.0.running_mean"] + 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(state["layers.0.running_log_var"], np.log(running_var),
                               rtol=1e-12)  # fmt: skip


@pytest.mark.parametrize("backend", ["pyro", "tfp"])
def test_batch_norm_training_mode_matches_the_reference(backend, dtype):
    """Training mode in each framework (Pyro's default module.train(), TFP's
    layer.training): the outputs and log-dets of one forward, and the running averages
    it leaves, against the reference; one TransformedDistribution.log_prob moves the
    averages once, as one forward does."""
    from flowbridge.backends import BACKENDS
    from flowbridge.check import TOLERANCES

    if not BACKENDS[backend].available():
        pytest.skip(f"{backend} is not installed")
    spec = IMAGE_CASES[BN]()
    params = fb.init_params(spec, 0, init="random")
    x = np.random.default_rng(8).standard_normal((6, 2, 4, 4))
    y_ref, ld_ref, state_ref = _bn_reference_step(spec, params, x)
    tol = TOLERANCES[dtype]
    if backend == "pyro":
        import torch

        flow = fb.to_pyro(spec, params, dtype=getattr(torch, dtype))
        assert flow.training
        xt = torch.tensor(x, dtype=getattr(torch, dtype))
        y = flow(xt)
        log_det = flow.log_abs_det_jacobian(xt, y)  # Pyro's cache: no second forward
        y, log_det, state = y.detach().numpy(), log_det.detach().numpy(), fb.params_from_pyro(flow)
    else:
        import tensorflow as tf
        import tensorflow_probability as tfp

        flow = fb.to_tfp(spec, params, dtype=dtype, data_format="channels_first")
        base = tfp.distributions.Sample(tfp.distributions.Normal(tf.constant(0.0, dtype), 1.0),
                                        list(spec.output_shape))  # fmt: skip
        q = tfp.distributions.TransformedDistribution(base, tfp.bijectors.Invert(flow))
        q.log_prob(tf.constant(x, dtype))  # forward and its log-det: one training step
        state = fb.params_from_tfp(flow)
        fresh = fb.to_tfp(spec, params, dtype=dtype, data_format="channels_first")
        xt = tf.constant(x, dtype)
        y = fresh.forward(xt).numpy()
        log_det = fresh.forward_log_det_jacobian(xt, event_ndims=3).numpy()
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(log_det, ld_ref, rtol=tol, atol=tol)
    for name, want in state_ref.items():
        np.testing.assert_allclose(state[name], want, rtol=tol, atol=tol, err_msg=name)
    assert not np.allclose(state_ref["layers.0.running_mean"], params["layers.0.running_mean"])


def test_check_reports_batch_norm_in_both_modes():
    """`flowbridge check` on a flow with a batch norm: the evaluation rows and, per
    framework backend and dtype, a training-mode row (forward and log-det only)."""
    from flowbridge.backends import BACKENDS

    spec = IMAGE_CASES[BN]()
    backends = tuple(b for b in ("pyro", "tfp", "jax") if BACKENDS[b].available())
    report = fb.check(spec, backends=("numpy", *backends), devices=("cpu",), batch=8,
                      jacobian_rows=2)  # fmt: skip
    training = [r for r in report.rows if r.mode == "training"]
    assert {(r.backend, r.dtype) for r in training} == {(b, d) for b in backends
                                                        for d in ("float32", "float64")}
    assert all(set(r.errors) == {"forward", "fldj"} for r in training)
    assert report.ok and "(training)" in report.table()
