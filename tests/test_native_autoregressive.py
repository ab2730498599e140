"""Native autoregressive layers taken over exactly: Pyro's ``AffineAutoregressive`` and
``ConditionalAffineAutoregressive``, TFP's ``MaskedAutoregressiveFlow`` with an
``AutoregressiveNetwork``, NumPyro's ``InverseAutoregressiveTransform``: random native
weights, both directions on fresh inputs, float64, to 1e-12."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B

from .native_checks import assert_close


def _x(d, n=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


# ----------------------------------------------------------------------------- Pyro
@pytest.fixture
def torch64():
    B.get("pyro").require()
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(before)


def _randomize(torch, module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("backend", ["numpy", "pyro"])
def test_pyro_affine_autoregressive_ports_exactly(torch64, backend):
    """Two IAFs (Pyro's random orders, ReLU and Tanh, default and narrow clamps) around a
    ``Permute``: forward, log-det and the D-pass inverse, in the reference and in the
    generated Pyro module."""
    torch = torch64
    from pyro.distributions.transforms import AffineAutoregressive, Permute
    from pyro.nn import AutoRegressiveNN

    torch.manual_seed(0)
    first = AffineAutoregressive(AutoRegressiveNN(5, [8, 9]))
    second = AffineAutoregressive(AutoRegressiveNN(5, [7], nonlinearity=torch.nn.Tanh()),
                                  log_scale_min_clip=-1.0, log_scale_max_clip=0.5)  # fmt: skip
    for k, t in enumerate((first, second)):
        _randomize(torch, t, k)
    reverse = Permute(torch.tensor([4, 3, 2, 1, 0]))
    spec, params = fb.from_pyro_native([first, reverse, second])
    assert [layer.type for layer in spec.layers] == ["affine_autoregressive", "permutation",
                                                     "affine_autoregressive"]  # fmt: skip
    assert spec.layers[0].direction == "iaf" and spec.layers[0].scale.kind == "clamp"
    assert spec.layers[0].conditioner.order == tuple(first.arn.permutation.tolist())
    x = _x(5)
    xt = torch.tensor(x)
    h1 = first(xt)
    h2 = reverse(h1)
    y = second(h2)
    log_det = first.log_abs_det_jacobian(xt, h1) + second.log_abs_det_jacobian(h2, y)
    fresh = torch.tensor(y.detach().numpy())  # a new object: Pyro's cache cannot answer
    back = first.inv(reverse.inv(second.inv(fresh)))
    if backend == "numpy":
        flow = fb.to_numpy(spec, params)
        got_y, got_ld = flow.forward_with_log_det(x)
        got_x = flow.inverse(y.detach().numpy().copy())
    else:
        flow = fb.to_pyro(spec, params, dtype=torch.float64)
        got_y, got_ld = (v.detach().numpy() for v in flow.forward_with_log_det(torch.tensor(x)))
        got_x = flow.inverse_with_log_det(torch.tensor(y.detach().numpy()))[0].detach().numpy()
    assert_close(got_y, y.detach())
    assert_close(got_ld, log_det.detach(), log_det=True)
    assert_close(got_x, back.detach())
    assert_close(got_x, x)


def test_pyro_conditional_affine_autoregressive_ports_exactly(torch64):
    """The ``ConditionalAutoRegressiveNN`` reads ``[context | x]`` with the context's degree
    0; flowbridge's MADE reads ``[x | context]``: the first kernel's rows move."""
    torch = torch64
    from pyro.distributions.transforms import ConditionalAffineAutoregressive
    from pyro.nn import ConditionalAutoRegressiveNN

    torch.manual_seed(1)
    native = ConditionalAffineAutoregressive(ConditionalAutoRegressiveNN(4, 3, [10, 10]))
    _randomize(torch, native, 2)
    spec, params = fb.from_pyro_native([native])
    assert spec.context_dim == 3
    flow = fb.to_numpy(spec, params)
    x, c = _x(4), _x(3, seed=1)
    t = native.condition(torch.tensor(c))
    y = t(torch.tensor(x))
    assert_close(flow.forward(x, context=c), y.detach())
    assert_close(flow.forward_with_log_det(x, context=c)[1],
                 t.log_abs_det_jacobian(torch.tensor(x), y).detach(), log_det=True)  # fmt: skip
    back = t.inv(torch.tensor(y.detach().numpy()))
    assert_close(flow.inverse(y.detach().numpy().copy(), context=c), back.detach())


def test_pyro_pieces_flowbridge_cannot_state_are_refused(torch64):
    torch = torch64
    from pyro.distributions.transforms import AffineAutoregressive
    from pyro.nn import AutoRegressiveNN

    skip = AffineAutoregressive(AutoRegressiveNN(3, [6], skip_connections=True))
    with pytest.raises(fb.NativeError, match="skip_connections=True cannot be converted"):
        fb.from_pyro_native(skip)
    stable = AffineAutoregressive(AutoRegressiveNN(3, [6]), stable=True)
    with pytest.raises(fb.NativeError, match="stable=True"):
        fb.from_pyro_native(stable)
    three = AffineAutoregressive(AutoRegressiveNN(3, [6], param_dims=[1, 1, 1]))
    with pytest.raises(fb.NativeError, match="param_dims=\\[1, 1\\]"):
        fb.from_pyro_native(three)
    del torch


# ------------------------------------------------------------------------------ TFP
@pytest.fixture
def keras64():
    """TFP's ``AutoregressiveNetwork`` gives its activation layers no dtype, so they
    compute in Keras's ``floatx``: float64 needs ``floatx`` float64 too."""
    B.get("tfp").require()
    import tf_keras

    before = tf_keras.backend.floatx()
    tf_keras.backend.set_floatx("float64")
    yield
    tf_keras.backend.set_floatx(before)


@pytest.mark.parametrize("order, degrees", [("left-to-right", "equal"),
                                            ("random", "random")])  # fmt: skip
def test_tfp_masked_autoregressive_flow_ports_exactly(keras64, order, degrees):
    """A MAF (TFP's forward is its D-pass loop): its ``[D, 2]`` output units reordered to
    ``[shift | s]``, a random input order and random hidden degrees read from the masks."""
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras

    tfb = tfp.bijectors
    made = tfb.AutoregressiveNetwork(
        params=2, hidden_units=[8, 8], activation="tanh", input_order=order,
        hidden_degrees=degrees, kernel_initializer=tf_keras.initializers.RandomNormal(0, 0.4, 3),
        bias_initializer=tf_keras.initializers.RandomNormal(0, 0.2, 4), dtype=tf.float64)  # fmt: skip
    maf = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made)
    x = _x(4)
    y = maf.forward(tf.constant(x)).numpy()  # builds the network
    spec, params = fb.from_tfp_native(maf)
    layer = spec.layers[0]
    assert (layer.type, layer.direction, layer.scale.kind) == ("affine_autoregressive", "maf",
                                                                "exp")  # fmt: skip
    flow = fb.to_numpy(spec, params)
    got_y, got_ld = flow.forward_with_log_det(x)
    assert_close(got_y, y)
    assert_close(got_ld, maf.forward_log_det_jacobian(tf.constant(x), event_ndims=1).numpy(),
                 log_det=True)
    fresh = tf.constant(y.copy())
    assert_close(flow.inverse(y.copy()), maf.inverse(fresh).numpy())
    assert_close(flow.inverse_with_log_det(y.copy())[1],
                 maf.inverse_log_det_jacobian(fresh, event_ndims=1).numpy(), log_det=True)  # fmt: skip


