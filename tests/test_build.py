"""Building flows (:mod:`flowbridge.build`): the module cache is shared and thread-safe."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import flowbridge as fb


def test_threads_building_one_spec_get_one_module():
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


def test_a_loaded_spec_is_neither_planned_nor_generated_again(monkeypatch):
    """spec -> plans -> IR -> source -> module runs once per spec and backend: the cache
    is consulted by spec hash before any work."""
    from flowbridge import codegen, layers

    spec = fb.realnvp(4, hidden=(3,), name="cached-once")
    params = fb.init_params(spec, 0, init="random")
    first = fb.to_numpy(spec, params)

    def refuse(*args, **kwargs):
        raise AssertionError("planned or generated again")

    for module, name in ((codegen, "generate"), (codegen, "plan_flow"), (layers, "plan_flow")):
        monkeypatch.setattr(module, name, refuse)
    second = fb.to_numpy(spec, params)
    assert fb.module_for(spec, "numpy") is codegen.loaded("numpy", spec.hash)
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(first.forward(x), second.forward(x))


def test_generation_plans_the_flow_once(monkeypatch):
    from flowbridge import codegen, layers

    spec = fb.realnvp(4, hidden=(3,), name="planned-once")
    calls = []
    real = layers.plan_flow

    def counting(s):
        calls.append(s.hash)
        return real(s)

    monkeypatch.setattr(codegen, "plan_flow", counting)
    monkeypatch.setattr(layers, "plan_flow", counting)
    fb.generate(spec, "numpy")
    assert calls == [spec.hash]


def test_a_first_build_plans_the_flow_once(monkeypatch):
    """spec -> plans (once) -> IR -> source -> module: checking the params and
    generating the module share one set of plans."""
    from flowbridge import build, codegen, layers

    spec = fb.realnvp(4, hidden=(3,), name="built-planned-once")
    params = fb.init_params(spec, 0, init="random")
    calls = []
    real = layers.plan_flow

    def counting(s):
        calls.append(s.hash)
        return real(s)

    for module in (build, codegen, layers):
        monkeypatch.setattr(module, "plan_flow", counting)
    fb.to_numpy(spec, params)
    assert calls == [spec.hash]


def test_builders_and_check_refuse_bad_options_by_name():
    """Found while documenting: an unknown device was dropped silently (an empty report),
    a dict spec failed inside check, an unknown dtype name failed inside torch."""
    spec = fb.nice(2)
    with pytest.raises(ValueError, match="devices: expected some of cpu, cuda, got 'tpu'"):
        fb.check(spec, backends=("numpy",), devices=("tpu",))
    assert fb.check(spec.to_dict(), backends=("numpy",)).ok
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="dtype: expected 'float32', 'float64' or a torch"):
        fb.to_pyro(spec, dtype="float33")
