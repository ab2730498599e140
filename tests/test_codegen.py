"""Code generation (:mod:`flowbridge.codegen`): class identity from emitted text, class
names and docstrings, value names, the parameter-init table, and the constant printer."""

from __future__ import annotations

import dataclasses
import json
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


# ------------------------------------------------------------ code that reads like the paper
def _class_text(code: str, name: str) -> str:
    match = re.search(rf"^class {name}\(.*?(?=^class |^def )", code, re.S | re.M)
    assert match, name
    return match.group(0)


@pytest.mark.parametrize("backend", B.NAMES)
def test_the_conditioner_is_written_once_per_class(backend):
    """Each coupling class has one ``conditioner`` method that both directions call; the
    dense layers are not unrolled into either body."""
    spec = fb.load_spec(EXAMPLES / "realnvp_d3_pyro_clamp.yaml")
    code = fb.generate(spec, backend)
    text = _class_text(code, "AffineCouplingSplitFirst")
    depth = len(spec.layers[0].conditioner.hidden) + 1
    assert text.count("def conditioner(self, x_a):") == 1
    assert text.count("self.kernels[") == depth  # one use of each kernel, in the method
    assert text.count("self.conditioner(x_a)") == 1 and text.count("self.conditioner(y_a)") == 1


@pytest.mark.parametrize("backend", B.NAMES)
def test_image_classes_are_named_by_configuration_not_numbered(backend):
    code = fb.generate(fb.load_spec(EXAMPLES / "realnvp_image_c1_8x8.yaml"), backend)
    names = re.findall(r"^class (\w+)", code, re.M)
    assert not [n for n in names if re.search(r"V\d+$", n)], names
    assert {"AffineCouplingChannelFirst", "AffineCouplingChannelLast"} <= set(names)
    # the checkerboards on 1x8x8 and 4x4x4 share a class where their texts are equal
    # (NumPy's); where the channel count is written into them, the shape names them
    checkerboards = {n for n in names if n.startswith("AffineCouplingCheckerboard")}
    assert checkerboards in ({"AffineCouplingCheckerboard"},
                             {"AffineCouplingCheckerboardOn1x8x8",
                              "AffineCouplingCheckerboardOn4x4x4"})  # fmt: skip
    actnorm = fb.generate(fb.realnvp_image((3, 8, 8), actnorm=True), backend)
    assert not re.search(r"^class \w+V\d+\(", actnorm, re.M)


@pytest.mark.parametrize("backend", B.NAMES)
def test_constant_masks_are_built_once(backend):
    """A checkerboard's mask is computed in __init__ from its parities, not per call."""
    code = fb.generate(fb.load_spec(EXAMPLES / "realnvp_image_c1_8x8.yaml"), backend)
    name = re.search(r"^class (AffineCouplingCheckerboard\w*)\(", code, re.M).group(1)
    text = _class_text(code, name)
    init, rest = text.split("def conditioner", 1)
    assert "parity_diff = self.rows - self.cols" in init
    assert "parity_diff" not in rest and "x_a = x * self.mask" in rest


def test_pyro_masks_are_non_persistent_buffers():
    pytest.importorskip("pyro")
    spec = fb.load_spec(EXAMPLES / "realnvp_image_c1_8x8.yaml")
    flow = fb.to_pyro(spec, dtype="float64")
    layer = flow[0]
    assert layer.mask.dtype == layer.rows.dtype == __import__("torch").float64
    keys = flow.state_dict().keys()
    assert "0.rows" in keys and "0.mask" not in keys and "0.trans_mask" not in keys


def test_spec_json_is_split_between_tokens_only():
    spec = fb.load_spec(EXAMPLES / "realnvp_image_c1_8x8.yaml")
    code = fb.generate(spec, "numpy")
    block = code.split("SPEC_JSON = (\n", 1)[1].split("\n)", 1)[0]
    chunks = [eval(line.strip()) for line in block.splitlines()]  # noqa: S307 (literals)
    assert "".join(chunks) == json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    text, ends, at = "".join(chunks), set(), 0
    for token in codegen._JSON_TOKEN.findall(text):
        at += len(token)
        ends.add(at)
    cuts = [sum(map(len, chunks[: k + 1])) for k in range(len(chunks) - 1)]
    assert set(cuts) <= ends, "a chunk ends inside a JSON token"
    assert len(chunks) > 1 and all(len(c) <= 80 for c in chunks)


# ------------------------------------------------------------ the channels-last peephole
def _conditioner_text(code: str) -> str:
    start = code.index("    def conditioner(self, x_a):")
    return code[start : code.index("        return out", start)]


def test_a_resnet_conditioner_runs_channels_last_inside_in_tfp_alone():
    """TFP's ``CONV_LAYOUT``: the ResNet conditioner of an image coupling transposes its
    input to channels last once and its output back once; between them every
    convolution is channels last, the residual adds and ReLUs as they were. The other
    backends keep their one convolution op (channels first, or NumPy's)."""
    spec = fb.realnvp_image((3, 8, 8), num_scales=1, blocks=2, channels=4)
    text = _conditioner_text(fb.generate(spec, "tfp"))
    assert text.count("_channels_last(") == 1 and text.count("_channels_first(") == 1
    assert text.count("_conv2d_last(") == 6 and "_conv2d(" not in text
    assert text.count("tf.nn.relu(") == 5 and text.count(" + ") == 2
    for backend in ("pyro", "jax", "numpy"):
        other = _conditioner_text(fb.generate(spec, backend))
        assert "_conv2d(" in other and "_conv2d_last" not in other and "_channels" not in other


def test_the_layout_peephole_keeps_functions_it_cannot_move():
    """``conv_layouts`` moves only functions of convolutions and entry-by-entry ops of
    values computed inside, ending in a convolution that nothing inside reads."""
    from flowbridge import ir
    from flowbridge.ir import ops

    x = ir.source("x", (2, 4, 4), batched=True)
    k, b = ir.source("self.k", (3, 3, 2, 2)), ir.source("self.b", (2,))
    scale = ir.source("self.scale", (2, 1, 1))
    good = ir.Function(("x",), ops.conv2d(ops.relu(ops.conv2d(x, k, b)), k, b))
    assert sorted(codegen.conv_layouts(good).values()) == [("first", "last"), ("last", "first")]
    for output in (ops.relu(ops.conv2d(x, k, b)),  # ends in an entry-by-entry op
                   ops.conv2d(x, k, b) + x,  # a parameter read outside a convolution
                   ops.conv2d(ops.conv2d(x, k, b) * scale, k, b)):  # a weight broadcast by layout
        assert codegen.conv_layouts(ir.Function(("x",), output)) is None
