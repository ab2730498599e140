"""The command line and the import-time contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import flowbridge as fb
from flowbridge.build import available
from flowbridge.cli import main

from .cases import EXAMPLES

SPEC = EXAMPLES / "realnvp_d3_pyro_clamp.yaml"


def test_import_flowbridge_loads_no_framework():
    code = ("import sys, flowbridge; bad = [m for m in ('torch', 'tensorflow', 'pyro', "
            "'tensorflow_probability', 'jax') if m in sys.modules]; print(bad); sys.exit(bool(bad))")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_missing_framework_names_the_extra():
    code = ("import sys; sys.modules['tensorflow_probability'] = None; import importlib.util as u; "
            "real = u.find_spec; u.find_spec = lambda n, *a: None if n.startswith('tensorflow') else real(n, *a); "
            "import flowbridge as fb\n"
            "try:\n    fb.to_tfp(fb.realnvp(4))\nexcept fb.BackendUnavailable as e:\n    print(e)")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'flowbridge[tfp]'" in run.stdout, run.stderr


def test_generate_to_stdout_and_file(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["generate", str(SPEC), "--backend", "numpy"])
    assert out.exit_code == 0 and out.output == fb.generate(fb.load_spec(SPEC), "numpy")
    res = runner.invoke(main, ["generate", str(SPEC), "-b", "pyro", "-o", str(tmp_path / "f.py")])
    assert res.exit_code == 0 and (tmp_path / "f.py").read_text().startswith("# Generated")


def test_bad_spec_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("event_shape: [4]\nlayers:\n  - type: affine_coupling\n    conditioner: {hidden: [8, -4]}\n")
    res = CliRunner().invoke(main, ["generate", str(bad), "-b", "numpy"])
    assert res.exit_code == 2
    assert res.output.strip() == (
        "error: layers[0].conditioner.hidden[1]: expected a positive integer, got -4")
    assert "Traceback" not in res.output


def test_schema_and_validate(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["schema", "-o", str(tmp_path / "s.json")])
    assert res.exit_code == 0
    assert json.loads((tmp_path / "s.json").read_text())["title"].startswith("flowbridge FlowSpec")
    res = runner.invoke(main, ["validate", str(SPEC)])
    assert res.exit_code == 0 and "layers.0.conditioner.0.kernel: (1, 16)" in res.output


def test_init_params(tmp_path):
    res = CliRunner().invoke(main, ["init-params", str(SPEC), "-o", str(tmp_path / "p"), "--random"])
    assert res.exit_code == 0
    spec = fb.load_spec(SPEC)
    assert fb.load_params(tmp_path / "p", spec).keys() == fb.param_shapes(spec).keys()


def test_check_passes_and_fails(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["check", str(SPEC), "-b", "numpy", "-b", "pyro", "--json",
                               str(tmp_path / "r.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "pyro     float32  cpu" in res.output
    rows = json.loads((tmp_path / "r.json").read_text())[0]["rows"]
    assert {(r["backend"], r["dtype"]) for r in rows} >= {("pyro", "float32"), ("pyro", "float64")}
    # huge shifts make float32 inverses cancel catastrophically: the check must fail
    spec = fb.load_spec(SPEC)
    params = fb.init_params(spec, 0, init="random")
    for k in params:
        if k.endswith("conditioner.2.bias"):
            params[k] = params[k] * 1e5
    fb.save_params(params, tmp_path / "p", spec)
    res = runner.invoke(main, ["check", str(SPEC), "-b", "pyro", "--dtype", "float32",
                               "--params", str(tmp_path / "p")])  # fmt: skip
    assert res.exit_code == 1 and "FAIL" in res.output


def test_check_needs_spec_or_bundle():
    res = CliRunner().invoke(main, ["check"])
    assert res.exit_code == 2 and "give either SPEC(s) or --bundle" in res.output


def test_check_several_specs_ends_with_the_worst_figures():
    specs = [str(SPEC), str(EXAMPLES / "nice_d2.yaml")]
    res = CliRunner().invoke(main, ["check", *specs, "-b", "numpy", "-b", "pyro"])
    assert res.exit_code == 0, res.output
    assert "worst over 2 specs" in res.output and "PASS (2/2 specs)" in res.output


@pytest.mark.skipif(not available("tfp"), reason="tensorflow-probability is not installed")
def test_bundle_carries_tfp_results_to_a_machine_without_it(tmp_path):
    bundle = tmp_path / "b.safetensors"
    runner = CliRunner()
    res = runner.invoke(main, ["check", str(SPEC), "-b", "tfp", "--save-bundle", str(bundle)])
    assert res.exit_code == 0, res.output
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_probability'] = None\n"
            "from flowbridge.cli import main; main()")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code, "check", "--bundle", str(bundle), "-b", "pyro"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tfp (bundle)  float32  cpu" in run.stdout and "pyro" in run.stdout
    assert "PASS" in run.stdout


@pytest.mark.parametrize("option", ["-o", "--json", "--save-bundle", "init-params"])
def test_an_output_that_is_an_input_is_refused(tmp_path, option):
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
def test_every_failure_is_one_line_and_exit_2(tmp_path, args, message):
    spec = EXAMPLES / "nice_d2.yaml"
    fb.save_params(fb.init_params(fb.load_spec(spec)), tmp_path / "p.safetensors", fb.load_spec(spec))
    subs = {"SPEC": str(spec), "PARAMS": str(tmp_path / "p.safetensors"),
            "MISSING.yaml": str(tmp_path / "missing.yaml")}  # fmt: skip
    res = CliRunner().invoke(main, [subs.get(a, a) for a in args])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in res.output


def test_debug_shows_the_traceback(tmp_path):
    args = ["generate", str(EXAMPLES / "nice_d2.yaml"), "-b", "numpy", "-o", "/nonexistent/x.py"]
    run = subprocess.run([sys.executable, "-m", "flowbridge.cli", "--debug", *args],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and "Traceback" in run.stderr and "error: " in run.stderr


def _cli(*args: str, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowbridge.cli", *args], stderr=subprocess.PIPE,
                          text=True, **popen)  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [["generate", "SPEC", "-b", "numpy"], ["schema"], ["validate", "SPEC"],
     ["check", "SPEC", "-b", "numpy", "--batch", "2"]],
)  # fmt: skip
def test_a_closed_standard_output_is_one_error_line_and_exit_2(args):
    """``flowbridge generate SPEC -b numpy >&-``: Python's sys.stdout is None and
    click.echo would write nothing and exit 0; every command that prints refuses."""
    run = _cli(*[str(EXAMPLES / "nice_d2.yaml") if a == "SPEC" else a for a in args],
               preexec_fn=lambda: os.close(1))  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr == "error: standard output is closed; nothing was written\n"


@pytest.mark.parametrize("broken", ["pipe", "full"])
def test_a_failing_standard_output_is_one_error_line_and_exit_2(broken):
    """A pipe whose reader is gone (click alone would exit 1, this tool's "over
    tolerance", without a word) and a full device: exit 2, one line naming stdout."""
    if broken == "full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    if broken == "pipe":
        read, write = os.pipe()
        os.close(read)
        try:
            run = _cli("schema", stdout=write)
        finally:
            os.close(write)
        reason = "Broken pipe"
    else:
        with open("/dev/full", "w") as full:
            run = _cli("schema", stdout=full)
        reason = "No space left on device"
    assert run.returncode == 2, run.stderr
    assert run.stderr == f"error: standard output: {reason}\n"


def test_no_backend_on_the_device_is_exit_3():
    res = CliRunner().invoke(main, ["check", str(EXAMPLES / "nice_d2.yaml"), "-b", "numpy",
                                    "--device", "cuda"])  # fmt: skip
    assert res.exit_code == 3
    assert "no backend could run on cuda" in res.output
    assert "the NumPy reference runs on the CPU only" in res.output
    assert "a figure is over its tolerance" not in res.output


def test_check_prints_no_tensorflow_startup_lines():
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-m", "flowbridge.cli", "check",
                          str(EXAMPLES / "nice_d2.yaml"), "-b", "tfp", "--dtype", "float64"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    for noise in ("I0000", "oneDNN", "cudart", "absl::InitializeLog", "W0000", "E0000"):
        assert noise not in run.stderr + run.stdout


@pytest.mark.parametrize("platforms, said", [("cuda", "no backend starts"),
                                             ("bogus", "Unable to initialize backend 'bogus'")])  # fmt: skip
def test_check_with_jax_unable_to_start_skips_its_rows_and_keeps_the_others(platforms, said):
    """JAX_PLATFORMS naming a platform this machine lacks: the jax rows are skipped with
    the reason, the numpy row stays, and the check passes (no internal error)."""
    if not available("jax"):
        pytest.skip("jax is not installed")
    env = {**os.environ, "JAX_PLATFORMS": platforms}
    run = subprocess.run([sys.executable, "-m", "flowbridge.cli", "check", "-b", "numpy", "-b", "jax",
                          str(SPEC), "--device", "cpu"], capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "numpy    float64  cpu" in run.stdout
    assert f"skipped jax on cpu: jax cannot start with JAX_PLATFORMS={platforms!r}" in run.stdout
    assert said in run.stdout and "internal error" not in run.stdout + run.stderr
