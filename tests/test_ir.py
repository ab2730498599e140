"""The IR (:mod:`flowbridge.ir`): each op checks and infers its operands' shapes while
tracing, the axis and ``event_ndims`` ops run alike in every backend, a definition whose
shapes do not fit fails before any code is emitted, and deep graphs trace without
recursion."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B
from flowbridge import codegen, ir, layers
from flowbridge import spec as S
from flowbridge.backends.contract import ContractError
from flowbridge.ir import ops


def _x(shape=(2, 3, 4)):
    return ir.source("x", shape, batched=True)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: _x() + ir.source("w", (3,)), "do not broadcast"),
        (lambda: _x() + ir.source("w", (5, 2, 3, 4)), "must broadcast into the batched"),
        (lambda: _x() + ir.source("x2", (3, 4), batched=True), "same event shape"),
        (lambda: ops.slice(_x(), axis=-4, start=0, stop=1), "axis must be negative"),
        (lambda: ops.slice(_x(), axis=1, start=0, stop=1), "axis must be negative"),
        (lambda: ops.slice(_x(), axis=-1, start=4, stop=None), "is empty"),
        (lambda: ops.take(_x(), ir.source("i", value=[0, 4]), axis=-1), "outside axis -1"),
        (lambda: ops.concat(_x(), _x((2, 2, 4)), axis=-1), "except along axis -1"),
        (lambda: ops.linear(_x(), ir.source("k", (3, 5)), ir.source("b", (5,))), "n_in"),
        (lambda: ops.sum_event(_x(), event_ndims=4), "at least 4 event dims"),
        (lambda: ops.sum_all(_x()), "unbatched"),
        (lambda: ops.batch_fill(ir.source("w", (3,)), _x(), event_ndims=3), "unbatched scalar"),
        (lambda: ops.exp(2.0), "not numbers"),
        (lambda: ops.linear(_x(), ir.source("k", (4, 5)), 0.0), "not numbers"),
        (lambda: ops.slice(_x(), axis=-1, start=ir.source("w", (3,)), stop=None), "start must"),
        (lambda: ops.slice(_x(), axis=-1, start=0.5, stop=None), "start must"),
    ],
)
def test_ops_refuse_shapes_that_do_not_fit(build, message):
    with pytest.raises(ir.ShapeError, match=message):
        build()


def test_ops_infer_shapes():
    x = _x()
    assert ops.slice(x, axis=-2, start=1, stop=None).shape == (2, 2, 4)
    assert ops.take(x, ir.source("i", value=[1, 0, 1, 1]), axis=-3).shape == (4, 3, 4)
    assert ops.concat(x, _x((2, 3, 1)), axis=-1).shape == (2, 3, 5)
    assert ops.linear(x, ir.source("k", (4, 7)), ir.source("b", (7,))).shape == (2, 3, 7)
    total = ops.sum_event(x, event_ndims=3)
    assert (total.shape, total.batched) == ((), True)
    assert (x * ir.source("w", (3, 1))).shape == (2, 3, 4)


def test_a_definition_whose_output_shape_is_wrong_fails_when_traced(monkeypatch):
    def wrong(layer, shape, context=0):
        return dataclasses.replace(layers.plan_scaling(layer, shape), output_shape=(4,))

    monkeypatch.setitem(layers.REGISTRY, "scaling", wrong)
    with pytest.raises(ir.ShapeError, match=r"Scaling forward: y has shape \(\*batch, 3\), "
                       r"expected \(\*batch, 4\)"):  # fmt: skip
        fb.generate(fb.FlowSpec(name="w", event_shape=(3,), layers=[S.Scaling()]), "numpy")


def test_directions_calling_one_method_with_different_bodies_is_a_definition_error(monkeypatch):
    """Not a shape fault: a DefinitionError (a ValueError), naming the class and method."""

    def differing(layer, shape, context=0):
        plan = layers.plan_scaling(layer, shape)

        def forward(p, x):
            y = ir.call("m", ops.tanh, ("h",), x)
            return y, ops.batch_zeros(x, event_ndims=1)

        def inverse(p, y):
            x = ir.call("m", ops.exp, ("h",), y)
            return x, ops.batch_zeros(y, event_ndims=1)

        return dataclasses.replace(plan, forward=forward, inverse=inverse)

    monkeypatch.setitem(layers.REGISTRY, "scaling", differing)
    spec = fb.FlowSpec(name="w", event_shape=(3,), layers=[S.Scaling()])
    with pytest.raises(ir.DefinitionError, match="Scaling: the directions call m with bodies"):
        fb.generate(spec, "numpy")
    assert not issubclass(ir.DefinitionError, ir.ShapeError)


@pytest.mark.parametrize("name", ["dense_kernel", "dense_bias"])
def test_a_parameter_may_not_take_the_name_of_a_view_accessor(name):
    param = layers.Param((3,), layers.ZEROS, layers.Init.uniform(0.3))
    with pytest.raises(AttributeError, match=f"may not be named {name!r}"):
        layers.View({name: param}, {})


def test_parameters_named_kernel_and_bias_are_the_parameters_not_the_dense_accessors():
    param = layers.Param((3,), layers.ZEROS, layers.Init.uniform(0.3))
    view = layers.View({"kernel": param, "bias": param}, {})
    assert isinstance(view.kernel, ir.Value) and view.kernel.node.attrs["expr"] == "self.kernel"
    assert isinstance(view.bias, ir.Value) and view.bias.shape == (3,)


@pytest.mark.parametrize("backend", B.NAMES)
def test_a_field_kind_an_emitter_does_not_store_is_refused_by_name(backend, monkeypatch):
    def odd(layer, shape, context=0):
        plan = layers.plan_scaling(layer, shape)
        return dataclasses.replace(plan, fields=(layers.Field("tensor4", "log_scale"),))

    monkeypatch.setitem(layers.REGISTRY, "scaling", odd)
    spec = fb.FlowSpec(name="w", event_shape=(3,), layers=[S.Scaling()])
    with pytest.raises(ContractError, match="no field of kind 'tensor4': it stores dense, conv"):
        fb.generate(spec, backend)


def _rank3_program():
    """Every structural op along a non-last axis and over a rank-3 event."""
    x, idx, w = _x(), ir.source("idx", value=[1, 0]), ir.source("w", (3, 4))
    a = ops.slice(x, axis=-2, start=1, stop=None)  # (2, 2, 4)
    b = ops.slice(ops.take(x, idx, axis=-3), axis=-2, start=None, stop=2)  # (2, 2, 4)
    c = ops.concat(a, b, axis=-1) * 1.5  # (2, 2, 8)
    d = ops.concat(c, ops.slice(c, axis=-3, start=None, stop=1), axis=-3)  # (3, 2, 8)
    total = ops.sum_event(d, event_ndims=3) + ops.batch_fill(ops.sum_all(w), x, event_ndims=3)
    return [(d, "out"), (total + ops.batch_zeros(x, event_ndims=3), "total")]


def _expected(x, w):
    a = x[..., 1:, :]
    b = x[..., [1, 0], :, :][..., :2, :]
    c = np.concatenate([a, b], axis=-1) * 1.5
    d = np.concatenate([c, c[..., :1, :, :]], axis=-3)
    return d, d.sum((-3, -2, -1)) + w.sum()


def _run(backend, outputs, inputs):
    """The emitted text of ``outputs`` (``[(Value, name)]``) as a function of ``inputs``
    (name -> float64 or integer NumPy array), run in ``backend``'s framework in float64:
    the outputs as NumPy arrays."""
    B.get(backend).require()
    emitter = B.get(backend).emitter()
    lines = codegen.emit_body(outputs, set(inputs), emitter.OPS)
    code = f"def program({', '.join(inputs)}):\n" + "".join(f"    {ln}\n" for ln in lines)
    code += f"    return {', '.join(name for _, name in outputs)},\n"
    namespace = {}
    helpers = {name for op, names in emitter.OP_HELPERS.items() for name in names}
    if backend == "pyro":
        import torch

        namespace["torch"], args = torch, [torch.tensor(v) for v in inputs.values()]
    elif backend == "tfp":
        import tensorflow as tf

        namespace["tf"], args = tf, [tf.constant(v) for v in inputs.values()]
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        namespace.update(jax=jax, jnp=jnp)
        args = list(inputs.values())
    else:
        args = list(inputs.values())
    namespace["np"] = np
    prelude = vars(importlib.import_module(f"flowbridge.backends.{backend}.prelude"))
    namespace.update({name: prelude[name] for name in helpers})
    exec(compile(code, "<program>", "exec"), namespace)
    x64 = __import__("jax").enable_x64(True) if backend == "jax" else contextlib.nullcontext()
    with x64:  # JAX computes in float64 only in its 64-bit mode
        if backend == "jax":
            args = [namespace["jnp"].asarray(v) for v in args]
        return [np.asarray(v) for v in namespace["program"](*args)]


@pytest.mark.parametrize("backend", B.NAMES)
@pytest.mark.no_generated_code("runs the backend's emitted op texts, not a generated module")
def test_axis_and_event_ndims_ops_run_in_every_backend(backend):
    """The emitted text of each op for an axis other than the last and a rank-3 event,
    run in the framework, against NumPy written by hand."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 2, 3, 4)), rng.standard_normal((3, 4))
    out, total = _run(backend, _rank3_program(), {"x": x, "idx": np.array([1, 0]), "w": w})
    want_out, want_total = _expected(x, w)
    np.testing.assert_allclose(out, want_out, rtol=1e-13)
    assert out.shape == want_out.shape and total.shape == (5,)
    np.testing.assert_allclose(total, want_total, rtol=1e-13)


