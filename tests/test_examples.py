"""Every example runs end to end in its fast mode and says what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowbridge.build import available

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.skipif(
    not (available("pyro") and available("tfp")), reason="the examples need both frameworks"
)

CASES = {
    "eight_schools_pyro.py": ["flowbridge RealNVP", "NUTS (reference)", "eight_schools_pyro.png"],
    "eight_schools_tfp.py": ["flowbridge RealNVP", "NUTS (reference)", "eight_schools_tfp.png"],
    "train_in_pyro_run_in_tfp.py": ["mean NLL of the data", "train_in_pyro_run_in_tfp.png"],
    "port_native.py": ["Pyro AffineCoupling -> flowbridge TFP", "TFP RealNVP -> flowbridge Pyro"],
    "npe_gaussian_linear.py": ["flowbridge Pyro", "flowbridge TFP", "flowbridge JAX",
                               "mean-field Gaussian", "npe_gaussian_linear.png"],  # fmt: skip
    "npe_sbi.py": ["flowbridge RealNVP", "sbi maf", "sbi nsf", "C2ST", "npe_sbi.png"],
    "eight_schools_numpyro.py": ["AutoNormal", "AutoIAFNormal", "flowbridge RealNVP",
                                 "NUTS (reference)", "errors against NUTS",
                                 "eight_schools_numpyro.png"],  # fmt: skip
    "iaf_guides.py": ["Pyro AutoIAFNormal", "flowbridge IAF (Pyro)", "NumPyro AutoIAFNormal",
                      "flowbridge IAF (NumPyro)", "exact posterior", "NUTS"],
    "amortized_guide_pyro.py": ["amortized flow (flowbridge)", "mean-field (AutoNormal)",
                                "NUTS (reference)", "amortized_guide_pyro.png"],  # fmt: skip
    "npe_two_moons.py": ["flowbridge Pyro", "flowbridge TFP", "in box", "npe_two_moons.png"],
    "distributed_pyro.py": ["2 processes (gloo, CPU)", "replicas identical after training: True",
                            "max |replica - single-process|"],  # fmt: skip
    "distributed_tfp.py": ["MirroredStrategy over 2 logical CPU devices",
                           "replicas identical after training: True",
                           "max |replica - single-device|"],  # fmt: skip
    "digits_density.py": ["flowbridge RealNVP, Pyro", "flowbridge RealNVP, TFP",
                          "diagonal Gaussian (logit space)", "vector RealNVP (flattened, Pyro)",
                          "Pyro - TFP gap", "flowbridge Glow, Pyro",
                          "flowbridge Glow, TFP (same weights)",
                          "flowbridge Glow, JAX (same weights)",
                          "Glow, the same weights in Pyro, TFP and JAX", "digits_density.png"],  # fmt: skip
}


#: Scripts that also train in JAX (the jax extra).
NEEDS_JAX = {"npe_gaussian_linear.py", "eight_schools_numpyro.py", "iaf_guides.py",
             "digits_density.py"}

#: Scripts that need sbi (the sbi extra).
NEEDS_SBI = {"npe_sbi.py"}

#: Scripts that print their figures and save no files.
NO_OUT = {"port_native.py", "distributed_pyro.py", "distributed_tfp.py"}


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_fast_mode(script, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    if script in NEEDS_JAX and not available("jax"):
        pytest.skip("needs jax and numpyro (pip install flowbridge[jax])")
    if script in NEEDS_SBI:
        pytest.importorskip("sbi")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    args = [sys.executable, str(EXAMPLES / script), "--fast"]
    if script not in NO_OUT:
        args += ["--out", str(tmp_path)]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for marker in CASES[script]:
        assert marker in run.stdout, run.stdout[-2000:]
    for png in tmp_path.glob("*.png"):
        assert png.stat().st_size > 10_000
    if script == "port_native.py":
        errors = [float(w) for line in run.stdout.splitlines() if "error" in line
                  for w in line.split() if w.replace(".", "").replace("e-", "").isdigit()]  # fmt: skip
        assert errors and max(errors) < 1e-5
