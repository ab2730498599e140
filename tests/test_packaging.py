"""Packaging: the wheel, installed with the core dependencies only into a fresh
environment outside the source tree, generates and checks a shipped spec in NumPy (the
preludes travel in it as modules), and marks the package typed (PEP 561)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, cwd, timeout=600):
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_installs_with_core_dependencies_and_checks_a_spec(tmp_path):
    dist, env = tmp_path / "dist", tmp_path / "env"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
         tmp_path)  # fmt: skip
    (wheel,) = dist.glob("flowbridge-*.whl")
    _run([sys.executable, "-m", "venv", str(env)], tmp_path)
    python = env / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], tmp_path)
    out = _run([str(env / "bin" / "flowbridge"), "check", str(ROOT / "examples/specs/nice_d2.yaml"),
                "-b", "numpy"], tmp_path)  # fmt: skip
    assert "PASS" in out
    probe = ("import importlib.util, pathlib, flowbridge; "
             "assert not any(importlib.util.find_spec(m) for m in ('torch', 'tensorflow', 'jax')); "
             "root = pathlib.Path(flowbridge.__file__).parent; "
             "assert (root / 'py.typed').exists(); "
             "assert str(root).startswith(str(pathlib.Path(__import__('sys').prefix)))")  # fmt: skip
    _run([str(python), "-c", probe], tmp_path)