def _inputs():
    """x (*batch, 3, 4) batched, w (3, 4) positive, edges (3, 4, 6) increasing with x's
    entries on, between and outside them, values (3, 4, 5), i (*batch, 3, 4) indices,
    m (3, 3) a full matrix with a dominant diagonal."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 4)) * 2
    edges = np.sort(rng.uniform(-3, 3, (3, 4, 6)), axis=-1)
    x[0] = edges[..., 2]  # exactly on a knot
    x[1, 0, :] = [-9.0, 9.0, edges[0, 2, 0], edges[0, 3, -1]]  # outside, on the ends
    return {"x": x, "w": rng.uniform(0.5, 2.0, (3, 4)), "edges": edges,
            "values": rng.standard_normal((3, 4, 5)),
            "i": rng.integers(0, 5, (5, 3, 4)),
            "m": rng.standard_normal((3, 3)) + 3 * np.eye(3)}  # fmt: skip


def _sources(inputs):
    return {"x": ir.source("x", (3, 4), batched=True), "w": ir.source("w", (3, 4)),
            "edges": ir.source("edges", (3, 4, 6)), "values": ir.source("values", (3, 4, 5)),
            "i": ir.source("i", (3, 4), batched=True, dtype="int"), "m": ir.source("m", (3, 3))}  # fmt: skip


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _bucket(edges, x):
    return np.clip(np.sum(x[..., None] >= edges, axis=-1) - 1, 0, edges.shape[-1] - 2)


#: op -> (the program over the sources, the same written in NumPy by hand)
_OP_CASES = {
    "div": (lambda s: s["x"] / s["w"] + 2.0 / s["w"], lambda a: a["x"] / a["w"] + 2.0 / a["w"]),
    "sqrt": (lambda s: ops.sqrt(s["w"]) * s["x"], lambda a: np.sqrt(a["w"]) * a["x"]),
    "abs": (lambda s: ops.abs(s["x"]), lambda a: np.abs(a["x"])),
    "softplus": (lambda s: ops.softplus(s["x"] * 30.0),
                 lambda a: np.log1p(np.exp(-np.abs(30 * a["x"]))) + np.maximum(30 * a["x"], 0)),
    "clamp": (lambda s: ops.clamp(s["x"], low=-0.5, high=0.7), lambda a: np.clip(a["x"], -0.5, 0.7)),
    "less": (lambda s: ops.where(ops.less(s["x"], s["w"] - 1.0), s["x"], 2.0),
             lambda a: np.where(a["x"] < a["w"] - 1, a["x"], 2.0)),
    "less_equal": (lambda s: ops.where(ops.less_equal(0.3, s["x"]), 1.0, s["w"]),
                   lambda a: np.where(0.3 <= a["x"], 1.0, a["w"] + 0 * a["x"])),
    "where": (lambda s: ops.where(ops.less(s["x"], 0.0), s["w"], s["x"]),
              lambda a: np.where(a["x"] < 0, a["w"], a["x"])),
    "softmax": (lambda s: ops.softmax(s["x"] * 100.0),
                lambda a: _softmax(100 * a["x"])),
    "cumsum": (lambda s: ops.cumsum(s["x"]), lambda a: np.cumsum(a["x"], axis=-1)),
    "pad": (lambda s: ops.pad(s["x"], before=1, after=2, value=0.5),
            lambda a: np.concatenate([np.full((5, 3, 1), 0.5), a["x"], np.full((5, 3, 2), 0.5)], -1)),
    "bucket": (lambda s: ops.gather(s["edges"], ops.bucket(s["edges"], s["x"])),
               lambda a: np.take_along_axis(np.broadcast_to(a["edges"], (5, 3, 4, 6)),
                                            _bucket(a["edges"], a["x"])[..., None], -1)[..., 0]),
    "gather": (lambda s: ops.gather(s["values"], s["i"]),
               lambda a: np.take_along_axis(np.broadcast_to(a["values"], (5, 3, 4, 5)),
                                            a["i"][..., None], -1)[..., 0]),
    "reshape": (lambda s: ops.reshape(s["x"], shape=(12,)), lambda a: a["x"].reshape(5, 12)),
    "transpose": (lambda s: ops.reshape(ops.transpose(ops.reshape(s["x"], shape=(3, 2, 2)),
                                                      perm=(2, 0, 1)), shape=(3, 4)),
                  lambda a: a["x"].reshape(5, 3, 2, 2).transpose(0, 3, 1, 2).reshape(5, 3, 4)),
    # a triangular solve reads one triangle of m: the other holds entries it must ignore
    "solve_triangular": (
        lambda s: ops.matvec(ops.solve_triangular(
            s["m"], ops.solve_triangular(s["m"], s["m"], lower=True), lower=False), s["x"], axis=-2),
        lambda a: np.einsum("ij,...jk->...ik", np.linalg.solve(
            np.triu(a["m"]), np.linalg.solve(np.tril(a["m"]), a["m"])), a["x"])),
    "matmul": (lambda s: ops.matvec(ops.matmul(s["m"], s["m"] * 2.0), s["x"], axis=-2),
               lambda a: np.einsum("ij,...jk->...ik", a["m"] @ (2 * a["m"]), a["x"])),
    "matvec": (lambda s: ops.matvec(ops.matmul(ops.transpose(s["w"], perm=(1, 0)), s["w"]),
                                    s["x"], axis=-1),
               lambda a: a["x"] @ (a["w"].T @ a["w"]).T),
}


def test_every_op_added_for_splines_has_a_case():
    assert set(_OP_CASES) >= {"div", "sqrt", "abs", "softplus", "softmax", "cumsum", "less",
                              "less_equal", "where", "bucket", "gather", "pad", "reshape"}  # fmt: skip


@pytest.mark.parametrize("backend", B.NAMES)
@pytest.mark.parametrize("op", sorted(_OP_CASES))
@pytest.mark.no_generated_code("runs the backend's emitted op texts, not a generated module")
def test_op_runs_in_every_backend_as_numpy_computes_it(op, backend):
    """Each op's emitted text, run in the framework in float64, against NumPy written by
    hand (inputs on, between and outside a bucket search's edges); its inferred shape is
    the result's."""
    inputs = _inputs()
    program, numpy = _OP_CASES[op]
    value = program(_sources(inputs))
    (out,) = _run(backend, [(value, "out")], inputs)
    want = numpy(inputs)
    assert out.shape == want.shape == (5, *value.shape) and value.batched
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ops.where(_x(), _x(), _x()), "argument 1 must be a bool tensor, got float"),
        (lambda: ops.gather(_x(), _x()), "argument 2 must be a int tensor, got float"),
        (lambda: ops.exp(ops.bucket(ir.source("e", (4, 5)), _x())), "must be a float tensor"),
        (lambda: ops.bucket(ir.source("e", (1,)), _x()), "K >= 1 buckets"),
        (lambda: ops.bucket(ir.source("e", (3, 5)), _x()), "do not broadcast"),
        (lambda: ops.softmax(ir.source("s", ())), "at least one static dim"),
        (lambda: ops.pad(_x(), before=-1, after=0, value=0.0), "counts >= 0"),
        (lambda: ops.pad(_x(), before=1, after=0, value="0"), "must be a number"),
        (lambda: ops.reshape(_x(), shape=(5, 5)), "24 entries in all"),
        (lambda: ops.transpose(_x(), perm=(0, 0, 1)), "a permutation of the 3 static dims"),
        (lambda: ops.clamp(_x(), low=1.0, high=0.0), "low < high"),
        (lambda: ops.where(1.0, _x(), _x()), "not numbers"),
        (lambda: ops.softplus(1.0), "not numbers"),
        (lambda: ops.matmul(_x(), ir.source("m", (4, 4))), "expected a an unbatched matrix"),
        (lambda: ops.matmul(ir.source("a", (3, 2)), ir.source("b", (3, 2))), "a \\(n, k\\)"),
        (lambda: ops.solve_triangular(ir.source("a", (3, 2)), ir.source("b", (3, 2)), lower=True),
         "a square a"),
        (lambda: ops.solve_triangular(ir.source("a", (2, 2)), ir.source("b", (2, 2)), lower=1),
         "lower must be True or False"),
        (lambda: ops.matvec(ir.source("m", (3, 3)), _x(), axis=-1), "a matrix \\(m, 4\\)"),
    ],
)
def test_new_ops_refuse_dtypes_and_shapes_that_do_not_fit(build, message):
    with pytest.raises(ir.ShapeError, match=message):
        build()


