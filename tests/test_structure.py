"""The structure every layer builds on: class identity from emitted text, shapes through
planning and the IR, parameter initialisation stated once, one backend registry."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B
from flowbridge import codegen, ir, layers
from flowbridge import spec as S
from flowbridge.ir import ops

from .cases import CASES

PACKAGE = Path(fb.__file__).parent


# ------------------------------------------------------------------ class identity
def _two_scalings():
    return fb.FlowSpec(name="two", event_shape=(3,), layers=[S.Scaling(), S.Scaling()])


def _classes(code: str) -> list[str]:
    return [c for c in re.findall(r"^class (\w+)\(_Layer\):", code, flags=re.M) if c != "Flow"]


def test_layers_with_identical_bodies_share_a_class():
    assert _classes(fb.generate(_two_scalings(), "numpy")) == ["Scaling"]


@pytest.mark.parametrize("backend", B.NAMES)
def test_layers_whose_bodies_differ_never_share_a_class(monkeypatch, backend):
    """A configuration that no hand-kept key or variant word sees (same paper name,
    words, docstring and fields) still gets its own class when its traced body differs."""
    calls = []

    def planner(layer, shape, context=0):
        plan = layers.plan_scaling(layer, shape)
        calls.append(shape)
        if len(calls) % 2:  # the second layer of each flow keeps the real body
            return plan

        def doubled(p, x):
            y, log_det = plan.forward(p, x)
            return y * 2.0, log_det

        return dataclasses.replace(plan, forward=doubled)

    monkeypatch.setitem(layers.REGISTRY, "scaling", planner)
    code = fb.generate(_two_scalings(), backend)
    assert _classes(code) == ["ScalingV1", "ScalingV2"]
    calls_in_build = re.findall(r"^ {8}(Scaling\w*)\(", code, flags=re.M)
    assert calls_in_build == ["ScalingV1", "ScalingV2"]
    if backend == "numpy":  # and the module does what each layer's body says
        module = codegen.load(code, backend, "0" * 64)
        x = np.random.default_rng(0).standard_normal((4, 3))
        y = module.build_flow().forward(x)
        np.testing.assert_array_equal(y, 2.0 * x)


def test_every_class_docstring_states_its_configuration():
    for factory in CASES.values():
        code = fb.generate(factory(), "numpy")
        for body in code.split("\nclass ")[1:]:
            if body.startswith(("_", "Flow(", "EmbeddedFlow(")):
                continue
            assert "Configuration: " in body.split('"""')[1], body[:200]


# ------------------------------------------------------------------ shapes
def test_plan_flow_threads_each_layers_output_shape_to_the_next(monkeypatch):
    """The spec's layer models say each layer's output shape (a squeeze's, say); planning
    hands it to the next layer."""
    seen = []

    def widening(layer, shape, context=0):  # a stand-in for a squeeze: the output shape differs
        seen.append(shape)
        return dataclasses.replace(layers.plan_scaling(layer, shape), output_shape=(5,))

    monkeypatch.setitem(layers.REGISTRY, "scaling", widening)
    monkeypatch.setattr(S.Scaling, "output_shape", lambda self, shape: (5,))
    spec = fb.FlowSpec(name="w", event_shape=(3,), layers=[S.Scaling(), S.Scaling()])
    plans = layers.plan_flow(spec)
    assert seen == [(3,), (5,)]
    assert [p.event_shape for p in plans] == [(3,), (5,)]


def test_a_definition_whose_output_shape_is_wrong_fails_when_traced(monkeypatch):
    def wrong(layer, shape, context=0):
        return dataclasses.replace(layers.plan_scaling(layer, shape), output_shape=(4,))

    monkeypatch.setitem(layers.REGISTRY, "scaling", wrong)
    with pytest.raises(ir.ShapeError, match=r"Scaling forward: y has shape \(\*batch, 3\), "
                       r"expected \(\*batch, 4\)"):  # fmt: skip
        fb.generate(fb.FlowSpec(name="w", event_shape=(3,), layers=[S.Scaling()]), "numpy")


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
def test_ir_ops_refuse_shapes_that_do_not_fit(build, message):
    with pytest.raises(ir.ShapeError, match=message):
        build()


