"""The float64 reference against Pyro's and TFP's *own* coupling layers, loaded with the
same weights: an independent check of masks, scale maps and [shift | log-scale] order."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb

D, HIDDEN = 5, (16, 16)


def _spec(scale):
    # first-part masks with Pyro's floor(D / 2) split, alternated by reversing permutations
    layers = []
    for i in range(3):
        layers.append(fb.AffineCoupling(conditioner=fb.Conditioner(hidden=HIDDEN), scale=scale))
        if i < 2:
            layers.append(fb.Permutation(kind="reverse"))
    return fb.FlowSpec(event_shape=(D,), layers=layers)


def _mlp_np(params, prefix, n):
    def run(h):
        for j in range(n):
            h = h @ params[f"{prefix}.conditioner.{j}.kernel"] + params[f"{prefix}.conditioner.{j}.bias"]
            if j < n - 1:
                h = np.maximum(h, 0.0)
        return h

    return run


def test_reference_matches_native_pyro_affine_coupling():
    torch = pytest.importorskip("torch")
    from pyro.distributions.transforms import AffineCoupling, ComposeTransform, Permute
    from pyro.nn import DenseNN

    spec = _spec(fb.ClampScale(low=-5.0, high=3.0))  # Pyro's defaults
    params = fb.init_params(spec, 21, init="random")
    for k in params:  # push some log-scales past Pyro's clip so the clamp matters
        if k.endswith("conditioner.2.bias"):
            params[k] = params[k] * 40.0
    parts = []
    for i, layer in enumerate(spec.layers):
        if layer.type == "permutation":
            parts.append(Permute(torch.arange(D - 1, -1, -1)))
            continue
        split = D // 2
        net = DenseNN(split, list(HIDDEN), [D - split, D - split]).double()
        linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for j, lin in enumerate(linears):
                lin.weight.copy_(torch.tensor(params[f"layers.{i}.conditioner.{j}.kernel"].T))
                lin.bias.copy_(torch.tensor(params[f"layers.{i}.conditioner.{j}.bias"]))
        parts.append(AffineCoupling(split, net))
    native = ComposeTransform(parts)
    x = np.random.default_rng(0).standard_normal((50, D))
    xt = torch.tensor(x)
    y_native = native(xt)
    ld_native = native.log_abs_det_jacobian(xt, y_native)
    y_ref, ld_ref = fb.to_numpy(spec, params).forward_with_log_det(x)
    np.testing.assert_allclose(y_native.detach().numpy(), y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ld_native.detach().numpy(), ld_ref, rtol=1e-12, atol=1e-12)
    assert np.any(np.abs(ld_ref) > 4.9)  # the clamp was active somewhere


def test_reference_matches_native_tfp_real_nvp():
    tfp = pytest.importorskip("tensorflow_probability")
    import tensorflow as tf

    tfb = tfp.bijectors
    spec = _spec(fb.ExpScale())  # TFP's RealNVP: unclamped exp
    params = fb.init_params(spec, 22, init="random")
    layers = []
    for i, layer in enumerate(spec.layers):
        if layer.type == "permutation":
            layers.append(tfb.Permute(list(range(D - 1, -1, -1))))
            continue
        mlp = _mlp_np(params, f"layers.{i}", len(HIDDEN) + 1)

        def fn(x0, output_units, mlp=mlp):
            out = tf.numpy_function(mlp, [x0], tf.float64)
            return out[..., :output_units], out[..., output_units:]

        layers.append(tfb.RealNVP(num_masked=D // 2, shift_and_log_scale_fn=fn))
    native = tfb.Chain(list(reversed(layers)))  # Chain applies its list last-first
    x = np.random.default_rng(1).standard_normal((50, D))
    y_ref, ld_ref = fb.to_numpy(spec, params).forward_with_log_det(x)
    np.testing.assert_allclose(native.forward(x).numpy(), y_ref, rtol=1e-12, atol=1e-12)
    ld = native.forward_log_det_jacobian(x, event_ndims=1).numpy()
    np.testing.assert_allclose(ld, ld_ref, rtol=1e-12, atol=1e-12)