def test_ops_carry_dtypes():
    x = _x()
    edges = ir.source("e", (4, 5))
    assert ops.less(x, 1.0).node.dtype == "bool" and ops.bucket(edges, x).node.dtype == "int"
    assert ops.gather(edges, ops.bucket(edges, x)).node.dtype == "float"
    assert ir.source("i", value=[0, 1]).node.dtype == "int"
    assert ir.OPS["where"].inputs == ("bool", "float", "float")


def test_a_500_layer_conditioner_traces_and_emits_without_recursion():
    """A graph 1,000 nodes deep (500 hidden layers) traces, emits and runs: nothing
    walks the IR recursively."""
    spec_data = {"event_shape": [4], "layers": [{"type": "affine_coupling",
                                                 "conditioner": {"hidden": [2] * 500}}]}  # fmt: skip
    with fb.limits(depth=1000):
        spec = fb.FlowSpec.from_dict(spec_data)
        code = fb.generate(spec, "numpy")
    compile(code, "<generated>", "exec")
    flow = fb.to_numpy(spec, fb.init_params(spec, 0, init="random"))
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_allclose(flow.inverse(flow.forward(x)), x, atol=1e-10)


def test_a_loop_checks_its_step_and_count():
    """``ir.loop``: the step must give a value shaped as the state, and the count is an
    int >= 0 or a static int; its method is traced once whatever the count."""
    x = ir.source("x", (3,), batched=True)
    out = ir.loop("step", lambda s, v: ir.ops.tanh(s) + v, ("state", "x"), 5, x, x)
    assert (out.node.op, out.shape, out.batched, out.node.attrs["count"]) == ("loop", (3,), True, 5)
    assert ir.functions(ir.reachable([out]))["step"][0].kind == "loop"
    with pytest.raises(ir.ShapeError, match="the body must give a value like the state"):
        ir.loop("step", lambda s, v: ir.ops.slice(s, axis=-1, start=None, stop=2), ("s", "x"), 2, x, x)
    with pytest.raises(ir.ShapeError, match="count must be an int >= 0"):
        ir.loop("step", lambda s, v: s + v, ("s", "x"), -1, x, x)
    with pytest.raises(TypeError, match="2 parameter names for 3 arguments"):
        ir.loop("step", lambda s, v, w: s, ("s", "x"), 1, x, x, x)