def test_ir_ops_infer_shapes():
    x = _x()
    assert ops.slice(x, axis=-2, start=1, stop=None).shape == (2, 2, 4)
    assert ops.take(x, ir.source("i", value=[1, 0, 1, 1]), axis=-3).shape == (4, 3, 4)
    assert ops.concat(x, _x((2, 3, 1)), axis=-1).shape == (2, 3, 5)
    assert ops.linear(x, ir.source("k", (4, 7)), ir.source("b", (7,))).shape == (2, 3, 7)
    total = ops.sum_event(x, event_ndims=3)
    assert (total.shape, total.batched) == ((), True)
    assert (x * ir.source("w", (3, 1))).shape == (2, 3, 4)


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


@pytest.mark.parametrize("backend", B.NAMES)
def test_axis_and_event_ndims_ops_run_in_every_backend(backend):
    """The emitted text of each op for an axis other than the last and a rank-3 event,
    run in the framework, against NumPy written by hand."""
    B.get(backend).require()
    lines = codegen.emit_body(_rank3_program(), {"x", "idx", "w"}, B.get(backend).emitter().OPS)
    code = "def program(x, idx, w):\n" + "".join(f"    {ln}\n" for ln in lines)
    code += "    return out, total\n"
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 2, 3, 4)), rng.standard_normal((3, 4))
    if backend == "pyro":
        import torch

        namespace, args = {"torch": torch}, (torch.tensor(x), torch.tensor([1, 0]), torch.tensor(w))
    elif backend == "tfp":
        import tensorflow as tf

        namespace, args = {"tf": tf}, (tf.constant(x), tf.constant([1, 0]), tf.constant(w))
    else:
        namespace, args = {"np": np}, (x, np.array([1, 0]), w)
    exec(compile(code, "<rank3>", "exec"), namespace)
    out, total = (np.asarray(v) for v in namespace["program"](*args))
    want_out, want_total = _expected(x, w)
    np.testing.assert_allclose(out, want_out, rtol=1e-13)
    assert out.shape == want_out.shape and total.shape == (5,)
    np.testing.assert_allclose(total, want_total, rtol=1e-13)


# ------------------------------------------------------------------ initialisation
@pytest.mark.parametrize("case", sorted(CASES))
def test_generated_init_table_is_the_plans_rule(case):
    spec = CASES[case]()
    module = codegen.load(fb.generate(spec, "numpy"), "numpy", spec.hash)
    shapes = fb.param_shapes(spec)
    last = {}  # layer -> its conditioner's last kernel (names come in order)
    for name in shapes:
        if name.endswith(".kernel") and ".conditioner." in name:  # the embedding's: none zero
            last[name.split(".conditioner.")[0]] = name
    # the rules, written out here independently of the plans that state them
    want = {name: shape[0] ** -0.5 if name.endswith(".kernel") and name not in last.values()
            else 0.0 for name, shape in shapes.items()}  # fmt: skip
    assert module.PARAM_INIT == want
    for p in layers.param_specs(spec).values():
        if p.init.fan_in is not None:
            assert p.init.fan_in == p.shape[0]


@pytest.mark.parametrize("backend", B.NAMES)
def test_generated_modules_start_each_weight_by_its_stated_rule(backend):
    """Every weight the generated module draws itself lies within its bound, is zero
    exactly where the bound is 0, and spreads over its bound where it is not."""
    B.get(backend).require()
    spec = fb.realnvp(6, hidden=(32, 32), permutation="random")
    params = layers.param_specs(spec)
    if backend == "pyro":
        values = fb.params_from_pyro(fb.to_pyro(spec))
    elif backend == "tfp":
        values = fb.params_from_tfp(fb.to_tfp(spec))
    else:
        flow = fb.to_numpy(spec)
        values = sys.modules[type(flow).__module__].neutral_params(flow)
    assert values.keys() == params.keys()
    for name, p in params.items():
        v = np.abs(np.asarray(values[name], dtype=np.float64))
        if p.init.bound == 0.0:
            assert not v.any(), name
        else:
            assert v.max() <= p.init.bound and v.max() > 0.5 * p.init.bound, name


