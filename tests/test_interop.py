"""Native flows in, the other framework out: the conversions and every refusal."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb
from flowbridge.native import NativeError, from_pyro_native, from_tfp_native

torch = pytest.importorskip("torch")
tfp = pytest.importorskip("tensorflow_probability")
tf = pytest.importorskip("tensorflow")
tfb = tfp.bijectors

D = 5
F32 = dict(rtol=2e-5, atol=2e-5)  # float32 rounding of one framework against the other


def native_pyro(d=D, nonlinearity=None, clip=(-5.0, 3.0)):
    from pyro.distributions.torch_transform import ComposeTransformModule
    from pyro.distributions.transforms import AffineCoupling, Permute
    from pyro.nn import DenseNN

    torch.manual_seed(0)
    parts = []
    for i in range(3):
        split = d // 2
        kw = {"nonlinearity": nonlinearity} if nonlinearity is not None else {}
        net = DenseNN(split, [16, 16], [d - split, d - split], **kw)
        with torch.no_grad():  # non-identity: Pyro's last layer is not zero anyway
            net.layers[-1].bias.add_(torch.randn(2 * (d - split)))
        parts.append(AffineCoupling(split, net, log_scale_min_clip=clip[0],
                                    log_scale_max_clip=clip[1]))  # fmt: skip
        if i < 2:
            parts.append(Permute(torch.randperm(d)))
    return ComposeTransformModule(parts)


def native_tfp(d=D, shift_only=False, activation=tf.nn.relu, fraction=None):
    tf.random.set_seed(1)
    layers, templates = [], []
    for i in range(3):
        t = tfb.real_nvp_default_template(hidden_layers=[16, 16], shift_only=shift_only,
                                          activation=activation)  # fmt: skip
        templates.append(t)
        kw = {"fraction_masked": fraction} if fraction else {"num_masked": 2 if i % 2 else -2}
        layers.append(tfb.RealNVP(shift_and_log_scale_fn=t, **kw))
        if i < 2:
            layers.append(tfb.Permute(np.random.default_rng(i).permutation(d)))
    chain = tfb.Chain(list(reversed(layers)))
    chain.forward(np.zeros((1, d), np.float32))  # the templates make their variables
    for t in templates:  # non-identity weights (the Chain does not track the templates')
        for v in t.trainable_variables:
            v.assign(tf.random.normal(v.shape, stddev=0.3))
    return chain


def _x(n=40, d=D, seed=3):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_native_pyro_runs_the_same_in_tfp_and_in_flowbridge_pyro():
    native = native_pyro()
    spec, params = from_pyro_native(native)
    assert [la.type for la in spec.layers] == ["affine_coupling", "permutation"] * 2 + ["affine_coupling"]
    assert spec.layers[0].scale == fb.ClampScale(low=-5.0, high=3.0)
    x = _x()
    xt = torch.tensor(x)
    y_nat = native(xt)
    ld_nat = native.log_abs_det_jacobian(xt, y_nat).detach().numpy()
    y_nat = y_nat.detach().numpy()
    bij = fb.to_tfp(spec, params)
    np.testing.assert_allclose(bij.forward(x).numpy(), y_nat, **F32)
    np.testing.assert_allclose(bij.forward_log_det_jacobian(x, event_ndims=1).numpy(), ld_nat, **F32)
    flow = fb.to_pyro(spec, params)
    torch.testing.assert_close(flow(torch.tensor(x)), native(torch.tensor(x)), rtol=1e-6, atol=1e-6)
    ref_y, ref_ld = fb.to_numpy(spec, params).forward_with_log_det(x.astype(np.float64))
    np.testing.assert_allclose(ref_y, y_nat, **F32)
    np.testing.assert_allclose(ref_ld, ld_nat, **F32)


@pytest.mark.parametrize("module, name", [("Tanh", "tanh"), ("ELU", "elu"), ("GELU", "gelu")])
def test_native_pyro_activations(module, name):
    native = native_pyro(nonlinearity=getattr(torch.nn, module)())
    spec, params = from_pyro_native(native)
    assert spec.layers[0].conditioner.activation == name
    x = _x()
    np.testing.assert_allclose(fb.to_tfp(spec, params).forward(x).numpy(),
                               native(torch.tensor(x)).detach().numpy(), **F32)  # fmt: skip
    slope = from_pyro_native(native_pyro(nonlinearity=torch.nn.LeakyReLU(0.3)))[0]
    assert slope.layers[0].conditioner.negative_slope == pytest.approx(0.3)


def test_native_pyro_single_pieces_and_lists():
    native = native_pyro()
    spec, _ = from_pyro_native(native[0])
    assert len(spec.layers) == 1 and spec.dim == D
    spec, _ = from_pyro_native(list(native.parts))
    assert len(spec.layers) == 5
    spec, _ = from_pyro_native(native.parts[1], dim=D)
    assert spec.layers[0].type == "permutation"


@pytest.mark.parametrize("kw", [{}, {"fraction": 0.5}, {"fraction": -0.3}, {"shift_only": True},
                                {"activation": tf.math.tanh}])  # fmt: skip
def test_native_tfp_runs_the_same_in_pyro(kw):
    native = native_tfp(**kw)
    spec, params = from_tfp_native(native)
    kinds = {la.type for la in spec.layers}
    assert kinds == {"permutation", "additive_coupling" if kw.get("shift_only") else "affine_coupling"}
    x = _x()
    y_nat = native.forward(x).numpy()
    ld_nat = np.broadcast_to(native.forward_log_det_jacobian(x, event_ndims=1).numpy(), (len(x),))
    flow = fb.to_pyro(spec, params)
    xt = torch.tensor(x)
    yt = flow(xt)
    np.testing.assert_allclose(yt.detach().numpy(), y_nat, **F32)
    np.testing.assert_allclose(flow.log_abs_det_jacobian(xt, yt).detach().numpy(), ld_nat, **F32)
    y_fb = fb.to_tfp(spec, params).forward(x).numpy()
    np.testing.assert_allclose(y_fb, y_nat, **F32)


def test_tfp_fraction_masked_rounding():
    spec, _ = from_tfp_native(native_tfp(d=7, fraction=0.5))  # round(3.5) = 4 (half to even)
    masks = [la.mask for la in spec.layers if la.type != "permutation"]
    assert masks[0] == fb.SplitMask(part="first", size=4)
    spec, _ = from_tfp_native(native_tfp(d=7, fraction=-0.3))  # round(2.1) = 2, last part
    assert [la.mask for la in spec.layers if la.type != "permutation"][0] == fb.SplitMask(
        part="last", size=2)  # fmt: skip


# --------------------------------------------------------------------------- refusals
def test_pyro_refusals():
    from pyro.distributions.transforms import AffineCoupling, Planar
    from pyro.nn import DenseNN

    class Custom(torch.nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(NativeError, match=r"parts\[0\] \(AffineCoupling\).nn: a Custom hypernet"):
        from_pyro_native(AffineCoupling(2, Custom()), dim=4)
    with pytest.raises(NativeError, match=r"parts\[1\] \(Planar\): cannot be converted"):
        from_pyro_native([native_pyro()[0], Planar(D)])
    net = DenseNN(2, [8], [3, 3], nonlinearity=torch.nn.Softplus())
    with pytest.raises(NativeError, match="activation Softplus cannot be converted"):
        from_pyro_native(AffineCoupling(2, net))
    with pytest.raises(NativeError, match="GELU"):
        from_pyro_native(AffineCoupling(2, DenseNN(2, [8], [3, 3], torch.nn.GELU("tanh"))))
    with pytest.raises(NativeError, match=r"expected DenseNN\(2, ..., param_dims=\[3, 3\]\)"):
        from_pyro_native(AffineCoupling(2, DenseNN(2, [8], [3, 2])), dim=5)


def test_tfp_refusals():
    custom = tfb.RealNVP(num_masked=2, shift_and_log_scale_fn=lambda x, n: (x[..., :n], None))
    with pytest.raises(NativeError, match=r"shift_and_log_scale_fn: a custom function"):
        from_tfp_native(custom, dim=4)
    fresh = tfb.RealNVP(num_masked=2, shift_and_log_scale_fn=tfb.real_nvp_default_template([4]))
    with pytest.raises(NativeError, match="call the bijector once"):
        from_tfp_native(fresh, dim=4)
    with pytest.raises(NativeError, match=r"bijectors\[0\] \(Exp\): cannot be converted"):
        from_tfp_native(tfb.Chain([tfb.Permute([1, 0]), tfb.Exp()]))
    by_fn = tfb.RealNVP(num_masked=1, bijector_fn=lambda x, n: tfb.Shift(x))
    with pytest.raises(NativeError, match="built with bijector_fn"):
        from_tfp_native(by_fn, dim=2)
    t = tfb.real_nvp_default_template([4], activation=tf.nn.softplus)
    nvp = tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=t)
    nvp.forward(np.zeros((1, 3), np.float32))
    with pytest.raises(NativeError, match="activation softplus cannot be converted"):
        from_tfp_native(nvp)
