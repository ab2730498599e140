"""Property-based tests (hypothesis): specs, parameter files, inputs and command lines,
valid and hostile.

What every example must show: only :class:`~flowbridge.SpecError`,
:class:`~flowbridge.ParamError`, the documented input errors (``ValueError`` for a shape,
``TypeError`` for a dtype) or a correct result; generated code always compiles and is
ruff-clean; nothing takes longer than the deadline; nothing allocates past
:data:`MEMORY` (spec and parameter handling, measured with tracemalloc).

CI runs a few hundred examples in all. The dedicated run sets ``FLOWBRIDGE_FUZZ`` to
the total wanted (``FLOWBRIDGE_FUZZ=5000 pytest -m fuzz tests/test_properties.py``);
each test takes its share of it.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import tracemalloc
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowbridge as fb
from flowbridge import backends as B
from flowbridge.check import inputs, runtime

pytestmark = pytest.mark.fuzz

TOTAL = int(os.environ.get("FLOWBRIDGE_FUZZ", "320"))
SHARES = {"valid": 0.25, "hostile": 0.3, "inputs": 0.2, "params": 0.15, "cli": 0.1}
DEADLINE_MS = 10_000  # per example; generous for the 2-core machine and ruff's start-up
MEMORY = 256 * 2**20  # bytes, peak of one example's spec or parameter handling


def _settings(share: str, deadline: int = DEADLINE_MS):
    return settings(max_examples=max(10, int(TOTAL * SHARES[share])), deadline=deadline,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    derandomize=TOTAL <= 320)  # fmt: skip


# --------------------------------------------------------------------- spec documents
ACTIVATIONS = ["relu", "tanh", "leaky_relu", "elu", "gelu"]
small_float = st.floats(-8, 8, allow_nan=False).map(lambda v: 0.0 if abs(v) < 1e-30 else v)


@st.composite
def conditioners(draw):
    out = {}
    if draw(st.booleans()):
        out["hidden"] = draw(st.lists(st.integers(1, 6), max_size=3))
    if draw(st.booleans()):
        out["activation"] = draw(st.sampled_from(ACTIVATIONS))
    if draw(st.booleans()):
        out["negative_slope"] = draw(st.floats(0, 1).map(lambda v: 0.0 if v < 1e-30 else v))
    return out


@st.composite
def masks(draw, dim):
    kind = draw(st.sampled_from(["half", "split", "parity", "explicit"]))
    if kind == "half":
        return {"kind": "half", "part": draw(st.sampled_from(["first", "last"])),
                "rounding": draw(st.sampled_from(["floor", "ceil"]))}  # fmt: skip
    if kind == "split":
        return {"kind": "split", "size": draw(st.integers(1, dim - 1)),
                "part": draw(st.sampled_from(["first", "last"]))}  # fmt: skip
    if kind == "parity":
        return {"kind": "parity", "parity": draw(st.sampled_from(["even", "odd"]))}
    values = [True, False] + draw(st.lists(st.booleans(), min_size=dim - 2, max_size=dim - 2))
    return {"kind": "explicit", "values": draw(st.permutations(values))}


@st.composite
def scales(draw):
    kind = draw(st.sampled_from(["exp", "clamp", "soft_clamp", "sigmoid"]))
    if kind == "clamp":
        low = draw(small_float)
        return {"kind": "clamp", "low": low, "high": low + draw(st.floats(0.01, 8))}
    if kind == "soft_clamp":
        return {"kind": "soft_clamp", "bound": draw(st.floats(0.05, 8))}
    if kind == "sigmoid":
        return {"kind": "sigmoid", "offset": draw(small_float)}
    return {"kind": "exp"}


@st.composite
def layers(draw, dim):
    kind = draw(st.sampled_from(["additive_coupling", "affine_coupling", "scaling", "permutation"]))
    if kind == "scaling":
        return {"type": "scaling"}
    if kind == "permutation":
        perm = draw(st.sampled_from(["reverse", "random", "explicit"]))
        if perm == "random":
            return {"type": "permutation", "kind": "random", "seed": draw(st.integers(0, 2**32))}
        if perm == "explicit":
            return {"type": "permutation", "kind": "explicit",
                    "indices": draw(st.permutations(list(range(dim))))}  # fmt: skip
        return {"type": "permutation", "kind": "reverse"}
    out = {"type": kind, "mask": draw(masks(dim)), "conditioner": draw(conditioners())}
    if kind == "affine_coupling":
        out["scale"] = draw(scales())
    return out


@st.composite
def image_specs(draw):
    """A valid image spec: shapes and active channels tracked as the layers go."""
    c, h, w = draw(st.integers(1, 3)), draw(st.sampled_from([2, 4])), draw(st.sampled_from([2, 4]))
    start, active = [c, h, w], c
    layers = [{"type": "logit", "alpha": draw(st.floats(0.01, 0.2))}] * draw(st.booleans())
    for _ in range(draw(st.integers(1, 4))):
        kinds = ["checkerboard", "actnorm", "batch_norm", "scaling"]
        kinds += ["channel", "factor_out"] * (active >= 2) + ["squeeze"] * (h % 2 == w % 2 == 0)
        kind = draw(st.sampled_from(kinds))
        if kind in ("checkerboard", "channel"):
            mask = {"kind": kind, **({"parity": draw(st.sampled_from(["even", "odd"]))}
                                     if kind == "checkerboard" else {})}  # fmt: skip
            net = {"kind": "resnet", "blocks": draw(st.integers(0, 1)),
                   "channels": draw(st.integers(1, 4)),
                   "kernel_size": draw(st.sampled_from([1, 3])),
                   "activation": draw(st.sampled_from(ACTIVATIONS))}  # fmt: skip
            layer = {"type": draw(st.sampled_from(["additive_coupling", "affine_coupling"])),
                     "mask": mask, "conditioner": net}  # fmt: skip
            if layer["type"] == "affine_coupling":
                layer["scale"] = draw(scales())
        elif kind == "batch_norm":
            layer = {"type": "batch_norm", "momentum": draw(st.floats(0.01, 1.0)),
                     "eps": draw(st.floats(1e-6, 1e-2))}  # fmt: skip
        else:
            layer = {"type": kind}
        if kind == "squeeze":
            c, h, w, active = 4 * c, h // 2, w // 2, 4 * active
        elif kind == "factor_out":
            active //= 2
        layers.append(layer)
    return {"format_version": 1, "name": "image", "event_shape": start, "layers": layers}


@st.composite
def valid_specs(draw):
    if draw(st.integers(0, 3)) == 0:  # a quarter of them image flows
        return draw(image_specs())
    dim = draw(st.integers(2, 7))
    doc = {"format_version": 1, "name": draw(st.from_regex(r"[A-Za-z0-9_. -]{0,20}", fullmatch=True)),
           "event_shape": [dim], "layers": draw(st.lists(layers(dim), min_size=1, max_size=4))}  # fmt: skip
    context = draw(st.sampled_from([None, None, 0, 1, 3]))  # absent, explicit 0, conditional
    if context is None:
        return doc
    doc = {**doc, "context_dim": context}
    if context and draw(st.booleans()):  # a context embedding, as small as the conditioners
        doc["context_embedding"] = {**draw(conditioners()), "features": draw(st.integers(1, 4))}
    return doc


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=8) | st.just(10**30) | st.just(float("inf")) | st.just(2**63),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    | st.dictionaries(st.integers(), inner, max_size=2) | st.tuples(inner) | st.frozensets(st.integers(), max_size=3),
    max_leaves=12,
)  # fmt: skip


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@st.composite
def hostile_specs(draw):
    """A valid spec with one value replaced by junk, a key dropped or a key added."""
    doc = draw(valid_specs())
    paths = [p for p in _paths(doc) if p]
    path = draw(st.sampled_from(paths))
    *head, last = path
    parent = doc
    for key in head:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "drop", "add"]))
    if action == "replace" or not isinstance(parent, dict):
        parent[last] = draw(junk)
    elif action == "drop":
        del parent[last]
    else:
        parent[draw(st.text(max_size=6))] = draw(junk)
    return doc


def _schema_valid(doc) -> bool:
    import jsonschema

    return jsonschema.Draft202012Validator(_SCHEMA).is_valid(doc)


_SCHEMA = fb.json_schema()
_RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


def _bounded(fn, *args):
    """``fn(*args)`` with its peak allocation measured; asserts :data:`MEMORY`."""
    tracemalloc.start()
    try:
        return fn(*args)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY, f"allocated {peak} bytes"


@_settings("valid")
@given(valid_specs())
def test_valid_specs_load_generate_clean_code_and_round_trip(doc):
    spec = _bounded(fb.FlowSpec.from_dict, doc)
    assert _schema_valid(doc) and _schema_valid(spec.to_dict())
    assert fb.FlowSpec.from_json(spec.to_json()).hash == spec.hash
    assert fb.FlowSpec.from_yaml(spec.to_yaml()) == spec
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("numpy", "pyro", "tfp"):
            code = fb.generate(spec, backend)
            compile(code, f"<{backend}>", "exec")
            Path(tmp, f"{backend}.py").write_text(code)
        if _RUFF:
            for cmd in (["format", "--check"], ["check", "--no-cache"]):
                run = subprocess.run([_RUFF, *cmd, tmp], capture_output=True, text=True)
                assert run.returncode == 0, run.stdout + run.stderr
    params = fb.init_params(spec, 0, init="random")
    flow = runtime("numpy").build(fb.module_for(spec, "numpy"), params, "float64", "cpu")  # batch norms: evaluation
    rng = np.random.default_rng(0)
    x = inputs(spec, 3, rng)
    given = (rng.standard_normal((3, spec.context_dim)),) if spec.context_dim else ()
    y, ld = flow.forward_with_log_det(x, *given)
    x2, ild = flow.inverse_with_log_det(y.copy(), *given)
    assert y.shape == (3, *spec.output_shape) and ld.shape == (3,)
    h, worst = x, 0.0  # each layer's own log-det: scales can cancel in the total
    if given and getattr(flow, "embedding", None) is not None:
        given = (flow.embedding(given[0]),)  # the layers read the embedded context
    for layer in flow.layers:
        h, layer_ld = layer.forward_with_log_det(h, *given[: bool(getattr(layer, "context_dim", 0))])
        worst = max(worst, float(np.max(np.abs(layer_ld))))
    if not (np.all(np.abs(y) < 1e4) and worst < 12):
        return  # random weights and clamp bounds up to 8 can scale by e**40: ill-conditioned
    np.testing.assert_allclose(x2, x, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(ild, -ld, rtol=1e-7, atol=1e-7)


@_settings("hostile")
@given(hostile_specs())
def test_hostile_specs_give_spec_errors_only_and_agree_with_the_schema(doc):
    try:
        spec = _bounded(fb.FlowSpec.from_dict, doc)
    except fb.SpecError as exc:
        assert str(exc) and len(str(exc).splitlines()[0]) < 400
        if _json_only(doc):  # a document the schema can judge: it must not pass it either,
            # unless a rule that relates fields (listed in the schema's description) fails
            assert not _schema_valid(doc) or _cross_field(str(exc))
        return
    if _json_only(doc):  # (Python data may hold tuples, which JSON Schema does not know)
        assert _schema_valid(doc), "a document that loads must be schema-valid"
    compile(fb.generate(spec, "numpy"), "<numpy>", "exec")


def _json_only(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_only(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**63
    return value is None or isinstance(value, (bool, str))


_CROSS = ("expected fewer than the", "booleans (one per event entry)", "a mask that passes",
          "a permutation of", "for kind", "expected a value > low", "expected no",
          "parameters in all", "expected context_dim > 0", "for events of shape",
          "events for a", "even height", "at least 2", "layer first", "for image events")  # fmt: skip


def _cross_field(message: str) -> bool:
    return any(text in message for text in _CROSS)


@settings(max_examples=max(10, int(TOTAL * 0.05)), deadline=DEADLINE_MS, derandomize=TOTAL <= 320)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_give_spec_errors_only(data):
    for loader in (fb.FlowSpec.from_json, fb.FlowSpec.from_yaml):
        try:
            _bounded(loader, data)
        except fb.SpecError:
            pass


# ----------------------------------------------------------------------------- inputs
INPUT_SPEC = fb.FlowSpec.from_dict({"event_shape": [5], "layers": [
    {"type": "affine_coupling", "mask": {"kind": "parity"}, "conditioner": {"hidden": [6]},
     "scale": {"kind": "clamp"}},
    {"type": "additive_coupling", "mask": {"kind": "split", "size": 2}}, {"type": "scaling"},
    {"type": "permutation", "kind": "random", "seed": 3}]})  # fmt: skip
INPUT_PARAMS = fb.init_params(INPUT_SPEC, 0, init="random")
REFERENCE = fb.to_numpy(INPUT_SPEC, INPUT_PARAMS)


@st.composite
def arrays(draw):
    rank = draw(st.integers(0, 3))
    shape = [draw(st.integers(0, 3)) for _ in range(rank - 1)]
    if rank:
        shape.append(draw(st.sampled_from([5, 5, 5, 4, 6, 1, 0, 10])))
    dtype = draw(st.sampled_from(["float64", "float32", "int64", "complex128", "bool", "float16"]))
    values = np.random.default_rng(draw(st.integers(0, 100))).standard_normal(shape)
    return values.astype(dtype) if dtype != "complex128" else values + 1j


def _good(x) -> bool:
    return x.ndim >= 1 and x.shape[-1] == 5


@pytest.mark.parametrize("backend", B.NAMES)
@_settings("inputs")
@given(x=arrays())
def test_inputs_give_a_correct_result_or_the_documented_error(backend, x):
    if backend == "numpy":
        flow = fb.to_numpy(INPUT_SPEC, INPUT_PARAMS)  # this row's own (cached) module
        call = {"forward": flow.forward, "inverse": flow.inverse}
        real = x.dtype.kind in "iuf"
    elif backend == "pyro":
        torch = pytest.importorskip("torch")
        flow = _framework_flow("pyro")
        t = torch.as_tensor(x)
        call = {"forward": lambda _: flow(t).detach().numpy(), "inverse": lambda _: flow.inv(t).detach().numpy()}
        real = x.dtype == np.float64  # torch: the flow's own dtype
    elif backend == "tfp":
        pytest.importorskip("tensorflow_probability")
        flow = _framework_flow("tfp")
        call = {"forward": lambda _: flow.forward(x).numpy(), "inverse": lambda _: flow.inverse(x).numpy()}
        real = x.dtype.kind in "iuf"  # TFP converts NumPy inputs to the flow's dtype
    else:
        jax = pytest.importorskip("jax")
        flow = _framework_flow("jax")

        def in_x64(fn):
            def run(_):
                with jax.enable_x64(True):
                    return np.asarray(fn(x))

            return run

        call = {"forward": in_x64(flow.forward), "inverse": in_x64(flow.inverse)}
        real = x.dtype.kind in "iuf"  # JAX's flows take NumPy integers and floats alike
    for direction, fn in call.items():
        if real and _good(x):
            want = getattr(REFERENCE, direction)(x)
            np.testing.assert_allclose(fn(x), want, rtol=1e-10, atol=1e-12)
            continue
        with pytest.raises((ValueError, TypeError)) as info:
            fn(x)
        assert "expected" in str(info.value) and "*batch, 5" in str(info.value) or \
            "expected" in str(info.value) and "dtype" in str(info.value)  # fmt: skip


_FLOWS: dict = {}


def _framework_flow(backend):
    if backend not in _FLOWS:
        build = getattr(fb, f"to_{backend}")
        with pytest.importorskip("jax").enable_x64(True) if backend == "jax" else nullcontext():
            _FLOWS[backend] = build(INPUT_SPEC, INPUT_PARAMS, dtype="float64")
    return _FLOWS[backend]


# ------------------------------------------------------------------- parameter files
@st.composite
def param_sets(draw):
    shapes = fb.param_shapes(INPUT_SPEC)
    out = {}
    for name, shape in shapes.items():
        action = draw(st.sampled_from(["keep"] * 6 + ["drop", "shape", "dtype", "nan", "junk"]))
        if action == "drop":
            continue
        value = np.zeros(shape)
        if action == "shape":
            value = np.zeros(tuple(n + 1 for n in shape))
        elif action == "dtype":
            value = value.astype(draw(st.sampled_from(["int32", "bool", "complex64", "float16"])))
        elif action == "nan":
            value = value.copy()
            value.flat[0] = np.nan
        elif action == "junk":
            value = draw(junk)
        out[name] = value
    if draw(st.booleans()):
        out[draw(st.text(max_size=10))] = np.zeros(2)
    return out


@_settings("params")
@given(param_sets(), st.binary(max_size=200))
def test_params_and_files_give_param_errors_only(params, raw):
    try:
        checked = _bounded(fb.check_params, INPUT_SPEC, params)
    except fb.ParamError as exc:
        assert str(exc)
    else:
        assert checked.keys() == fb.param_shapes(INPUT_SPEC).keys()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "p.safetensors")
        try:
            fb.save_params(params, path, INPUT_SPEC)
        except fb.ParamError:
            path.write_bytes(raw)
        try:
            loaded = _bounded(fb.load_params, path, INPUT_SPEC)
        except fb.ParamError:
            return
        assert loaded.keys() == fb.param_shapes(INPUT_SPEC).keys()


# -------------------------------------------------------------------- command lines
SPECS_DIR = Path(__file__).resolve().parent.parent / "examples" / "specs"
WORDS = ["generate", "check", "validate", "schema", "init-params", "-b", "numpy", "-o", "--json",
         "--params", "--bundle", "--seed", "--batch", "-1", "0", "3", "--device", "cuda", "cpu",
         "--dtype", "float16", "SPEC", "BADSPEC", "OUT", "SAME", "/dev/full", "/nonexistent/x",
         "--random", "--max-width", "--allow-other-spec", "--save-bundle", ""]  # fmt: skip


@_settings("cli")
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=7))
def test_command_lines_exit_with_a_documented_code_and_one_error_line(words):
    from click.testing import CliRunner

    from flowbridge.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp, "s.yaml")
        spec.write_text((SPECS_DIR / "nice_d2.yaml").read_text())
        bad = Path(tmp, "bad.yaml")
        bad.write_text("event_shape: [0]\n")
        subs = {"SPEC": str(spec), "BADSPEC": str(bad), "OUT": str(Path(tmp, "out")), "SAME": str(spec)}
        args = [subs.get(w, w) for w in words]
        res = CliRunner().invoke(main, args)
        assert res.exit_code in (0, 1, 2, 3), (args, res.output)
        if res.exit_code not in (0, 1):
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (args, res.stderr)
        assert spec.read_text() == (SPECS_DIR / "nice_d2.yaml").read_text(), args
