"""Regenerate the hostile corpus: ``python tests/data/hostile/make.py``.

Each file is a spec, parameter file or bundle that a hostile or careless user could hand
to flowbridge; ``tests/test_hostile.py`` asserts the clear error each one must give.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save

HERE = Path(__file__).resolve().parent
OK_LAYER = {"type": "affine_coupling", "conditioner": {"hidden": [8]}}


def spec(**fields):
    return {"event_shape": [4], "layers": [OK_LAYER], **fields}


def layer(**fields):
    return {"event_shape": [4], "layers": [{**OK_LAYER, **fields}]}


def raw_safetensors(header: dict, data: bytes) -> bytes:
    """A safetensors file written by hand (dtypes NumPy cannot write: BF16, F8)."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def main() -> None:
    text = {
        # loading
        "self_key.json": json.dumps({"self": 1, **spec()}),
        "int_keys.yaml": "event_shape: [4]\n1: 2\n",
        "huge_int.json": '{"event_shape": [' + "9" * 5000 + '], "layers": []}',
        "huge_int.yaml": "event_shape: [" + "9" * 5000 + "]\n",
        "deep_nesting.json": "[" * 100000 + "]" * 100000,
        "deep_nesting.yaml": "[" * 100000 + "]" * 100000,
        "format_version_true.json": json.dumps({"format_version": True, **spec()}),
        "yaml_set.yaml": "event_shape: !!set {4: null}\nlayers: []\n",
        "yaml_timestamp.yaml": "name: 2001-12-14\nevent_shape: [4]\n",
        "yaml_binary.yaml": "name: !!binary aGVsbG8=\nevent_shape: [4]\n",
        "python_tag.yaml": '!!python/object/apply:os.system ["echo owned"]\n',
        "duplicate_keys.json": '{"event_shape": [4], "event_shape": [5], "layers": []}',
        "duplicate_keys.yaml": "event_shape: [4]\nlayers: []\nevent_shape: [5]\n",
        "merge_key.yaml": "base: &b {hidden: [8]}\nevent_shape: [4]\nlayers:\n  - type: scaling\n    <<: *b\n",
        "multi_document.yaml": "event_shape: [4]\n---\nevent_shape: [5]\n",
        "empty.yaml": "",
        "top_level_list.json": "[1, 2]",
        "bool_as_int.json": json.dumps({"event_shape": [True], "layers": [OK_LAYER]}),
        "nan_constant.json": '{"event_shape": [4], "layers": [{"type": "affine_coupling", '
                             '"scale": {"kind": "clamp", "low": NaN, "high": 3}}]}',
        "infinite_constant.yaml": "event_shape: [4]\nlayers:\n  - type: affine_coupling\n"
                                  "    scale: {kind: sigmoid, offset: .inf}\n",
        "code_in_name.json": json.dumps(spec(name='x"""\nimport os\nos.system("echo owned")\n"""')),
        # alias bomb: 9 levels of 9 aliases, 9**9 leaves when expanded
        "alias_bomb.yaml": "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
        + "".join(f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                  for p, c in zip("abcdefgh", "bcdefghi", strict=True))
        + "event_shape: *i\n",
        # sizes
        "event_size_huge.json": json.dumps({"event_shape": [10**9], "layers": [{"type": "scaling"}]}),
        "width_huge.yaml": "event_shape: [4]\nlayers:\n  - type: affine_coupling\n"
                           "    conditioner: {hidden: [1000000000000]}\n",
        "size_params_huge.json": json.dumps({"event_shape": [4096], "layers": [
            {"type": "affine_coupling", "conditioner": {"hidden": [65536, 65536]}}]}),
        "depth_500.json": json.dumps(layer(conditioner={"hidden": [4] * 500})),
        # constants a backend cannot carry
        "soft_clamp_1e308.json": json.dumps(layer(scale={"kind": "soft_clamp", "bound": 1e308})),
        "soft_clamp_subnormal.json": json.dumps(layer(scale={"kind": "soft_clamp", "bound": 4e-309})),
        "clamp_subnormal_float32.json": json.dumps(layer(scale={"kind": "clamp", "low": -1e-40,
                                                              "high": 3.0})),
        "negative_slope_2_31.json": json.dumps(layer(conditioner={
            "hidden": [8], "activation": "leaky_relu", "negative_slope": 2.0**31})),
        "float_width.json": json.dumps(layer(conditioner={"hidden": [8.5]})),
    }
    for name, content in text.items():
        (HERE / name).write_text(content)
    (HERE / "non_utf8.yaml").write_bytes(b"event_shape: [4]\nname: \xff\xfe\n")
    (HERE / "non_utf8.json").write_bytes(b'{"event_shape": [4], "name": "\xc3\x28"}')

    # parameter files
    (HERE / "params_bf16.safetensors").write_bytes(raw_safetensors(
        {"layers.0.log_scale": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}},
        bytes(8)))
    (HERE / "params_f8.safetensors").write_bytes(raw_safetensors(
        {"layers.0.log_scale": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}},
        bytes(4)))
    (HERE / "params_truncated.safetensors").write_bytes(
        save({"layers.0.log_scale": np.zeros(4)}, {"flowbridge_params": "1"})[:-7])
    (HERE / "params_header_too_large.safetensors").write_bytes(
        struct.pack("<Q", 2**40) + b"{}")
    (HERE / "params_not_safetensors.safetensors").write_text("event_shape: [4]\n")
    (HERE / "params_int.safetensors").write_bytes(
        save({"layers.0.log_scale": np.zeros(4, dtype=np.int32)}))
    (HERE / "params_other_spec.safetensors").write_bytes(
        save({"layers.0.log_scale": np.zeros(4)}, {"flowbridge_params": "1", "spec_hash": "0" * 64}))

    # bundles
    (HERE / "bundle_no_spec.safetensors").write_bytes(
        save({"reference/x": np.zeros((2, 4))}, {"flowbridge_bundle": "1"}))
    (HERE / "bundle_bad_spec.safetensors").write_bytes(
        save({"reference/x": np.zeros((2, 4))}, {"flowbridge_bundle": "1", "spec": '{"layers": 7}'}))
    scaling = json.dumps({"event_shape": [4], "layers": [{"type": "scaling"}]})
    good = {"params/layers.0.log_scale": np.zeros(4), "reference/x": np.zeros((2, 4)),
            "reference/y": np.zeros((2, 4)), "reference/fldj": np.zeros(2),
            "reference/ildj": np.zeros(2)}
    (HERE / "bundle_bad_shape.safetensors").write_bytes(save(
        {**good, "reference/y": np.zeros((3, 4))}, {"flowbridge_bundle": "1", "spec": scaling}))
    (HERE / "bundle_unknown_array.safetensors").write_bytes(save(
        {**good, "result/pyro/float32/cpu/../../etc": np.zeros(2)},
        {"flowbridge_bundle": "1", "spec": scaling}))
    (HERE / "bundle_missing_reference.safetensors").write_bytes(save(
        {"params/layers.0.log_scale": np.zeros(4)}, {"flowbridge_bundle": "1", "spec": scaling}))


if __name__ == "__main__":
    main()
