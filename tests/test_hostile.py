"""The hostile corpus (``tests/data/hostile/``, made by its ``make.py``): one test per file.

Every file must give the clear error stated here, naming where the problem is, within a
time and memory bound, and never any other exception. A file without an entry fails the
registry test, so nothing in the corpus goes untested.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

import flowbridge as fb
from flowbridge.check import load_bundle

HOSTILE = Path(__file__).resolve().parent / "data" / "hostile"
#: each file is refused within these, whatever it holds (seconds under tracemalloc, which
#: slows Python several times)
SECONDS, MEBIBYTES = 10.0, 64

#: file -> (error class, text the message must contain)
EXPECTED = {
    "self_key.json": (fb.SpecError, "self: unknown field"),
    "int_keys.yaml": (fb.SpecError, "spec: expected string keys, got '1'"),
    "huge_int.json": (fb.SpecError, "event_shape[0]: expected an integer of magnitude at most"),
    "huge_int.yaml": (fb.SpecError, "event_shape[0]: expected an integer of magnitude at most"),
    "deep_nesting.json": (fb.SpecError, "nested deeper than 32 levels"),
    "deep_nesting.yaml": (fb.SpecError, "nested deeper than 32 levels"),
    "format_version_true.json": (fb.SpecError, "format_version: expected 1, got True"),
    "yaml_set.yaml": (fb.SpecError, "event_shape: expected a mapping, got YAML !!set"),
    "yaml_timestamp.yaml": (fb.SpecError, "name: expected a JSON value, got YAML !!timestamp"),
    "yaml_binary.yaml": (fb.SpecError, "name: expected a JSON value, got YAML !!binary"),
    "python_tag.yaml": (fb.SpecError, "spec: expected a list, got YAML !!python/object/apply:os.system"),
    "duplicate_keys.json": (fb.SpecError, "event_shape: duplicate key 'event_shape'"),
    "duplicate_keys.yaml": (fb.SpecError, "event_shape: duplicate key 'event_shape'"),
    "merge_key.yaml": (fb.SpecError, "layers[0]: YAML merge keys (<<) are not supported"),
    "multi_document.yaml": (fb.SpecError, "spec: invalid YAML"),
    "empty.yaml": (fb.SpecError, "spec: expected a mapping, got None"),
    "top_level_list.json": (fb.SpecError, "spec: expected a mapping, got [1, 2]"),
    "bool_as_int.json": (fb.SpecError, "event_shape[0]: expected an integer, got True"),
    "nan_constant.json": (fb.SpecError, "layers[0].scale.low: expected a finite number, got NaN"),
    "infinite_constant.yaml": (fb.SpecError, "layers[0].scale.offset: expected a finite number"),
    "code_in_name.json": (fb.SpecError, "name: expected a string matching"),
    "alias_bomb.yaml": (fb.SpecError, "the document holds more than 2097152 values"),
    "event_size_huge.json": (fb.SpecError, "event_shape[0]: expected at most 1048576 entries"),
    "width_huge.yaml": (fb.SpecError, "layers[0].conditioner.hidden[0]: expected at most 65536"),
    "size_params_huge.json": (fb.SpecError, "layers: expected at most 268435456 parameters in all, got "
                         "4697755648 (about 35.0 GiB as float64)"),
    "depth_500.json": (fb.SpecError, "layers[0].conditioner.hidden: expected at most 64 hidden"),
    "soft_clamp_1e308.json": (fb.SpecError, "layers[0].scale.bound: expected a number in "
                              "[1.175494e-38, 8.507059e+37], got 1e+308"),
    "soft_clamp_subnormal.json": (fb.SpecError, "layers[0].scale.bound: expected a number in"),
    "clamp_subnormal_float32.json": (fb.SpecError, "layers[0].scale.low: expected 0 or a "
                                     "magnitude in [1.175494e-38, 3.402823e+38]"),
    "negative_slope_2_31.json": (fb.SpecError, "negative_slope: expected a number <= 1"),
    "float_width.json": (fb.SpecError, "layers[0].conditioner.hidden[0]: expected an integer"),
    "non_utf8.yaml": (fb.SpecError, "spec: expected UTF-8 text, got byte 0xff at position 23"),
    "non_utf8.json": (fb.SpecError, "spec: expected UTF-8 text, got byte 0xc3"),
    "params_bf16.safetensors": (fb.ParamError, "layers.0.log_scale: expected a float16/32/64 "
                                "tensor, got BF16"),
    "params_f8.safetensors": (fb.ParamError, "expected a float16/32/64 tensor, got F8_E4M3"),
    "params_truncated.safetensors": (fb.ParamError, "not a readable safetensors file"),
    "params_header_too_large.safetensors": (fb.ParamError, "not a readable safetensors file"),
    "params_not_safetensors.safetensors": (fb.ParamError, "not a readable safetensors file"),
    "params_int.safetensors": (fb.ParamError, "layers.0.log_scale: expected a float16/32/64 "
                               "tensor, got I32"),
    "params_other_spec.safetensors": (fb.ParamError, "saved for spec sha256:0000000000000000, "
                                      "not for this spec"),
    "bundle_no_spec.safetensors": (fb.ParamError, "its metadata holds no spec"),
    "bundle_bad_spec.safetensors": (fb.ParamError, "its spec is invalid: 2 errors"),
    "bundle_bad_shape.safetensors": (fb.ParamError, "reference/y: unexpected array of shape (3, 4)"),
    "bundle_unknown_array.safetensors": (fb.ParamError, "result/pyro/float32/cpu/../../etc: "
                                         "unexpected array"),
    "bundle_missing_reference.safetensors": (fb.ParamError, "reference/x: missing"),
}  # fmt: skip

SCALING = fb.FlowSpec(event_shape=(4,), layers=[fb.Scaling()])


def _load(path: Path):
    if path.name.startswith("bundle_"):
        return load_bundle(path)
    if path.name.startswith("params_"):
        return fb.load_params(path, SCALING)
    return fb.load_spec(path)


def test_every_file_has_an_expectation():
    files = {p.name for p in HOSTILE.iterdir() if p.name not in ("make.py", "__pycache__")}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_file_gives_its_clear_error(name):
    kind, text = EXPECTED[name]
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(kind) as info:
            _load(HOSTILE / name)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < SECONDS
    assert peak < MEBIBYTES * 2**20
    assert text in str(info.value)
    assert len(str(info.value)) < 500  # never the whole bad value
