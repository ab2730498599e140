"""Autoregressive layers beyond the formula and conformance cases: the autoregressive
property (a triangular Jacobian in the stated order), the D-pass direction as one loop
whose code does not grow with D, gradients through that loop in every framework, and
the spec's refusals."""

from __future__ import annotations

import re

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B


def _spec(d, direction="maf", order=None, context=0, **made):
    cond = fb.MADE(hidden=(16, 16), order=order, **made)
    return fb.FlowSpec(name="ar", event_shape=(d,), context_dim=context, layers=[
        fb.AffineAutoregressive(conditioner=cond, direction=direction,
                                scale=fb.SoftClampScale(bound=2.0))])  # fmt: skip


@pytest.mark.parametrize("direction", ["maf", "iaf"])
def test_the_jacobian_is_triangular_in_the_stated_order(direction):
    """Output entry order[k] moves with input entries order[0..k] only: perturbing a later
    entry leaves it bitwise unchanged (the D-pass direction included), and with random
    weights every earlier entry moves it."""
    order = (3, 0, 4, 2, 1)
    spec = _spec(5, direction, order)
    flow = fb.to_numpy(spec, fb.init_params(spec, seed=3, init="random"))
    x = np.random.default_rng(0).standard_normal((1, 5))
    for fn in (flow.forward, flow.inverse):
        base = fn(x)
        for j in range(5):
            moved = x.copy()
            moved[0, j] += 0.25
            changed = fn(moved)[0] != base[0]
            for k, i in enumerate(order):
                assert changed[i] == (order.index(j) <= k), (fn.__name__, i, j)


@pytest.mark.parametrize("backend", B.NAMES)
def test_the_d_pass_direction_is_one_loop_whose_code_does_not_grow_with_d(backend):
    """A MAF's forward and an IAF's inverse call the step once, in a loop: the generated
    class for D = 4 and D = 64 is the same text but for its numbers."""

    def layer_class(d, direction):
        code = fb.generate(_spec(d, direction), backend)
        start = code.index("class AffineAutoregressive")
        end = code.index("\n\n\n", start)
        return code[start:end]

    for direction, loops in (("maf", "_forward_with_log_det"), ("iaf", "_inverse_with_log_det")):
        small, large = layer_class(4, direction), layer_class(64, direction)
        assert re.sub(r"\d+", "#", small) == re.sub(r"\d+", "#", large)
        body = small[small.index(f"def {loops}"):]
        assert body.count("_repeat(self.step, self.passes") == 1
        assert small.count("def step(") == 1


def _input_gradient(backend, spec, params, x, direction):
    """d sum(direction(x)) / dx and the log-det's, in the backend's framework, float64."""
    if backend == "pyro":
        import torch

        flow = fb.to_pyro(spec, params, dtype=torch.float64)
        t = torch.tensor(x, requires_grad=True)
        y, ld = getattr(flow, f"{direction}_with_log_det")(t)
        (y.sum() + ld.sum()).backward()
        return t.grad.numpy()
    if backend == "tfp":
        import tensorflow as tf

        flow = fb.to_tfp(spec, params, dtype=tf.float64)
        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = getattr(flow, direction)(t)
            ld = getattr(flow, f"{direction}_log_det_jacobian")(t, event_ndims=1)
            total = tf.reduce_sum(y) + tf.reduce_sum(ld)
        return tape.gradient(total, t).numpy()
    import jax

    with jax.enable_x64(True):
        flow = fb.to_jax(spec, params, dtype="float64")
        step = getattr(flow, f"{direction}_with_log_det")

        def total(v):
            y, ld = step(v)
            return y.sum() + ld.sum()

        return np.asarray(jax.jit(jax.grad(total))(jax.numpy.asarray(x)))


