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
