"""Spec round trips, hashing, the JSON Schema, and every validation error."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from pydantic import ValidationError

import flowbridge as fb
from flowbridge import spec as S

from .cases import CASES, EXAMPLES


@pytest.mark.parametrize("case", sorted(CASES))
def test_json_and_yaml_round_trips(case):
    spec = CASES[case]()
    assert fb.FlowSpec.from_json(spec.to_json()) == spec
    assert fb.FlowSpec.from_yaml(spec.to_yaml()) == spec
    assert fb.FlowSpec.from_json(spec.to_json()).hash == spec.hash


def test_save_and_load_spec(tmp_path):
    spec = fb.realnvp(5, permutation="random")
    for name in ("a.json", "a.yaml", "a.yml"):
        spec.save(tmp_path / name)
        assert fb.load_spec(tmp_path / name) == spec


def test_hash_ignores_spelling_of_defaults_but_not_values():
    short = fb.FlowSpec.from_dict({"event_shape": [4], "layers": [{"type": "affine_coupling"}]})
    full = fb.FlowSpec.from_json(short.to_json())
    assert short.hash == full.hash
    other = fb.FlowSpec.from_dict(
        {"event_shape": [4], "layers": [{"type": "affine_coupling", "scale": {"kind": "clamp"}}]}
    )
    assert other.hash != short.hash


def test_json_schema_accepts_every_example_and_rejects_garbage():
    schema = fb.json_schema()
    for path in EXAMPLES.iterdir():
        jsonschema.validate(fb.load_spec(path).to_dict(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"event_shape": [4], "layers": [{"type": "nope"}]}, schema)


def _layer(**fields):
    return {"event_shape": [4], "layers": [{"type": "affine_coupling", **fields}]}


BAD = [
    (_layer(conditioner={"hidden": [8, -4]}),
     "layers[0].conditioner.hidden[1]: expected a positive integer, got -4"),
    (_layer(conditioner={"hidden": [8, 2.5]}), "layers[0].conditioner.hidden[1]: expected an integer"),
    (_layer(conditioner={"hidden": [True]}), "layers[0].conditioner.hidden[0]: expected an integer"),
    (_layer(conditioner={"activation": "swish"}),
     "layers[0].conditioner.activation: expected one of 'relu', 'tanh', 'leaky_relu', 'elu' or "
     "'gelu', got 'swish'"),
    (_layer(conditioner={"negative_slope": -1}), "layers[0].conditioner.negative_slope: expected a "
     "non-negative number, got -1"),
    (_layer(scale={"kind": "tanh"}), "layers[0].scale.kind: expected one of 'exp', 'clamp', "
     "'soft_clamp', 'sigmoid', 'softplus', got 'tanh'"),
    (_layer(scale={"kind": "clamp", "low": 3, "high": -1}),
     "layers[0].scale.high: expected a value > low (3.0), got -1.0"),
    (_layer(scale={"kind": "soft_clamp", "bound": 0}), "layers[0].scale.bound: expected a number in [1.175494e-38, 8.507059e+37], got 0"),
    (_layer(scale={"kind": "soft_clamp", "bound": float("inf")}),
     "layers[0].scale.bound: expected a finite number, got inf"),
    (_layer(scale={"kind": "sigmoid", "offset": "2"}), "layers[0].scale.offset: expected a number"),
    (_layer(mask={"kind": "half", "part": "middle"}),
     "layers[0].mask.part: expected one of 'first' or 'last', got 'middle'"),
    (_layer(mask={"kind": "explicit", "values": [True, False]}),
     "layers[0].mask.values: expected 4 booleans (one per event entry), got 2"),
    (_layer(mask={"kind": "explicit", "values": [True] * 4}), "layers[0].mask: expected a mask that "
     "passes at least one and transforms at least one of the 4 entries, got 4 passed"),
    (_layer(mask={"kind": "explicit", "values": [1, 0, 1, 0]}),
     "layers[0].mask.values[0]: expected true or false, got 1"),
    (_layer(mask={"kind": "checkerboard"}), "layers[0].mask.kind: expected a half, split, "
     "parity or explicit mask for events of shape (4,), got 'checkerboard'"),
    (_layer(mask={"kind": "stripes"}), "layers[0].mask.kind: expected one of"),
    (_layer(extra=1), "layers[0].extra: unknown field, got 1"),
    ({"event_shape": [4], "layers": [{"type": "glow"}]}, "layers[0].type: expected one of "
     "'additive_coupling', 'affine_coupling', 'elementwise_affine', 'spline_coupling', "
     "'elementwise_spline', 'affine_autoregressive', 'spline_autoregressive', 'scaling', "
     "'actnorm', 'batch_norm', 'logit', 'conv1x1', 'permutation', 'squeeze', 'factor_out', got 'glow'"),
    ({"event_shape": [4], "layers": [{"mask": {}}]}, "layers[0]: expected a 'type' field"),
    ({"event_shape": [4], "layers": []}, "layers: expected at least one layer, got []"),
    ({"event_shape": [4]}, "layers: required field is missing"),
    ({"event_shape": ["4"], "layers": [{"type": "scaling"}]},
     "event_shape[0]: expected an integer, got '4'"),
    ({"event_shape": [0], "layers": [{"type": "scaling"}]},
     "event_shape[0]: expected a positive integer, got 0"),
    ({"event_shape": [3, 8], "layers": [{"type": "scaling"}]},
     "event_shape: expected a vector event shape (D,) or an image event shape (C, H, W), "
     "got [3, 8]"),
    ({"event_shape": [1], "layers": [{"type": "additive_coupling"}]},
     "layers[0].mask: expected a mask that passes at least one"),
    ({"event_shape": [4], "layers": [{"type": "permutation", "kind": "random"}]},
     "layers[0].seed: expected a non-negative integer for kind 'random', got None"),
    ({"event_shape": [4], "layers": [{"type": "permutation", "kind": "reverse", "seed": 3}]},
     "layers[0].seed: expected no seed for kind 'reverse', got 3"),
    ({"event_shape": [4], "layers": [{"type": "permutation", "kind": "explicit",
                                      "indices": [0, 1, 1, 3]}]},
     "layers[0].indices: expected a permutation of 0..3, got [0, 1, 1, 3]"),
    ({"event_shape": [4], "layers": [{"type": "permutation", "kind": "explicit"}]},
     "layers[0].indices: expected a permutation of range(D) for kind 'explicit', got None"),
    ({"event_shape": [4], "layers": [{"type": "permutation", "seed": -1, "kind": "random"}]},
     "layers[0].seed: expected a non-negative number, got -1"),
    ({"format_version": 2, "event_shape": [4], "layers": []}, "format_version: expected 1, got 2"),
    ({"name": "x\nimport os", "event_shape": [4], "layers": [{"type": "scaling"}]},
     "name: expected a string matching"),
    ([1, 2], "spec: expected a mapping, got [1, 2]"),
]  # fmt: skip


@pytest.mark.parametrize("data, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_validation_error_names_the_field(data, message):
    with pytest.raises(fb.SpecError) as info:
        fb.FlowSpec.from_dict(data)
    assert str(info.value).startswith(message) or message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_every_error_is_reported_at_once():
    data = _layer(conditioner={"hidden": [-1], "activation": "swish"})
    with pytest.raises(fb.SpecError) as info:
        fb.FlowSpec.from_dict(data)
    assert len(info.value.errors) == 2
    assert str(info.value).startswith("2 errors:")


def test_construction_validates_too():
    with pytest.raises(fb.SpecError, match=r"^hidden\[0\]: expected a positive integer, got 0"):
        fb.Conditioner(hidden=[0])
    with pytest.raises(fb.SpecError, match="num_couplings: expected a positive integer, got 0"):
        fb.realnvp(4, num_couplings=0)


def test_specs_are_frozen():
    spec = fb.realnvp(4)
    with pytest.raises(ValidationError, match="frozen"):
        spec.layers = ()


@pytest.mark.parametrize(
    "text, loader, message",
    [
        ("{", fb.FlowSpec.from_json, "spec: invalid JSON at line 1"),
        ("a: [", fb.FlowSpec.from_yaml, "spec: invalid YAML"),
        ("!!python/object:os.system {}", fb.FlowSpec.from_yaml, "spec: expected a mapping, got YAML"),
        ("42", fb.FlowSpec.from_json, "spec: expected a mapping, got 42"),
    ],
)
def test_bad_documents(text, loader, message):
    with pytest.raises(fb.SpecError, match=message.replace("[", r"\[")):
        loader(text)


def test_load_spec_errors(tmp_path):
    with pytest.raises(fb.SpecError, match="no such file"):
        fb.load_spec(tmp_path / "missing.json")
    (tmp_path / "spec.txt").write_text("{}")
    with pytest.raises(fb.SpecError, match="expected a .json, .yaml or .yml file"):
        fb.load_spec(tmp_path / "spec.txt")


def test_masks_and_rounding():
    from flowbridge.spec import ExplicitMask, HalfMask, ParityMask, mask_indices

    assert mask_indices(HalfMask(), 7) == ([0, 1, 2], [3, 4, 5, 6])  # Pyro: D // 2
    assert mask_indices(HalfMask(rounding="ceil"), 7) == ([0, 1, 2, 3], [4, 5, 6])
    assert mask_indices(HalfMask(part="last"), 7) == ([4, 5, 6], [0, 1, 2, 3])
    assert mask_indices(ParityMask(parity="odd"), 5) == ([1, 3], [0, 2, 4])
    assert mask_indices(ExplicitMask(values=(False, True, True)), 3) == ([1, 2], [0])


def test_presets_follow_the_papers():
    nice = fb.nice(6)
    assert [la.type for la in nice.layers] == ["additive_coupling"] * 4 + ["scaling"]
    assert [la.mask.parity for la in nice.layers[:4]] == ["even", "odd", "even", "odd"]
    nvp = fb.realnvp(6, permutation="reverse")
    parts = [la.mask.part for la in nvp.layers if la.type == "affine_coupling"]
    assert parts == ["first"] * 4  # the permutations mix; masks stay put
    assert [la.type for la in nvp.layers].count("permutation") == 3
    alternating = [la.mask.part for la in fb.realnvp(6).layers]
    assert alternating == ["first", "last", "first", "last"]
    assert json.loads(nvp.to_json())["format_version"] == 1


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


@pytest.mark.parametrize(
    "data, message",
    [
        ({"event_shape": [4], "layers": [{"type": "scaling", 3: 1}]}, "layers[0]: expected string keys"),
        ({"event_shape": [4], "layers": [{"type": "scaling"}], "x": {1, 2}}, "x: expected a JSON value"),
        ({"event_shape": [2**70], "layers": []},
         "event_shape[0]: expected an integer of magnitude at most 2**63 - 1, got a 71-bit integer"),
        ({"format_version": 1.0, "event_shape": [4.0], "layers": [{"type": "scaling"}]}, None),
        ({"format_version": True, "event_shape": [4], "layers": []}, "format_version: expected 1"),
    ],
)  # fmt: skip
def test_python_data_is_checked_like_a_document(data, message):
    if message is None:
        assert fb.FlowSpec.from_dict(data).event_shape == (4,)
        return
    with pytest.raises(fb.SpecError) as info:
        fb.FlowSpec.from_dict(data)
    assert str(info.value).startswith(message)


def test_a_huge_bad_value_is_shown_as_a_short_prefix():
    with pytest.raises(fb.SpecError) as info:
        fb.FlowSpec.from_dict({"event_shape": [4], "layers": [{"type": "scaling"}],
                               "name": "x" * 10**6})  # fmt: skip
    assert len(str(info.value)) < 200
    with fb.limits(document_values=1000), pytest.raises(fb.SpecError, match="more than 1000 values"):
        fb.FlowSpec.from_yaml("event_shape: [4]\nlayers: [" + "{type: scaling}, " * 2000 + "]")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fb.realnvp(4, mask="bogus"), "mask: expected one of 'half', 'parity', got 'bogus'"),
        (lambda: fb.realnvp(4, hidden=64), "hidden: expected a list of positive integers, got 64"),
        (lambda: fb.nice(4, hidden=[8, -1]), "hidden: expected a list of positive integers"),
        (lambda: fb.realnvp(4, permutation="shuffle"), "permutation: expected one of None"),
        (lambda: fb.realnvp(4, activation="swish"), "activation: expected one of 'relu'"),
        (lambda: fb.realnvp(4, scale={"kind": "clamp", "low": "a"}), "scale.low: expected a number"),
        (lambda: fb.realnvp(4, scale="exp"), "scale: expected a scale map or its dict"),
        (lambda: fb.realnvp(4, seed=-1), "seed: expected a non-negative integer, got -1"),
        (lambda: fb.nice(4, context_dim=-2), "context_dim: expected a non-negative integer, got -2"),
        (lambda: fb.realnvp("4"), "dim: expected a positive integer, got '4'"),
        (lambda: fb.nice(4, scaling="yes"), "scaling: expected one of True, False"),
    ],
)  # fmt: skip
def test_preset_arguments_are_validated_like_fields(call, message):
    with pytest.raises(fb.SpecError) as info:
        call()
    assert str(info.value).startswith(message)


def test_schema_and_validator_agree_on_tags_and_integers():
    schema = fb.json_schema()
    for model in ("AffineCoupling", "AdditiveCoupling", "Scaling", "Permutation"):
        assert "type" in schema["$defs"][model]["required"]
    for model in ("HalfMask", "SplitMask", "ParityMask", "ExplicitMask", "ExpScale", "ClampScale"):
        assert "kind" in schema["$defs"][model]["required"]
    no_tag = {"event_shape": [4], "layers": [{"mask": {"kind": "half"}}]}
    assert not jsonschema.Draft202012Validator(schema).is_valid(no_tag)
    four = {"event_shape": [4.0], "layers": [{"type": "scaling"}]}
    assert jsonschema.Draft202012Validator(schema).is_valid(four)
    assert fb.FlowSpec.from_dict(four).event_shape == (4,)
    huge = {"event_shape": [1e308], "layers": [{"type": "scaling"}]}
    assert not jsonschema.Draft202012Validator(schema).is_valid(huge)
    with pytest.raises(fb.SpecError):
        fb.FlowSpec.from_dict(huge)


def test_schema_descriptions_are_markdown_not_restructuredtext():
    """The models' descriptions are written for Sphinx; a JSON Schema reader (an editor's
    hover, `flowbridge schema`) shows them as Markdown: no double backquotes, no roles."""
    schema = fb.json_schema()
    descriptions = [n["description"] for n in S.schema._schema_nodes(schema)
                    if isinstance(n.get("description"), str)]  # fmt: skip
    assert len(descriptions) > 20
    for text in descriptions:
        assert "``" not in text and ":func:" not in text and ":class:" not in text, text
        assert all("\n" not in paragraph for paragraph in text.split("\n\n")), text
    assert schema["$defs"]["SplitMask"]["description"] == (
        "Pass the first or last `size` entries through (TFP's `num_masked`; a negative "
        '`num_masked` is `part="last"`).')  # fmt: skip
    assert "an explicit step, `flowbridge.actnorm_init`, which" in schema["$defs"]["ActNorm"]["description"]
