"""The neutral parameter set: initialisation, files, exact round trips, bad params."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import flowbridge as fb
from flowbridge import layers
from flowbridge.cli import main

SPEC = fb.FlowSpec(
    event_shape=(5,),
    layers=[fb.AffineCoupling(conditioner=fb.Conditioner(hidden=(8, 6))), fb.Permutation(),
            fb.AdditiveCoupling(mask=fb.ParityMask()), fb.Scaling()],
)  # fmt: skip


def test_layout_is_documented_and_ordered():
    assert fb.param_shapes(SPEC) == {
        "layers.0.conditioner.0.kernel": (2, 8),
        "layers.0.conditioner.0.bias": (8,),
        "layers.0.conditioner.1.kernel": (8, 6),
        "layers.0.conditioner.1.bias": (6,),
        "layers.0.conditioner.2.kernel": (6, 6),  # [shift | log-scale] for 3 entries
        "layers.0.conditioner.2.bias": (6,),
        "layers.2.conditioner.0.kernel": (3, 64),
        "layers.2.conditioner.0.bias": (64,),
        "layers.2.conditioner.1.kernel": (64, 64),
        "layers.2.conditioner.1.bias": (64,),
        "layers.2.conditioner.2.kernel": (64, 2),
        "layers.2.conditioner.2.bias": (2,),
        "layers.3.log_scale": (5,),
    }


def test_identity_init_is_the_identity_and_random_is_not():
    x = np.random.default_rng(0).standard_normal((10, 5))
    flow = fb.to_numpy(SPEC, fb.init_params(SPEC, 3))
    y, ld = flow.forward_with_log_det(x)
    np.testing.assert_array_equal(y, x[..., [4, 3, 2, 1, 0]])  # only the permutation acts
    np.testing.assert_array_equal(ld, 0.0)
    flow = fb.to_numpy(SPEC, fb.init_params(SPEC, 3, init="random"))
    assert np.abs(flow.forward(x) - x[..., [4, 3, 2, 1, 0]]).max() > 0.1


def test_init_is_seeded():
    a, b = fb.init_params(SPEC, 1, init="random"), fb.init_params(SPEC, 1, init="random")
    c = fb.init_params(SPEC, 2, init="random")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    with pytest.raises(ValueError, match="init: expected 'identity' or 'random'"):
        fb.init_params(SPEC, init="zeros")


def test_safetensors_round_trip_is_exact(tmp_path):
    params = fb.init_params(SPEC, 0, init="random")
    fb.save_params(params, tmp_path / "p.safetensors", SPEC)
    back = fb.load_params(tmp_path / "p.safetensors", SPEC)
    assert back.keys() == params.keys()
    assert all(np.array_equal(back[k], params[k]) and back[k].dtype == np.float64 for k in back)


def test_pyro_round_trip_is_exact():
    torch = pytest.importorskip("torch")
    params = fb.init_params(SPEC, 0, init="random")
    flow64 = fb.to_pyro(SPEC, params, dtype=torch.float64)
    back = fb.params_from_pyro(flow64)
    assert all(np.array_equal(back[k], params[k]) for k in params)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    back32 = fb.params_from_pyro(fb.to_pyro(SPEC, p32))
    assert all(np.array_equal(back32[k], p32[k]) and back32[k].dtype == np.float32 for k in p32)


def test_tfp_round_trip_is_exact():
    pytest.importorskip("tensorflow_probability")
    params = fb.init_params(SPEC, 0, init="random")
    back = fb.params_from_tfp(fb.to_tfp(SPEC, params, dtype="float64"))
    assert all(np.array_equal(back[k], params[k]) for k in params)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    back32 = fb.params_from_tfp(fb.to_tfp(SPEC, p32))
    assert all(np.array_equal(back32[k], p32[k]) for k in p32)


def test_pyro_to_tfp_via_file(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow_probability")
    params = fb.init_params(SPEC, 4, init="random")
    fb.save_params(fb.params_from_pyro(fb.to_pyro(SPEC, params, dtype="float64")), tmp_path / "w", SPEC)
    tfp_flow = fb.to_tfp(SPEC, fb.load_params(tmp_path / "w", SPEC), dtype="float64")
    back = fb.params_from_tfp(tfp_flow)
    assert all(np.array_equal(back[k], params[k]) for k in params)


def _bad(**change):
    params = fb.init_params(SPEC)
    for k, v in change.items():
        k = k.replace("__", ".")
        if v is None:
            del params[k]
        else:
            params[k] = v
    return params


@pytest.mark.parametrize(
    "params, message",
    [
        (_bad(layers__3__log_scale=None), r"layers.3.log_scale: missing \(expected shape \(5,\)\)"),
        ({**fb.init_params(SPEC), "layers.9.w": np.zeros(3)},
         "layers.9.w: unexpected parameter for this spec"),
        (_bad(layers__0__conditioner__0__kernel=np.zeros((8, 2))),
         r"layers.0.conditioner.0.kernel: expected shape \(2, 8\), got \(8, 2\)"),
        (_bad(layers__3__log_scale=np.zeros(5, dtype=np.int64)),
         "layers.3.log_scale: expected a floating-point array, got dtype int64"),
        (_bad(layers__3__log_scale=np.full(5, np.nan)),
         "layers.3.log_scale: expected finite values, got NaN or infinity"),
        ([1, 2], "params: expected a mapping of names to arrays, got list"),
    ],
)  # fmt: skip
def test_bad_params_name_the_parameter(params, message):
    with pytest.raises(fb.ParamError, match=message):
        fb.to_numpy(SPEC, params)


def test_bad_params_are_refused_before_any_framework_runs():
    pytest.importorskip("torch")
    with pytest.raises(fb.ParamError, match="layers.3.log_scale: missing"):
        fb.to_pyro(SPEC, _bad(layers__3__log_scale=None))
    with pytest.raises(fb.ParamError, match="expected shape"):
        fb.to_tfp(SPEC, _bad(layers__3__log_scale=np.zeros(4)))


def test_unreadable_params_file(tmp_path):
    (tmp_path / "bad").write_bytes(b"not safetensors")
    with pytest.raises(fb.ParamError, match="not a readable safetensors file"):
        fb.load_params(tmp_path / "bad")


def test_export_refuses_foreign_layers():
    torch = pytest.importorskip("torch")
    from pyro.distributions.transforms import Permute

    with pytest.raises(fb.ParamError, match=r"layers\[0\]: Permute is not a flowbridge layer"):
        fb.params_from_pyro([Permute(torch.tensor([1, 0]))])


def test_init_params_draws_each_parameter_by_its_rule():
    spec = fb.realnvp(6, hidden=(32,))
    params = layers.param_specs(spec)
    for init in ("identity", "random"):
        drawn = fb.init_params(spec, seed=3, init=init)
        for name, p in params.items():
            rule = p.init if init == "identity" else p.random_init
            v = np.abs(drawn[name])
            assert v.max() <= rule.bound and (rule.bound == 0.0) == (not v.any()), name


def test_params_saved_for_another_spec_are_refused_naming_both_hashes(tmp_path):
    exp = fb.realnvp(4, scale={"kind": "exp"})
    clamp = fb.realnvp(4, scale={"kind": "clamp", "low": -0.1, "high": 0.1})
    fb.save_params(fb.init_params(exp, 0, init="random"), tmp_path / "p", exp)
    with pytest.raises(fb.ParamError) as info:
        fb.load_params(tmp_path / "p", clamp)
    assert exp.hash[:16] in str(info.value) and clamp.hash[:16] in str(info.value)
    assert fb.load_params(tmp_path / "p", clamp, allow_other_spec=True).keys() == \
        fb.param_shapes(clamp).keys()  # fmt: skip
    clamp.save(tmp_path / "clamp.json")
    args = ["check", str(tmp_path / "clamp.json"), "-b", "numpy", "--params", str(tmp_path / "p")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "saved for spec sha256:" + exp.hash[:16] in res.output
    assert CliRunner().invoke(main, [*args, "--allow-other-spec"]).exit_code == 0


def test_object_and_non_float_arrays_are_param_errors(tmp_path):
    spec = fb.FlowSpec(event_shape=(4,), layers=[fb.Scaling()])
    for value in (np.array([object()] * 4), np.zeros(4, dtype=complex), [1, "a", 2, 3]):
        with pytest.raises(fb.ParamError, match="layers.0.log_scale"):
            fb.check_params(spec, {"layers.0.log_scale": value})
        with pytest.raises(fb.ParamError, match="layers.0.log_scale"):
            fb.save_params({"layers.0.log_scale": value}, tmp_path / "p")


def test_check_params_refuses_values_that_overflow_the_flows_dtype():
    """The shared check, so every backend refuses alike: 1e39 is finite in float64 and
    infinity in float32."""
    spec = fb.FlowSpec(event_shape=(4,), layers=[fb.Scaling()])
    huge = {"layers.0.log_scale": np.array([0.0, -1e39, 0.0, 0.0])}
    with pytest.raises(fb.ParamError, match=r"^layers.0.log_scale: -1e\+39 overflows float32 \(the flow's dtype"):
        fb.check_params(spec, huge, dtype="float32")
    with pytest.raises(fb.ParamError, match=r"layers.0.log_scale: 70000 overflows float16"):
        fb.check_params(spec, {"layers.0.log_scale": np.array([7e4, 0.0, 0.0, 0.0], np.float32)}, dtype="float16")
    assert fb.check_params(spec, huge, dtype="float64")["layers.0.log_scale"][1] == -1e39
    assert fb.check_params(spec, huge)["layers.0.log_scale"][1] == -1e39  # no dtype: no range
    # float32's largest value fits; a float64 value that rounds to it too
    edge = np.finfo(np.float32).max.astype(np.float64)
    fb.check_params(spec, {"layers.0.log_scale": np.array([edge, -edge, 0.0, 0.0])}, dtype="float32")
    with pytest.raises(ValueError, match="dtype: expected 'float16', 'float32', 'float64' or None"):
        fb.check_params(spec, huge, dtype="bfloat16")


@pytest.mark.parametrize("backend", ["jax", "pyro", "tfp"])
def test_a_float32_flow_refuses_params_beyond_float32s_range(backend):
    module = {"jax": "jax", "pyro": "torch", "tfp": "tensorflow_probability"}[backend]
    pytest.importorskip(module)
    spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
    params = {**fb.init_params(spec, 0), "layers.1.conditioner.0.bias": np.full(8, 1e39)}
    build = getattr(fb, f"to_{backend}")
    with pytest.raises(fb.ParamError, match=r"^layers.1.conditioner.0.bias: 1e\+39 overflows float32"):
        build(spec, params)
    with pytest.raises(fb.ParamError, match="overflows float32"):
        build(spec, params, dtype="float32")
    build(spec, fb.init_params(spec, 0), dtype="float32")  # in range: built
    if backend != "jax":  # float64 holds it (JAX's float64 needs its 64-bit mode)
        build(spec, params, dtype="float64")
    if backend == "pyro":
        import torch

        with pytest.raises(fb.ParamError, match="overflows float32"):
            build(spec, params, dtype=torch.float32)
        build(spec, params, dtype=torch.float64)


def test_the_check_refuses_params_float32_cannot_hold_when_float32_rows_are_asked_for():
    """``fb.check(params=...)``: a value beyond float32 is a ParamError naming it, not a
    float32 row computed from infinity; asking for float64 rows only runs them."""
    spec = fb.FlowSpec(event_shape=(4,), layers=[fb.Scaling()])
    huge = {"layers.0.log_scale": np.array([0.0, 1e39, 0.0, 0.0])}
    with pytest.raises(fb.ParamError, match=r"layers.0.log_scale: 1e\+39 overflows float32"):
        fb.check(spec, params=huge, backends=("numpy",))
    fine = {"layers.0.log_scale": np.array([0.0, 0.1, 0.0, 0.0])}
    assert fb.check(spec, params=fine, backends=("numpy",), dtypes=("float64",)).ok
