"""The backend contract (flowbridge/backends/contract.py): every registered backend
implements it, a backend that leaves a part out is refused naming the part, and the
preludes are real code, inlined into generated modules from their source."""

from __future__ import annotations

import ast
import importlib
import re
import types
from pathlib import Path

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B
from flowbridge import ir
from flowbridge import spec as S
from flowbridge.backends import contract
from flowbridge.backends.contract import (
    RUNTIME_API,
    ContractError,
    Emitter,
    Prelude,
    check_emitter,
    check_runtime,
)

from .cases import CASES


@pytest.mark.parametrize("name", B.NAMES)
def test_every_backend_implements_the_contract(name):
    emitter = B.get(name).emitter()
    assert isinstance(emitter, Emitter)
    check_emitter(type(emitter), name)
    assert emitter.OPS.keys() == ir.OPS.keys()
    # the runtime module is checked without importing its framework: by its source
    source = (Path(B.__file__).parent / name / "runtime.py").read_text()
    defined = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    assert set(RUNTIME_API) <= defined, set(RUNTIME_API) - defined


@pytest.mark.parametrize("name", B.NAMES)
def test_every_backend_folder_has_the_same_modules(name):
    folder = Path(B.__file__).parent / name
    assert {p.name for p in folder.glob("*.py")} >= {"emit.py", "prelude.py", "runtime.py"}


def _complete() -> type:
    return type(B.get("numpy").emitter())


@pytest.mark.parametrize("part", ["layer_class", "embedding_class", "flow_code"])
def test_an_emitter_without_a_method_is_refused(part):
    base = _complete()
    names = ("layer_class", "embedding_class", "flow_code")
    methods = {m: getattr(base, m) for m in names if m != part}
    attrs = {k: v for k, v in vars(base).items() if k not in names and not k.startswith("__")}
    skipping = type("Skipping", (Emitter,), {**attrs, **methods})
    with pytest.raises(ContractError, match=f"methods not implemented: {part}"):
        check_emitter(skipping, "skipping")


@pytest.mark.parametrize("attr", Emitter.REQUIRED)
def test_an_emitter_without_an_attribute_is_refused(attr):
    base = _complete()
    namespace = {k: v for k, v in vars(base).items() if not k.startswith("__")}
    namespace.pop(attr, None)
    if attr == "OPS":  # Emitter's own table is the shared one: a backend without one
        skipping = type("Skipping", (Emitter,), namespace)
        with pytest.raises(ContractError, match="IR ops without a template: "):
            check_emitter(skipping, "skipping")
        return
    skipping = type("Skipping", (Emitter,), namespace)
    with pytest.raises(ContractError, match=f"attributes not set: {attr}"):
        check_emitter(skipping, "skipping")


def test_an_emitter_missing_an_op_or_a_prelude_definition_is_refused():
    base = _complete()
    ops = dict(base.OPS)
    del ops["tanh"]
    no_tanh = type("NoTanh", (base,), {"OPS": ops})
    with pytest.raises(ContractError, match="IR ops without a template: tanh"):
        check_emitter(no_tanh)
    typo = type("Typo", (base,), {"BASE": (*base.BASE, "_no_such_helper")})
    with pytest.raises(ContractError, match="prelude definitions not found: _no_such_helper"):
        check_emitter(typo)


def test_a_runtime_without_a_function_is_refused():
    module = types.ModuleType("partial_runtime")
    for name in RUNTIME_API:
        setattr(module, name, lambda *a, **k: None)
    check_runtime(module)
    del module.jacobian_log_det
    with pytest.raises(ContractError, match="runtime functions missing: jacobian_log_det"):
        check_runtime(module, "partial")


def test_the_registry_refuses_a_backend_whose_emitter_skips_a_part(monkeypatch):
    fake = types.ModuleType("flowbridge.backends.fake.emit")
    base = _complete()
    attrs = {k: v for k, v in vars(base).items() if not k.startswith("__") and k != "flow_code"}
    fake.FakeEmitter = type("FakeEmitter", (Emitter,), {**attrs, "__module__": fake.__name__})
    monkeypatch.setitem(importlib.sys.modules, fake.__name__, fake)
    real = importlib.import_module

    def imports(name, *args):
        return fake if name == fake.__name__ else real(name, *args)

    monkeypatch.setattr(B.importlib, "import_module", imports)
    B._emitter.cache_clear()
    try:
        with pytest.raises(ContractError, match="backend fake: methods not implemented: flow_code"):
            B._emitter("fake")
    finally:
        B._emitter.cache_clear()


# ---------------------------------------------------------------------- preludes
@pytest.mark.parametrize("name", B.NAMES)
def test_generated_modules_inline_the_prelude_verbatim(name):
    """Every prelude definition a generated module holds is the prelude's own source."""
    emitter = B.get(name).emitter()
    table = contract._definitions(emitter.PRELUDE)
    shared = contract._definitions(contract.SHARED.path)
    seen = set()
    for factory in CASES.values():
        code = fb.generate(factory(), name)
        for defined, text in [*table.items(), *shared.items()]:
            if re.search(rf"^(def|class) {re.escape(defined)}\b|^{re.escape(defined)} =", code, re.M):
                assert text in code, f"{defined} differs from {emitter.PRELUDE.name}"
                seen.add(defined)
    assert seen >= set(emitter.BASE)


