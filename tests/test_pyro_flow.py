"""The generated Pyro ``Flow``: one transform over the layers, with nothing Pyro users rely
on lost (per-layer access, state_dict keys, caches, ``.inv``, gradients), and the
emitter's peepholes (activations in place, one split for two complementary slices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import flowbridge as fb

torch = pytest.importorskip("torch")
pytest.importorskip("pyro")


def _flow(scale="clamp", dtype=torch.float64):
    spec = fb.realnvp(6, num_couplings=3, hidden=(16, 16), scale={"kind": scale})
    flow = fb.to_pyro(spec, fb.init_params(spec, 0, init="random"), dtype=dtype)
    return spec, flow


def _fresh(x):
    return x.detach().clone()


def test_flow_is_a_compose_module_with_the_layers_keys():
    from pyro.distributions.torch_transform import ComposeTransformModule

    _, flow = _flow()
    assert isinstance(flow, ComposeTransformModule) and type(flow).__name__ == "Flow"
    plain = ComposeTransformModule(list(flow))  # the layers as Pyro would compose them
    assert list(flow.state_dict()) == list(plain.state_dict())
    assert "0.kernels.0" in flow.state_dict()
    assert flow[0] is flow.parts[0] and len(flow) == len(flow.parts) == 3


def test_flow_equals_its_layers_one_by_one():
    _, flow = _flow()
    x = torch.randn(5, 6, dtype=torch.float64)
    y, log_det = _fresh(x), torch.zeros(5, dtype=torch.float64)
    for layer in flow:  # each layer's own call, no cache shared with the flow's
        z = layer(_fresh(y))
        log_det = log_det + layer.log_abs_det_jacobian(_fresh(y), z)
        y = z
    got = flow(_fresh(x))
    torch.testing.assert_close(got, y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(flow.log_abs_det_jacobian(_fresh(x), _fresh(got)), log_det)
    assert (got - x).abs().max() > 0.1  # not the identity
    back = flow.inv(_fresh(got))  # a fresh tensor: the inverse computed, not cached
    torch.testing.assert_close(back, x, rtol=1e-10, atol=1e-10)


def test_flow_caches_like_a_layer():
    _, flow = _flow()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = flow(x)
    assert flow(x) is y and flow.inv(y) is x  # the last pair, by identity
    log_det = flow.log_abs_det_jacobian(x, y)
    assert flow.log_abs_det_jacobian(x, y) is log_det
    torch.testing.assert_close(flow.inv.log_abs_det_jacobian(y, x), -log_det)
    other = flow.inv(_fresh(y))  # a new input: computed again, and equal
    assert other is not x
    torch.testing.assert_close(other, x, rtol=1e-10, atol=1e-10)


def test_flow_inputs_are_checked_once_and_named():
    _, flow = _flow()
    with pytest.raises(ValueError, match=r"Flow: x: expected shape \(\*batch, 6\)"):
        flow(torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="Flow: x: expected dtype torch.float64"):
        flow(torch.zeros(3, 6, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"Flow: y: expected shape"):
        flow.inv(torch.zeros(6, 3, dtype=torch.float64))


def test_in_place_activations_keep_gradients_and_inputs():
    """relu_ on the dense outputs and the split: autograd's gradients equal finite
    differences (float64), and neither the input nor a weight is overwritten."""
    _, flow = _flow("exp")
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    kept = x.detach().clone()

    def f(x):
        y = flow(x)
        return y, flow.log_abs_det_jacobian(x, y)

    assert torch.autograd.gradcheck(lambda x: f(_fresh_grad(x)), (x,))
    torch.testing.assert_close(x.detach(), kept, rtol=0, atol=0)
    weights = [p.detach().clone() for p in flow.parameters()]
    d = __import__("pyro").distributions
    base = d.Normal(torch.zeros(6, dtype=torch.float64), 1.0).to_event(1)
    (-d.TransformedDistribution(base, [flow]).log_prob(_fresh(x)).mean()).backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in flow.parameters())
    assert all(torch.equal(p.detach(), w) for p, w in zip(flow.parameters(), weights, strict=True))


def _fresh_grad(x):
    return x * 1.0  # a new tensor each call: the flow's cache never answers


def test_peepholes_in_the_generated_code():
    spec, _ = _flow()
    code = fb.generate(spec, "pyro")
    assert "x_a, x_b = x.split([self.split, 6 - self.split], dim=-1)" in code
    assert "shift, s = out.split([self.n_trans, 6 - self.n_trans], dim=-1)" in code
    assert "x[..., : self.split]" not in code
    assert "torch.relu_(h)" in code and "torch.relu(" not in code
    # the other backends keep one line per slice and fresh activations
    for backend in ("numpy", "tfp"):
        other = fb.generate(spec, backend)
        assert "x.split(" not in other and "relu_" not in other


def test_a_clamp_without_gradient_is_the_clamp():
    """Without a gradient the clamp runs alone: the same values as the straight-through
    form and as the NumPy reference, on inputs whose log-scales the clamp does cut."""
    spec, flow = _flow("clamp")
    params = fb.init_params(spec, 0, init="random")
    wide = fb.realnvp(6, num_couplings=3, hidden=(16, 16),
                      scale={"kind": "clamp", "low": -1e6, "high": 1e6})  # fmt: skip
    layer, unclamped = flow[0], fb.to_pyro(wide, params, dtype=torch.float64)[0]
    x = torch.randn(64, 6, dtype=torch.float64) * 30
    with torch.no_grad():
        fast = layer.forward_with_log_det(_fresh(x))
        assert (fast[1] - unclamped.forward_with_log_det(_fresh(x))[1]).abs().max() > 1.0
    slow = layer.forward_with_log_det(_fresh(x).requires_grad_())
    torch.testing.assert_close(fast[0], slow[0].detach(), rtol=0, atol=0)
    torch.testing.assert_close(fast[1], slow[1].detach(), rtol=0, atol=0)
    ref = fb.to_numpy(spec, params).layers[0].forward_with_log_det(x.numpy())
    np.testing.assert_allclose(fast[1].numpy(), ref[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("embedded", [False, True])
def test_conditional_flow_at_a_context_is_one_compose_transform(embedded):
    """ConditionalFlow: the state_dict keys of a ConditionalComposeTransformModule of the
    layers, ``condition(c)`` a ComposeTransformModule of the layers at c (``.parts``)
    that equals them applied one by one, caches its last pair and checks c once."""
    from pyro.distributions.conditional import ConditionalComposeTransformModule
    from pyro.distributions.torch_transform import ComposeTransformModule

    extra = {"context_embedding": {"features": 4, "hidden": [5]}} if embedded else {}
    spec = fb.realnvp(5, num_couplings=3, hidden=(8,), context_dim=3, **extra)
    flow = fb.to_pyro(spec, fb.init_params(spec, 1, init="random"), dtype=torch.float64)
    layers = flow.layers if embedded else flow
    assert type(layers).__name__ == "ConditionalFlow"
    plain = ConditionalComposeTransformModule(list(layers))
    assert list(layers.state_dict()) == list(plain.state_dict())
    x = torch.randn(4, 5, dtype=torch.float64)
    c = torch.randn(4, 3, dtype=torch.float64)
    at = flow.condition(c)
    assert isinstance(at, ComposeTransformModule) and len(at.parts) == len(layers)
    features = flow.embedding(c) if embedded else c
    y, log_det = _fresh(x), 0.0
    for layer in layers:
        part = layer.condition(features) if hasattr(layer, "condition") else layer
        z = part(_fresh(y))
        log_det = log_det + part.log_abs_det_jacobian(_fresh(y), z)
        y = z
    got = at(x)
    torch.testing.assert_close(got, y, rtol=1e-12, atol=1e-12)
    assert at(x) is got and at.inv(got) is x
    torch.testing.assert_close(at.log_abs_det_jacobian(x, got), log_det)
    torch.testing.assert_close(at.inv(_fresh(got)), x, rtol=1e-10, atol=1e-10)
    assert list(at.state_dict()) == [k for k in at.state_dict() if not k.startswith("flow.")]
    with pytest.raises(ValueError, match="context: expected shape"):
        flow.condition(torch.zeros(4, 2, dtype=torch.float64))(_fresh(x))


def test_peephole_rules_on_hand_built_programs():
    """In place only where the activation's argument is a dense output that nothing else
    reads; one split only for two slices that cut one value at one bound. The program
    with the peepholes computes what it computes without them."""
    from flowbridge import codegen, ir
    from flowbridge.backends.pyro.emit import PyroEmitter as emit

    ops = ir.ops
    x = ir.source("x", (6,), batched=True)
    kernel, bias = ir.source("kernel", (6, 6)), ir.source("bias", (6,))
    dense = ops.linear(x, kernel, bias)
    outputs = [
        (ops.relu(ops.linear(x, kernel, bias)), "once"),  # read once: in place
        (ops.relu(dense) + dense, "twice"),  # the dense output read twice: a fresh relu
        (ops.relu(x * 2.0), "not_dense"),  # not a dense output: a fresh relu
        (ops.concat(ops.slice(x, axis=-1, start=None, stop=2),
                    ops.slice(x, axis=-1, start=2, stop=None), axis=-1), "cut"),
        (ops.slice(x, axis=-1, start=3, stop=None), "alone"),  # no head at 3: a slice
    ]  # fmt: skip
    reserved = {"x", "kernel", "bias"}
    fast = codegen.emit_body(outputs, reserved, emit.OPS, (), emit.IN_PLACE, emit.SPLIT)
    plain = codegen.emit_body(outputs, reserved, emit.OPS)
    text = "\n".join(fast)
    assert text.count("torch.relu_(") == 1 and text.count("torch.relu(") == 2
    assert text.count(".split([2, 4], dim=-1)") == 1 and "x[..., 3:]" in text
    assert "relu_" not in "\n".join(plain) and ".split(" not in "\n".join(plain)
    names = [name for _, name in outputs]
    args = (torch.randn(3, 6, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64),
            torch.randn(6, dtype=torch.float64))  # fmt: skip
    results = []
    for lines in (fast, plain):
        body = "".join(f"    {ln}\n" for ln in lines)
        namespace = {"torch": torch}
        exec(f"def f(x, kernel, bias):\n{body}    return {', '.join(names)}\n", namespace)
        results.append(namespace["f"](*(a.clone() for a in args)))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


STATE_DICTS = sorted((Path(__file__).parent / "data" / "state_dicts").glob("*.pt"))


@pytest.mark.parametrize("path", STATE_DICTS, ids=lambda p: p.stem)
def test_state_dicts_saved_by_earlier_modules_load(path):
    """A state_dict saved by the generated modules of 865950a loads strictly into
    today's, and holds the weights it was saved with."""
    torch = pytest.importorskip("torch")
    saved = torch.load(path, weights_only=True)
    spec = fb.FlowSpec.from_dict(saved["spec"])
    dtype = next(iter(saved["state_dict"].values())).dtype
    flow = fb.to_pyro(spec, dtype=dtype)
    flow.load_state_dict(saved["state_dict"], strict=True)
    want = fb.init_params(spec, 7, init="random")
    got = fb.params_from_pyro(flow)
    assert got.keys() == want.keys()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value.astype(got[name].dtype), err_msg=name)