def test_init_params_draws_each_parameter_by_its_rule():
    spec = fb.realnvp(6, hidden=(32,))
    params = layers.param_specs(spec)
    for init in ("identity", "random"):
        drawn = fb.init_params(spec, seed=3, init=init)
        for name, p in params.items():
            rule = p.init if init == "identity" else p.random_init
            v = np.abs(drawn[name])
            assert v.max() <= rule.bound and (rule.bound == 0.0) == (not v.any()), name


# ------------------------------------------------------------------ one registry
#: Modules that once listed backends or branched on a backend's name. They may still
#: name one backend in a function made for it (``to_pyro``), never compare a name or
#: list several: the registry is the one list.
READERS = ["codegen.py", "check.py", "build.py", "params.py", "cli.py", "layers.py", "ir.py"]


@pytest.mark.parametrize("module", READERS)
def test_no_module_outside_the_registry_lists_backends_or_branches_on_one(module):
    text = (PACKAGE / module).read_text()
    name = rf"""["']({"|".join(B.NAMES)})["']"""
    patterns = [rf"[=!]=\s*{name}", rf"{name}\s*[=!]=", rf"{name}\s*,\s*{name}",
                rf"\bin\s*[(\[{{]\s*{name}", rf"startswith\(\s*{name}", rf"{name}\s*:"]  # fmt: skip
    for pattern in patterns:
        assert not re.search(pattern, text), (module, pattern)


def test_the_registry_declares_every_backend_folder():
    folders = {p.name for p in (PACKAGE / "backends").iterdir() if (p / "emit.py").exists()}
    assert folders == set(B.NAMES)
    for backend in B.BACKENDS.values():
        assert backend.emitter().OPS.keys() == ir.OPS.keys()
        if backend.available():
            runtime = backend.runtime()
            for function in ("prepare", "layers_of", "devices", "unavailable_devices", "build",
                             "forward", "inverse", "round_trip", "jacobian_log_det"):  # fmt: skip
                assert callable(getattr(runtime, function)), (backend.name, function)
    assert [b.name for b in B.BACKENDS.values() if b.reference] == [B.REFERENCE] == ["numpy"]


# ------------------------------------------------------------------ spec models
def test_a_coupling_whose_mask_does_not_fit_reports_the_mask_alone():
    """Each layer model checks itself; a mask that does not fit the event hides the
    layer's other rules, as before the checks moved onto the models."""
    layer = {"type": "affine_coupling", "mask": {"kind": "split", "size": 4},
             "scale": {"kind": "clamp", "low": 1.0, "high": -1.0}}  # fmt: skip
    with pytest.raises(fb.SpecError) as info:
        fb.FlowSpec.from_dict({"event_shape": [4], "layers": [layer]})
    assert [path for path, _ in info.value.errors] == ["layers[0].mask.size"]
    layer["mask"] = {"kind": "split", "size": 2}
    with pytest.raises(fb.SpecError) as info:
        fb.FlowSpec.from_dict({"event_shape": [4], "layers": [layer]})
    assert [path for path, _ in info.value.errors] == ["layers[0].scale.high"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_spec_weight_count_agrees_with_the_plans(case):
    """The ceilings count weights by arithmetic before anything is planned; the count
    must be what the plans then declare (a coupling's outputs per entry, its context)."""
    spec = CASES[case]()
    assert S.param_count(spec) == sum(int(np.prod(s)) for s in fb.param_shapes(spec).values())


def test_class_names_stay_readable_when_the_words_are_long():
    """Fuzz finding: clamp bounds of 17 digits made a class name ruff had to wrap."""
    def coupling(low):
        return S.AffineCoupling(scale=S.ClampScale(low=low, high=1.0000000000000007),
                                conditioner=S.Conditioner(activation="leaky_relu",
                                                          negative_slope=0.5966148264305092))  # fmt: skip

    spec = fb.FlowSpec(name="long", event_shape=(2,),
                       layers=[coupling(7.226521230854894e-16), coupling(0.0)])  # fmt: skip
    code = fb.generate(spec, "numpy")
    assert _classes(code) == ["AffineCouplingV1", "AffineCouplingV2"]
    assert max(len(line) for line in code.splitlines()) <= codegen.WIDTH