def test_tfp_pieces_flowbridge_cannot_state_are_refused():
    B.get("tfp").require()
    import tensorflow_probability as tfp

    tfb = tfp.bijectors
    fn = tfb.MaskedAutoregressiveFlow(bijector_fn=lambda x: tfb.Shift(x))
    with pytest.raises(fb.NativeError, match="AutoregressiveNetwork"):
        fb.from_tfp_native(fn, dim=3)
    made = tfb.AutoregressiveNetwork(params=2, event_shape=(3,), hidden_units=[4],
                                     activation="relu")  # fmt: skip
    with pytest.raises(fb.NativeError, match="not built yet"):
        fb.from_tfp_native(tfb.MaskedAutoregressiveFlow(made), dim=3)


# -------------------------------------------------------------------------- NumPyro
def test_numpyro_inverse_autoregressive_transform_ports_exactly():
    """Two IAFs (a given permutation and NumPyro's identity, ELU as AutoIAFNormal's) around
    AutoIAFNormal's reversing ``PermuteTransform``: forward, log-det and the D-pass
    inverse."""
    B.get("jax").require()
    import jax
    import jax.numpy as jnp
    from jax.example_libraries import stax
    from numpyro.distributions.flows import InverseAutoregressiveTransform
    from numpyro.distributions.transforms import PermuteTransform
    from numpyro.nn import AutoregressiveNN

    with jax.enable_x64(True):
        perm = np.array([2, 0, 3, 1])
        init, apply = AutoregressiveNN(4, [6, 7], permutation=perm, nonlinearity=stax.Elu)
        _, w1 = init(jax.random.PRNGKey(0), (4,))
        w1 = jax.tree_util.tree_map(lambda a: 2.0 * a, w1)
        init2, apply2 = AutoregressiveNN(4, [6, 7], nonlinearity=stax.Elu)
        _, w2 = init2(jax.random.PRNGKey(1), (4,))
        first = InverseAutoregressiveTransform(lambda v: apply(w1, v))
        second = InverseAutoregressiveTransform(lambda v: apply2(w2, v), log_scale_min_clip=-0.5,
                                                log_scale_max_clip=0.5)  # fmt: skip
        reverse = PermuteTransform(jnp.arange(4)[::-1])
        spec, params = fb.from_numpyro_native([first, reverse, second], [w1, w2],
                                              hidden_dims=[6, 7], permutations=[perm, None],
                                              activation="elu")  # fmt: skip
        x = _x(4)
        h1 = first(x)
        h2 = reverse(h1)
        y = second(h2)
        log_det = first.log_abs_det_jacobian(x, h1) + second.log_abs_det_jacobian(h2, y)
        back = first.inv(reverse.inv(second.inv(jnp.asarray(np.array(y)))))
        flow = fb.to_numpy(spec, params)
        got_y, got_ld = flow.forward_with_log_det(x)
        assert_close(got_y, y)
        assert_close(got_ld, log_det, log_det=True)
        assert_close(flow.inverse(np.array(y)), back)


