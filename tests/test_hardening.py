"""One test per item of the hardening issue: each failed on the code before it.

Item numbers refer to the issue's list. Inputs that are merely malformed files live in
the hostile corpus (``test_hostile.py``); these are the cases that need code to show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

import flowbridge as fb
from flowbridge.backends import NAMES
from flowbridge.cli import main

from .cases import EXAMPLES

D7 = fb.FlowSpec(
    event_shape=(7,),
    layers=[fb.AffineCoupling(mask=fb.ParityMask(), conditioner=fb.Conditioner(hidden=(8,))),
            fb.AffineCoupling(mask=fb.SplitMask(size=3), conditioner=fb.Conditioner(hidden=(8,))),
            fb.Permutation(kind="reverse"), fb.Scaling()],
)  # fmt: skip
BACKENDS = list(NAMES)


def _forward_fns(backend, spec, params):
    """(forward, inverse, fldj) callables of ``backend`` taking NumPy float64 arrays."""
    if backend == "numpy":
        flow = fb.to_numpy(spec, params)
        return flow.forward, flow.inverse, flow.forward_log_det_jacobian
    if backend == "pyro":
        torch = pytest.importorskip("torch")
        flow = fb.to_pyro(spec, params, dtype="float64")
        t = torch.as_tensor
        return (lambda x: flow(t(x)).detach(), lambda y: flow.inv(t(y)).detach(),
                lambda x: flow.log_abs_det_jacobian(t(x), flow(t(x))).detach())  # fmt: skip
    pytest.importorskip("tensorflow_probability")
    flow = fb.to_tfp(spec, params, dtype="float64")
    return flow.forward, flow.inverse, lambda x: flow.forward_log_det_jacobian(x, event_ndims=1)


# ---------------------------------------------------- 1. params saved for another spec
def test_1_params_for_another_spec_are_refused_naming_both_hashes(tmp_path):
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


# ----------------------------------------------------------- 2. inputs checked at the door
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 9), (2, 3), (7, 2), ()])
def test_2_wrong_event_size_names_the_expected_shape(backend, shape):
    fns = _forward_fns(backend, D7, fb.init_params(D7, 0, init="random"))
    for fn in fns:
        with pytest.raises(ValueError, match=r"expected shape \(\*batch, 7\), got"):
            fn(np.zeros(shape))


@pytest.mark.parametrize("backend", BACKENDS)
def test_2_complex_inputs_are_refused_not_truncated(backend):
    fns = _forward_fns(backend, D7, fb.init_params(D7, 0, init="random"))
    x = np.ones((2, 7)) + 1j
    if backend == "pyro":
        import torch

        x = torch.as_tensor(x)
    for fn in fns:
        with pytest.raises(TypeError, match="expected (real numbers|a real floating-point)"):
            fn(x)


# ------------------------------------------------- 3. TFP flows with other weights differ
def test_3_tfp_flows_with_other_weights_never_share_cached_results():
    tf = pytest.importorskip("tensorflow")
    spec = fb.realnvp(4, hidden=(8,))
    pa, pb = fb.init_params(spec, 0, init="random"), fb.init_params(spec, 1, init="random")
    a, b = fb.to_tfp(spec, pa, dtype="float64"), fb.to_tfp(spec, pb, dtype="float64")
    assert a != b and a.bijectors[0] != b.bijectors[0] and a == a
    x = tf.constant(np.random.default_rng(0).standard_normal((5, 4)))
    want = fb.to_numpy(spec, pb).forward(x.numpy())

    @tf.function
    def both(x):
        return a.forward(x), b.forward(x)

    for ya, yb in [(a.forward(x), b.forward(x)), both(x)]:
        np.testing.assert_allclose(yb.numpy(), want, rtol=1e-12)
        assert np.max(np.abs(ya.numpy() - yb.numpy())) > 1e-3
    tfd = pytest.importorskip("tensorflow_probability").distributions
    base = tfd.MultivariateNormalDiag(loc=tf.zeros(4, tf.float64))
    lp_a = tfd.TransformedDistribution(base, a).log_prob(x)
    lp_b = tfd.TransformedDistribution(base, b).log_prob(x)
    ref = fb.to_numpy(spec, pb)
    z = ref.inverse(x.numpy())
    want_lp = -0.5 * np.sum(z**2, -1) - 2 * np.log(2 * np.pi) + ref.inverse_log_det_jacobian(x.numpy())
    np.testing.assert_allclose(lp_b.numpy(), want_lp, rtol=1e-12)
    assert np.max(np.abs(lp_a.numpy() - lp_b.numpy())) > 1e-3


# --------------------------------------------------------------- 4. single events in TFP
def test_4_tfp_takes_a_single_event_and_any_batch_rank():
    tf = pytest.importorskip("tensorflow")
    tfd = pytest.importorskip("tensorflow_probability").distributions
    params = fb.init_params(D7, 0, init="random")
    flow, ref = fb.to_tfp(D7, params, dtype="float64"), fb.to_numpy(D7, params)
    x = np.random.default_rng(1).standard_normal((2, 3, 7))
    for xs in (x[0, 0], x):
        np.testing.assert_allclose(flow.forward(xs).numpy(), ref.forward(xs), rtol=1e-12)
        ld = flow.forward_log_det_jacobian(xs, event_ndims=1).numpy()
        assert ld.shape == xs.shape[:-1]
        np.testing.assert_allclose(ld, ref.forward_log_det_jacobian(xs), rtol=1e-12)
        np.testing.assert_allclose(flow.inverse(tf.constant(xs)).numpy(), ref.inverse(xs),
                                   rtol=1e-12)  # fmt: skip
    dist = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc=tf.zeros(7, tf.float64)), flow)
    one = dist.sample(seed=1)
    assert one.shape == (7,) and dist.log_prob(one).shape == ()
    assert np.isfinite(dist.log_prob(x[0, 0]).numpy())


# ---------------------------------------------------------- 5. outputs never clobber inputs
@pytest.mark.parametrize("option", ["-o", "--json", "--save-bundle", "init-params"])
def test_5_an_output_that_is_an_input_is_refused(tmp_path, option):
    spec = tmp_path / "v.yaml"
    spec.write_text((EXAMPLES / "nice_d2.yaml").read_text())
    before = spec.read_bytes()
    args = {"-o": ["generate", str(spec), "-b", "numpy", "-o", str(spec)],
            "--json": ["check", str(spec), "-b", "numpy", "--json", str(spec)],
            "--save-bundle": ["check", str(spec), "-b", "numpy", "--save-bundle", str(spec)],
            "init-params": ["init-params", str(spec), "-o", str(spec)]}[option]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "is the input" in res.output
    assert spec.read_bytes() == before


def test_5_writes_are_atomic(tmp_path, monkeypatch):
    from flowbridge.files import write_atomic

    target = tmp_path / "out.py"
    target.write_text("old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "new " * 1000)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.py"]


# -------------------------------------------------------------- 6. the clamp is a clamp
@pytest.mark.parametrize("backend", BACKENDS)
def test_6_clamp_is_exact_for_huge_raw_values(backend):
    spec = fb.FlowSpec(event_shape=(2,), layers=[fb.AffineCoupling(
        conditioner=fb.Conditioner(hidden=()), scale=fb.ClampScale(low=-5.0, high=3.0))])  # fmt: skip
    params = {"layers.0.conditioner.0.kernel": np.array([[0.0, 1e20]]),
              "layers.0.conditioner.0.bias": np.array([0.0, 0.0])}
    fldj = _forward_fns(backend, spec, params)[2]
    x = np.array([[1.0, 1.0], [-1.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(fldj(x), dtype=float), [3.0, -5.0])


def test_6_clamp_gradient_is_straight_through():
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    spec = fb.FlowSpec(event_shape=(2,), layers=[fb.AffineCoupling(
        conditioner=fb.Conditioner(hidden=()), scale=fb.ClampScale(low=-1.0, high=1.0))])  # fmt: skip
    params = {"layers.0.conditioner.0.kernel": np.array([[0.0, 1.0]]),
              "layers.0.conditioner.0.bias": np.array([0.0, 0.0])}
    flow = fb.to_pyro(spec, params, dtype="float64")
    x = torch.tensor([[0.5, 0.0], [4.0, 0.0]], dtype=torch.float64)  # inside, outside the clamp
    flow.log_abs_det_jacobian(x, flow(x)).sum().backward()
    kernel = flow.parts[0].kernels[0]
    assert kernel.grad[0, 1].item() == pytest.approx(4.5)  # d sum(l)/dw = sum(x_a): 1 everywhere
    bij = fb.to_tfp(spec, params, dtype="float64")
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(bij.forward_log_det_jacobian(x.numpy(), event_ndims=1))
    grad = tape.gradient(total, bij.bijectors[0].kernels[0])
    assert grad.numpy()[0, 1] == pytest.approx(4.5)


# ----------------------------------------------- 7. constants every backend can carry
def test_7_constants_are_bounded_and_the_printer_refuses_non_finite_values():
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


# ------------------------------------------------------------- 8. loading: the right error
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
def test_8_python_data_is_checked_like_a_document(data, message):
    if message is None:
        assert fb.FlowSpec.from_dict(data).event_shape == (4,)
        return
    with pytest.raises(fb.SpecError) as info:
        fb.FlowSpec.from_dict(data)
    assert str(info.value).startswith(message)


# ---------------------------------------------------------- 9. bad values shown briefly
def test_9_a_huge_bad_value_is_shown_as_a_short_prefix():
    with pytest.raises(fb.SpecError) as info:
        fb.FlowSpec.from_dict({"event_shape": [4], "layers": [{"type": "scaling"}],
                               "name": "x" * 10**6})  # fmt: skip
    assert len(str(info.value)) < 200
    with fb.limits(document_values=1000), pytest.raises(fb.SpecError, match="more than 1000 values"):
        fb.FlowSpec.from_yaml("event_shape: [4]\nlayers: [" + "{type: scaling}, " * 2000 + "]")


# ------------------------------------------------------------------------ 10. ceilings
def test_10_ceilings_refuse_with_memory_and_can_be_raised(tmp_path):
    data = {"event_shape": [4], "layers": [{"type": "affine_coupling",
                                            "conditioner": {"hidden": [70000]}}]}  # fmt: skip
    with pytest.raises(fb.SpecError, match="expected at most 65536 units"):
        fb.FlowSpec.from_dict(data)
    with fb.limits(width=2**17):
        assert fb.param_count(fb.FlowSpec.from_dict(data)) == 2 * 70000 + 70000 + 70000 * 4 + 4
    (tmp_path / "wide.json").write_text(json.dumps(data))
    refused = CliRunner().invoke(main, ["validate", str(tmp_path / "wide.json")])
    assert refused.exit_code == 2 and "expected at most 65536 units" in refused.output
    raised = CliRunner().invoke(main, ["--max-width", "131072", "validate", str(tmp_path / "wide.json")])
    assert raised.exit_code == 0 and "layers.0.conditioner.0.kernel: (2, 70000)" in raised.output


# ----------------------------------------------------------- 11. no recursion in the IR
def test_11_a_500_layer_conditioner_generates_code():
    spec_data = {"event_shape": [4], "layers": [{"type": "affine_coupling",
                                                 "conditioner": {"hidden": [2] * 500}}]}  # fmt: skip
    with fb.limits(depth=1000):
        spec = fb.FlowSpec.from_dict(spec_data)
        code = fb.generate(spec, "numpy")
    compile(code, "<generated>", "exec")
    flow = fb.to_numpy(spec, fb.init_params(spec, 0, init="random"))
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_allclose(flow.inverse(flow.forward(x)), x, atol=1e-10)


# --------------------------------------------------------------- 12. parameter values
def test_12_object_and_non_float_arrays_are_param_errors(tmp_path):
    spec = fb.FlowSpec(event_shape=(4,), layers=[fb.Scaling()])
    for value in (np.array([object()] * 4), np.zeros(4, dtype=complex), [1, "a", 2, 3]):
        with pytest.raises(fb.ParamError, match="layers.0.log_scale"):
            fb.check_params(spec, {"layers.0.log_scale": value})
        with pytest.raises(fb.ParamError, match="layers.0.log_scale"):
            fb.save_params({"layers.0.log_scale": value}, tmp_path / "p")


# ------------------------------------------------------------------------- 13. presets
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
def test_13_preset_arguments_are_validated_like_fields(call, message):
    with pytest.raises(fb.SpecError) as info:
        call()
    assert str(info.value).startswith(message)


# --------------------------------------------------------- 14. the CLI fails in one line
@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "SPEC", "-b", "numpy", "-o", "/nonexistent-dir/f.py"], "no such directory"),
        (["generate", "SPEC", "-b", "numpy", "-o", "/dev/full"], "/dev/full: No space left"),
        (["check", "SPEC", "--seed", "-1"], "Invalid value for '--seed'"),
        (["check", "SPEC", "--batch", "0"], "Invalid value for '--batch'"),
        (["check", "--bundle", "PARAMS"], "not a flowbridge bundle"),
        (["check", "SPEC", "--bundle", "PARAMS"], "give either SPEC(s) or --bundle"),
        (["validate", "MISSING.yaml"], "no such file"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)  # fmt: skip
def test_14_every_cli_failure_is_one_line_and_nonzero(tmp_path, args, message):
    spec = EXAMPLES / "nice_d2.yaml"
    fb.save_params(fb.init_params(fb.load_spec(spec)), tmp_path / "p.safetensors", fb.load_spec(spec))
    subs = {"SPEC": str(spec), "PARAMS": str(tmp_path / "p.safetensors"),
            "MISSING.yaml": str(tmp_path / "missing.yaml")}  # fmt: skip
    res = CliRunner().invoke(main, [subs.get(a, a) for a in args])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in res.output


def test_14_debug_shows_the_traceback(tmp_path):
    args = ["generate", str(EXAMPLES / "nice_d2.yaml"), "-b", "numpy", "-o", "/nonexistent/x.py"]
    run = subprocess.run([sys.executable, "-m", "flowbridge.cli", "--debug", *args],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and "Traceback" in run.stderr and "error: " in run.stderr


# ------------------------------------------------------------------ 15. nothing checked
def test_15_no_backend_on_the_device_is_its_own_exit_code():
    res = CliRunner().invoke(main, ["check", str(EXAMPLES / "nice_d2.yaml"), "-b", "numpy",
                                    "--device", "cuda"])  # fmt: skip
    assert res.exit_code == 3
    assert "no backend could run on cuda" in res.output
    assert "the NumPy reference runs on the CPU only" in res.output
    assert "a figure is over its tolerance" not in res.output


# ------------------------------------------------------- 16. TensorFlow's start-up lines
def test_16_check_prints_no_tensorflow_startup_lines():
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-m", "flowbridge.cli", "check",
                          str(EXAMPLES / "nice_d2.yaml"), "-b", "tfp", "--dtype", "float64"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    for noise in ("I0000", "oneDNN", "cudart", "absl::InitializeLog", "W0000", "E0000"):
        assert noise not in run.stderr + run.stdout


# ----------------------------------------------------- 17. the module cache and threads
def test_17_threads_building_one_spec_get_one_module():
    spec = fb.realnvp(5, hidden=(3,), name="threads")  # a spec no other test builds
    modules, barrier = [], threading.Barrier(8)

    def build():
        barrier.wait()
        modules.append(fb.module_for(spec, "numpy"))

    threads = [threading.Thread(target=build) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(modules) == 8 and all(m is modules[0] for m in modules)


# ------------------------------------------------------ 18. ruff-format clean, any spec
def test_18_extreme_constants_give_ruff_clean_code(tmp_path):
    spec = fb.FlowSpec(name="x y.z -1e308", event_shape=(3,), layers=[
        fb.AffineCoupling(scale=fb.ClampScale(low=-3.4e38, high=1e30),
                          conditioner=fb.Conditioner(hidden=(4,), activation="leaky_relu",
                                                     negative_slope=1.5e-38)),
        fb.AffineCoupling(scale=fb.SoftClampScale(bound=1.2e-38)),
        fb.AffineCoupling(scale=fb.SigmoidScale(offset=-1e-5))])  # fmt: skip
    for backend in BACKENDS:
        (tmp_path / f"{backend}.py").write_text(fb.generate(spec, backend))
    ruff = [sys.executable, "-m", "ruff"]
    assert subprocess.run([*ruff, "format", "--check", str(tmp_path)], capture_output=True).returncode == 0
    assert subprocess.run([*ruff, "check", "--no-cache", str(tmp_path)], capture_output=True).returncode == 0


# -------------------------------------------------------------- 19. schema == validator
def test_19_schema_and_validator_agree_on_tags_and_integers():
    jsonschema = pytest.importorskip("jsonschema")
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


# ------------------------------------------------------- 20. names say what things are
def test_20_generated_names_read_like_the_paper():
    import re

    code = fb.generate(fb.load_spec(EXAMPLES / "realnvp_d3_pyro_clamp.yaml"), "pyro")
    assert re.findall(r"^class (\w+)", code, re.M) == [
        "_Layer", "Flow", "AffineCouplingSplitFirst", "AffineCouplingSplitLast"]  # fmt: skip
    assert not re.search(r"^\s+t(_\d+)? = ", code, re.M)  # no anonymous temporaries
    assert "x_b_scaled = x_b * scale" in code and "y_b = x_b_scaled + shift" in code
    assert "y_b = x_b * scale + shift" in code  # the docstring uses the body's names
    assert "Configuration: the first entries pass through" in code
