"""Shared fixtures and options (after zuko's conftest): ``--device`` and ``--dtype``
narrow the conformance matrix; CUDA cases skip with their reason when absent."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_addoption(parser):
    parser.addoption("--device", action="append", choices=["cpu", "cuda"],
                     help="devices to test (default: cpu and cuda)")  # fmt: skip
    parser.addoption("--dtype", action="append", choices=["float32", "float64"],
                     help="dtypes to test (default: both)")  # fmt: skip


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", metafunc.config.getoption("device") or ["cpu", "cuda"])
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", metafunc.config.getoption("dtype") or ["float32", "float64"])


@pytest.fixture(autouse=True, scope="session")
def _precise_math():
    """TF32 off for every correctness test (as Keras's root conftest does)."""
    try:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except ImportError:
        pass
    yield