@pytest.mark.parametrize("name", B.NAMES)
def test_the_prelude_imports_only_what_the_module_header_has(name):
    emitter = B.get(name).emitter()
    header = emitter.CONDITIONAL_IMPORTS + "\n" + "\n".join(emitter.OP_IMPORTS.values())
    for line in Prelude(emitter.PRELUDE).imports().splitlines():
        if line.startswith(("import ", "from ")) and line.strip() not in header:
            # the shared prelude's helpers are inlined into every generated module
            shared = line.startswith("from ..prelude import ")
            assert shared or line.strip().startswith("tfb ="), line


def test_prelude_source_refuses_an_unknown_name():
    with pytest.raises(ContractError, match="defines no _nothing"):
        contract.SHARED.source(["_per_layer", "_nothing"])


def test_shared_prelude_splits_tables_per_layer():
    from flowbridge.backends import prelude

    table = {"layers.0.a": 1, "layers.1.b": 2, "layers.7.c": 3, "context_embedding.0.k": 4}
    assert prelude._per_layer(table, 2) == [{"a": 1}, {"b": 2}]
    assert prelude._under(table, "context_embedding.") == {"0.k": 4}


def test_numpy_prelude_checks_inputs_by_name():
    from flowbridge.backends.numpy import prelude

    layer = prelude._Layer((3,))
    assert prelude._checked(layer, [[1, 2, 3]], "x", (3,)).dtype == np.float64
    with pytest.raises(ValueError, match=r"_Layer: x: expected shape \(\*batch, 3\), got \(2,\)"):
        prelude._checked(layer, [1, 2], "x", (3,))
    with pytest.raises(TypeError, match="expected real numbers, got dtype complex128"):
        prelude._checked(layer, np.ones(3, dtype=complex), "x", (3,))
    rng = np.random.default_rng(0)
    assert not prelude._initial(0.0, (2, 2), rng).any()
    drawn = prelude._initial(0.5, (1000,), rng)
    assert drawn.min() >= -0.5 and drawn.max() <= 0.5 and drawn.std() > 0.2


def test_numpy_prelude_squeeze_is_its_own_inverse_and_moves_pixels_as_stated():
    from flowbridge.backends.numpy import prelude

    x = np.random.default_rng(1).standard_normal((2, 3, 4, 6))
    y = prelude._squeeze2x2(x)
    assert y.shape == (2, 12, 2, 3)
    c, i, j, h, w = 2, 1, 0, 1, 2
    assert y[1, 4 * c + 2 * i + j, h, w] == x[1, c, 2 * h + i, 2 * w + j]
    np.testing.assert_array_equal(prelude._unsqueeze2x2(y), x)


def test_pyro_prelude_clamp_is_straight_through():
    torch = pytest.importorskip("torch")
    pytest.importorskip("pyro")
    from flowbridge.backends.pyro import prelude

    x = torch.tensor([-5.0, 0.5, 5.0], requires_grad=True)
    y = prelude._clamp_straight_through(x, -1.0, 1.0)
    y.sum().backward()
    assert y.tolist() == [-1.0, 0.5, 1.0] and x.grad.tolist() == [1.0, 1.0, 1.0]
    with torch.no_grad():
        assert prelude._clamp_straight_through(x, -1.0, 1.0).tolist() == [-1.0, 0.5, 1.0]


def test_tfp_prelude_moves_event_shapes():
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_probability")
    from flowbridge.backends.tfp import prelude

    moved = prelude._moved_shape(tf.TensorShape([5, 1, 8, 8]), (1, 8, 8), (4, 4, 4))
    assert moved.as_list() == [5, 4, 4, 4]
    with pytest.raises(ValueError, match="data_format: expected"):
        prelude._checked_layout("nhwc")


def test_state_updates_are_written_by_the_emitters_effect():
    """A functional backend returns state updates instead of assigning them: the effect
    hook writes each one (here a stand-in that collects them)."""
    base = _complete()

    def collect(self, op, args):
        return f"updates.append(({args[0]!r}, {args[1]}))"

    functional = type("Functional", (base,), {"effect": collect})
    from flowbridge import codegen, layers

    spec = fb.FlowSpec(name="bn", event_shape=(3,), layers=[S.BatchNorm()])
    plan = layers.plan_flow(spec)[0]
    outputs, _, effects = codegen.trace(plan, "training")
    lines = codegen.emit_body(outputs, {"self", "x"}, base.OPS, effects, None, None,
                              functional().effect)  # fmt: skip
    assert any(ln.startswith("updates.append(('self.") for ln in lines), lines
    assert not any("[...] =" in ln for ln in lines)