@pytest.mark.parametrize("order", ["linear", "quadratic"])
def test_pyro_spline_autoregressive_ports_exactly(torch64, order):
    """Pyro's ``SplineAutoregressive`` (an IAF of splines): the network's ``(sum(param_dims),
    D)`` output, parameter-major, taken into flowbridge's entry-major blocks, the raw
    derivatives' biases moved by ``c``; forward, log-det and Pyro's D-pass inverse."""
    torch = torch64
    from pyro.distributions.transforms import SplineAutoregressive
    from pyro.nn import AutoRegressiveNN

    torch.manual_seed(3)
    k = 4
    dims = [k, k, k - 1] + ([k] if order == "linear" else [])
    native = SplineAutoregressive(3, AutoRegressiveNN(3, [12, 12], param_dims=dims),
                                  count_bins=k, bound=2.5, order=order)  # fmt: skip
    _randomize(torch, native, 4)
    spec, params = fb.from_pyro_native(native)
    layer = spec.layers[0]
    assert (layer.type, layer.direction, layer.spline.bins) == ("spline_autoregressive", "iaf", k)
    flow = fb.to_numpy(spec, params)
    x = np.clip(_x(3), -2.4, 2.4)
    xt = torch.tensor(x)
    y = native(xt)
    assert_close(flow.forward(x), y.detach())
    assert_close(flow.forward_with_log_det(x)[1], native.log_abs_det_jacobian(xt, y).detach(),
                 log_det=True)
    back = native.inv(torch.tensor(y.detach().numpy()))
    assert_close(flow.inverse(y.detach().numpy().copy()), back.detach())
