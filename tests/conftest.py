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


# ----------------------------------------------------------- a backend's row runs it
#: Backends whose generated code the running test generated, loaded or took from the
#: module cache (``flowbridge.codegen``'s three doors), set by the wrappers below.
_TOUCHED: set[str] = set()


def _recording(function, backend_of, hits_only=False):
    """``function`` recording its backend when called (``hits_only``: when it returns
    something, as the module cache's lookup does on a hit)."""

    def wrapper(*args, **kwargs):
        if not hits_only:
            _TOUCHED.add(backend_of(*args, **kwargs))
        result = function(*args, **kwargs)
        if hits_only and result is not None:
            _TOUCHED.add(backend_of(*args, **kwargs))
        return result

    wrapper.__wrapped__ = function
    return wrapper


def pytest_collection_modifyitems(config, items):
    """Tests marked ``long`` (benchmark smoke runs: several framework processes each) run
    with ``FLOWBRIDGE_LONG=1`` only, so CI stays within its time; their figures come from
    the full runs the notes name."""
    if os.environ.get("FLOWBRIDGE_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="a long run: FLOWBRIDGE_LONG=1 runs it")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)


def pytest_configure(config):
    from flowbridge import codegen

    if not hasattr(codegen.generate, "__wrapped__"):
        codegen.generate = _recording(codegen.generate, lambda spec, backend, *a, **k: backend)
        codegen.loaded = _recording(codegen.loaded, lambda backend, *a, **k: backend, True)
        codegen.load = _recording(codegen.load, lambda code, backend, *a, **k: backend)


def _row_backend(item) -> str | None:
    from flowbridge import backends

    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("backend") if callspec is not None else None
    return value if isinstance(value, str) and value in backends.NAMES else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    _TOUCHED.clear()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """The guard: a row parametrized ``backend=NAME`` that passes must have generated,
    loaded or reused NAME's generated code, in its set-up or its call (a row that
    falls through to another backend fails here). Rows that check a backend without
    its generated code (its emitter's table, its registry entry) say so with
    ``@pytest.mark.no_generated_code(reason)``."""
    outcome = yield
    backend = _row_backend(item)
    if (backend is None or outcome.excinfo is not None
            or item.get_closest_marker("no_generated_code") is not None):  # fmt: skip
        return
    if backend not in _TOUCHED:
        outcome.force_exception(AssertionError(
            f"{item.nodeid}: the {backend!r} row ran no generated {backend} code "
            f"(it touched: {sorted(_TOUCHED) or 'none'})"))  # fmt: skip
