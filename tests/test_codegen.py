"""Code generation (:mod:`flowbridge.codegen`): class identity from emitted text, class
names and docstrings, value names, the parameter-init table, and the constant printer."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B
from flowbridge import codegen, layers
from flowbridge import spec as S

from .cases import CASES, EXAMPLES


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
            if body.startswith(("_", "Flow(", "ConditionalFlow(", "EmbeddedFlow(")):
                continue
            assert "Configuration: " in body.split('"""')[1], body[:200]


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


def test_generated_names_read_like_the_paper():
    code = fb.generate(fb.load_spec(EXAMPLES / "realnvp_d3_pyro_clamp.yaml"), "pyro")
    assert re.findall(r"^class (\w+)", code, re.M) == [
        "_Layer", "Flow", "AffineCouplingSplitFirst", "AffineCouplingSplitLast"]  # fmt: skip
    assert not re.search(r"^\s+t(_\d+)? = ", code, re.M)  # no anonymous temporaries
    assert "x_b_scaled = x_b * scale" in code and "y_b = x_b_scaled + shift" in code
    assert "y_b = x_b * scale + shift" in code  # the docstring uses the body's names
    assert "Configuration: the first entries pass through" in code


# ------------------------------------------------------------------ initialisation table
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


# ------------------------------------------------------------------ constants
def test_constants_are_bounded_and_the_printer_refuses_non_finite_values():
    from flowbridge.codegen import number

    with pytest.raises(ValueError, match="non-finite"):
        number(float("inf"))
    with pytest.raises(ValueError, match="non-finite"):
        number(float("nan"))
    assert number(1e308) == "1e308" and number(1e-5) == "1e-05"
    for bad in ({"kind": "soft_clamp", "bound": 1e38}, {"kind": "clamp", "low": -1e-39},
                {"kind": "sigmoid", "offset": 1e39}):  # fmt: skip
        with pytest.raises(fb.SpecError, match=f"layers\\[0\\].scale.{list(bad)[1]}: expected"):
            fb.FlowSpec.from_dict({"event_shape": [4], "layers": [{"type": "affine_coupling",
                                                                   "scale": bad}]})  # fmt: skip
    # the largest allowed constants give the same results in every backend
    spec = fb.FlowSpec(event_shape=(4,), layers=[fb.AffineCoupling(scale=fb.SoftClampScale(
        bound=8.5e37), conditioner=fb.Conditioner(hidden=(8,)))])  # fmt: skip
    assert fb.check(spec, dtypes=("float64",)).ok