@pytest.mark.parametrize("backend", [b for b in B.NAMES if b != "numpy"])
@pytest.mark.parametrize("direction", ["maf", "iaf"])
def test_gradients_flow_through_the_loop(backend, direction):
    """Reverse mode through the D-pass direction (a torch loop, ``tf.while_loop``, a
    ``jax.lax.fori_loop`` under ``jit``) against central differences of the float64
    reference."""
    B.get(backend).require()
    spec = _spec(4, direction)
    params = fb.init_params(spec, seed=5, init="random")
    x = np.random.default_rng(1).standard_normal((3, 4))
    loop = "forward" if direction == "maf" else "inverse"
    fn = getattr(fb.to_numpy(spec, params), f"{loop}_with_log_det")
    want = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[idx] = 1e-6
        up, down = fn(x + step), fn(x - step)
        want[idx] = (up[0].sum() + up[1].sum() - down[0].sum() - down[1].sum()) / 2e-6
    got = _input_gradient(backend, spec, params, x, loop)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("made, message", [
    (fb.MADE(order=(0, 2, 2)), "layers[0].conditioner.order: expected a permutation of 0..2"),
    (fb.MADE(hidden=(4,), degrees=((1, 2),)),
     "layers[0].conditioner.degrees[0]: expected 4 degrees (one per unit of hidden layer 0)"),
    (fb.MADE(hidden=(4, 4), degrees=((1, 2, 1, 2),)),
     "layers[0].conditioner.degrees: expected one tuple of degrees per hidden layer (2)"),
])  # fmt: skip
def test_a_made_that_does_not_fit_the_event_is_refused_by_field(made, message):
    with pytest.raises(fb.SpecError, match=re.escape(message)):
        fb.FlowSpec(event_shape=(3,), layers=[fb.AffineAutoregressive(conditioner=made)])


def test_autoregressive_layers_take_vectors_only():
    with pytest.raises(fb.SpecError, match="layers\\[0\\]"):
        fb.FlowSpec(event_shape=(1, 2, 2), layers=[fb.AffineAutoregressive()])


@pytest.mark.parametrize("d, hidden", [(4, 5), (7, 12), (10, 33), (2, 3)])
def test_the_named_degree_rules_are_the_frameworks(d, hidden):
    """``"equal"`` is TFP's ``hidden_degrees="equal"`` and ``"pyro"`` Pyro's rule, with and
    without a context, against the frameworks' own functions."""
    B.get("pyro").require()
    B.get("tfp").require()
    import torch
    from pyro.nn.auto_reg_nn import sample_mask_indices
    from tensorflow_probability.python.bijectors.masked_autoregressive import _create_degrees

    made = fb.MADE(hidden=(hidden, hidden), degrees="equal")
    tfp_degrees = _create_degrees(d, [hidden, hidden])[1:]
    assert made.hidden_degrees(d) == [list(map(int, v)) for v in tfp_degrees]
    pyro = fb.MADE(hidden=(hidden,), degrees="pyro")
    with torch.device("cpu"):
        plain = sample_mask_indices(d - 1, hidden).double()
        context = sample_mask_indices(d, hidden).double() - 1
    assert pyro.hidden_degrees(d) == [[int(v) for v in plain]]
    assert pyro.hidden_degrees(d, 2) == [[int(v) for v in context]]


@pytest.mark.parametrize("degrees", ["equal", "pyro"])
@pytest.mark.parametrize("direction", ["maf", "iaf"])
def test_the_context_reaches_every_entry(degrees, direction):
    """With a context, some hidden units read it alone (degree 0), so even the first entry
    in the order is conditioned: moving the context moves every output entry."""
    spec = _spec(4, direction, order=(2, 0, 3, 1), context=2, degrees=degrees)
    flow = fb.to_numpy(spec, fb.init_params(spec, seed=2, init="random"))
    x, c = np.random.default_rng(0).standard_normal((2, 1, 4))[0], np.ones((1, 2))
    assert np.all(flow.forward(x, context=c) != flow.forward(x, context=c + 0.5))
