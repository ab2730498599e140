"""Glow's invertible 1x1 convolution against the frameworks' own: Pyro's
``GeneralizedChannelPermute`` taken over exactly (forward, log-det and Pyro's own inverse,
in the float64 reference and flowbridge's generated Pyro flow, to 1e-12), and TFP's
``ScaleMatvecLU`` computing the same map from the same factors (on vectors, and on images
channels last), to 1e-12 in float64."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb

from .native_checks import TOLERANCE, error


def _pyro_layers(seed, channels, count):
    """``count`` of Pyro's own 1x1 convolutions (random orthogonal start, pivoted LU), each
    LU moved off its start so no factor is special; float64."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pyro")
    from pyro.distributions.transforms import GeneralizedChannelPermute

    torch.manual_seed(seed)
    layers = [GeneralizedChannelPermute(channels=channels).double() for _ in range(count)]
    with torch.no_grad():
        for layer in layers:
            layer.LU.add_(0.2 * torch.randn(channels, channels, dtype=torch.float64))
    return layers


def test_pyro_generalized_channel_permute_is_taken_over_exactly():
    torch = pytest.importorskip("torch")
    natives = _pyro_layers(0, 4, 2)
    assert any(not torch.equal(n.permutation, torch.eye(4, dtype=torch.float64)) for n in natives)
    assert any((n.LU.diag() < 0).any() for n in natives)  # a negative diagonal entry of U
    spec, params = fb.from_pyro_native(natives, event_shape=(4, 3, 5))
    assert [layer.type for layer in spec.layers] == ["conv1x1"] * 2
    assert spec.layers[0].diagonal == "direct"

    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 6, 4, 3, 5))  # y fresh: the inverse is not a cache hit
    want_y, want_ld = torch.from_numpy(x), torch.zeros(6, dtype=torch.float64)
    for native in natives:
        out = native(want_y)
        want_ld = want_ld + native.log_abs_det_jacobian(want_y, out)
        want_y = out
    want_x = torch.from_numpy(y)
    for native in reversed(natives):
        want_x = native._inverse(want_x)  # Pyro's two triangular solves, no cache

    reference = fb.to_numpy(spec, params)
    ours = fb.to_pyro(spec, params, dtype="float64")
    for name, (got_y, got_ld), got_x in [
        ("reference", reference.forward_with_log_det(x), reference.inverse(y)),
        ("pyro", [v.detach().numpy() for v in ours.forward_with_log_det(torch.from_numpy(x))],
         ours.inv(torch.from_numpy(y)).detach().numpy()),
    ]:
        errors = {"forward": error(got_y, want_y.detach()),
                  "fldj": error(got_ld, want_ld.detach(), log_det=True),
                  "inverse": error(got_x, want_x.detach())}  # fmt: skip
        print(name, errors)
        assert max(errors.values()) <= TOLERANCE, (name, errors)


def test_pyro_image_pieces_need_the_event_shape_and_conditional_ones_are_refused():
    natives = _pyro_layers(2, 3, 1)
    with pytest.raises(fb.NativeError, match=r"event_shape: expected an image's \(C, H, W\)"):
        fb.from_pyro_native(natives)
    with pytest.raises(fb.NativeError, match=r"expected \(4, 4\) each, for the event's 4"):
        fb.from_pyro_native(natives, event_shape=(4, 2, 2))
    from pyro.distributions.transforms import AffineCoupling, ConditionalGeneralizedChannelPermute
    from pyro.nn import DenseNN

    conditional = ConditionalGeneralizedChannelPermute(DenseNN(2, [4], param_dims=[9]), 3)
    with pytest.raises(fb.NativeError, match="computes its LU from the context"):
        fb.from_pyro_native([natives[0], conditional], event_shape=(3, 2, 2))
    coupling = AffineCoupling(1, DenseNN(1, [4], param_dims=[2, 2]))
    with pytest.raises(fb.NativeError, match="cannot be converted in an image flow"):
        fb.from_pyro_native([coupling, natives[0]], event_shape=(3, 2, 2))


@pytest.fixture
def tfp_lu():
    """TFP's own factors of a random (non-orthogonal) matrix: ``lower_upper`` and ``perm``
    from ``tf.linalg.lu``, so the pivots permute; float64."""
    tf = pytest.importorskip("tensorflow")
    tfp = pytest.importorskip("tensorflow_probability")
    rng = np.random.default_rng(3)
    lower_upper, perm = tf.linalg.lu(tf.constant(rng.standard_normal((5, 5))))
    assert not np.array_equal(perm.numpy(), np.arange(5))
    native = tfp.bijectors.ScaleMatvecLU(lower_upper, perm, validate_args=True)
    # TFP's W = P L U gathers the rows of L U by invert_permutation(perm)
    indices = tuple(int(i) for i in tf.math.invert_permutation(perm).numpy())
    return tf, native, lower_upper.numpy(), indices


def test_tfp_scale_matvec_lu_computes_the_same_map_on_vectors(tfp_lu):
    tf, native, lower_upper, indices = tfp_lu
    spec = fb.FlowSpec(event_shape=(5,), layers=[fb.Conv1x1(permutation=indices)])
    params = {"layers.0.lower_upper": lower_upper}
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 7, 5))
    want_y = native.forward(tf.constant(x)).numpy()
    # TFP gives a constant log-det as a scalar; flowbridge's has the batch shape
    want_ld = np.broadcast_to(native.forward_log_det_jacobian(tf.constant(x), event_ndims=1), (7,))
    want_x = native.inverse(tf.constant(y)).numpy()
    reference, ours = fb.to_numpy(spec, params), fb.to_tfp(spec, params, dtype="float64")
    got = {"reference": (*reference.forward_with_log_det(x), reference.inverse(y)),
           "tfp": (ours.forward(tf.constant(x)).numpy(),
                   np.broadcast_to(ours.forward_log_det_jacobian(tf.constant(x), event_ndims=1), (7,)),
                   ours.inverse(tf.constant(y)).numpy())}  # fmt: skip
    for name, (got_y, got_ld, got_x) in got.items():
        errors = {"forward": error(got_y, want_y), "fldj": error(got_ld, want_ld, log_det=True),
                  "inverse": error(got_x, want_x)}  # fmt: skip
        print(name, errors)
        assert max(errors.values()) <= TOLERANCE, (name, errors)


def test_tfp_scale_matvec_lu_on_images_channels_last_is_the_same_flow(tfp_lu):
    """TFP mixes the last axis of (N, H, W, C) images; flowbridge's image layer mixes the
    channels of (N, C, H, W) ones, its log-det H * W times the vector's."""
    tf, native, lower_upper, indices = tfp_lu
    spec = fb.FlowSpec(event_shape=(5, 2, 3), layers=[fb.Conv1x1(permutation=indices)])
    flow = fb.to_numpy(spec, {"layers.0.lower_upper": lower_upper})
    x = np.random.default_rng(5).standard_normal((4, 5, 2, 3))
    last = tf.constant(np.moveaxis(x, 1, -1))
    want_y = np.moveaxis(native.forward(last).numpy(), -1, 1)
    want_ld = np.broadcast_to(native.forward_log_det_jacobian(last, event_ndims=3), (4,))
    got_y, got_ld = flow.forward_with_log_det(x)
    assert error(got_y, want_y) <= TOLERANCE
    assert error(got_ld, want_ld, log_det=True) <= TOLERANCE
