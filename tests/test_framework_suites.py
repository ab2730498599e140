"""The checks Pyro's and TFP's own test suites apply to their transforms and bijectors,
applied to flowbridge's generated flows and written in our own code (none copied).

Pyro (``tests/distributions/test_transforms.py``): the log-det against a finite-difference
Jacobian, the inverse with caches bypassed, the shapes of a TransformedDistribution's
samples and log-probs, and the log-det against the autograd Jacobian. TFP
(``bijector_test_util``): bijective and finite, the forward log-det against log|det| of the
autodiff Jacobian ("fldj_theoretical"), ildj(f(x)) == -fldj(x), and a TransformedDistribution's
log_prob consistent with its sample. TFP's checks run in its three execution regimes: eager,
inside ``tf.function``, and TF1 graph mode (``tf.Graph`` + ``tf.compat.v1.Session``).

Every flow carries random non-identity weights (an identity flow passes every check), and
each result is also held against the float64 NumPy reference. Pyro and TFP cache the last
forward/inverse by object identity, so inverses are taken of fresh copies (``clone``,
``tf.identity``) unless a test is about the cache itself.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import flowbridge as fb

from .cases import CASES

#: absolute and relative tolerances, one place
TOL = {
    "float64": 1e-10,  # a framework in float64 against itself or the math
    "float32": 1e-4,  # a framework in float32
    "reference": 1e-12,  # a framework in float64 against the float64 NumPy reference
    "finite_difference": 1e-6,  # against a central-difference Jacobian or its log|det|
}
FD_EPS = 1e-6  # central-difference step
BATCH = 6  # rows per input
JAC_ROWS = 3  # rows whose full Jacobian is formed
NAMES = sorted(CASES)
LOG_2PI = float(np.log(2 * np.pi))
SAMPLE_SEED = (7, 11)  # a stateless seed: the same draws in every regime


class _AtContext:
    """A conditional reference flow at one context: the unconditional reference API."""

    def __init__(self, flow, context):
        self.flow, self.context = flow, context

    def __getattr__(self, name):  # forward, inverse, *_with_log_det, *_log_det_jacobian
        method = getattr(self.flow, name)
        return lambda value: method(value, self.context)


def _context(spec) -> np.ndarray:
    """The fixed context a conditional case is checked at (one for every row)."""
    return np.random.default_rng(5).standard_normal(spec.context_dim)


@functools.cache
def _case(name: str, seed: int = 0):
    """(spec, random non-identity params, float64 NumPy reference) of a case; a
    conditional case's reference is the flow at :func:`_context`."""
    spec = CASES[name]()
    params = fb.init_params(spec, seed, init="random")
    ref = fb.to_numpy(spec, params)
    return spec, params, _AtContext(ref, _context(spec)) if spec.context_dim else ref


def _normal(n: int, d: int, seed: int, dtype: str = "float64") -> np.ndarray:
    """Standard-normal draws, rounded to ``dtype`` (then float64 inputs for the reference
    are exactly the framework's inputs)."""
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def _close(got, want, tol: float, what: str = ""):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                               rtol=tol, atol=tol, err_msg=what)  # fmt: skip


def _ref_log_prob(ref, s):
    """log density of the flow at ``s``: standard-normal base at f^-1(s) plus ildj."""
    z, ildj = ref.inverse_with_log_det(np.asarray(s, np.float64))
    return -0.5 * np.sum(z**2, -1) - 0.5 * z.shape[-1] * LOG_2PI + ildj


def _straight_through(spec) -> bool:
    """Whether a layer clamps its log-scale with the gradient passed straight through (as
    Pyro's clamp_preserve_gradients): the autodiff Jacobian's off-diagonal blocks are then
    not the true derivative by design, though its determinant still is (the blocks it
    changes lie off the triangular structure's diagonal)."""
    return any(getattr(getattr(layer, "scale", None), "kind", None) == "clamp"
               for layer in spec.layers)  # fmt: skip


def _has_coupling(spec) -> bool:
    return any(layer.type in ("additive_coupling", "affine_coupling") for layer in spec.layers)


def _features(spec) -> set:
    """What a flow exercises: layer types, mask kinds, scale maps, activations,
    conditioner depths and permutation kinds."""
    out = set()
    for layer in spec.layers:
        out.add(("type", layer.type))
        if layer.type == "permutation":
            out.add(("permutation", layer.kind))
        for part in ("mask", "scale"):
            if getattr(layer, part, None) is not None:
                out.add((part, getattr(layer, part).kind))
        if getattr(layer, "conditioner", None) is not None:
            out.add(("activation", layer.conditioner.activation))
            out.add(("depth", len(layer.conditioner.hidden)))
    return out


#: TFP's regimes. Tracing (tf.function, graph) costs about 0.5 s per layer per dtype on
#: 2 cores, so the traced regimes run the single-layer cases (one layer type, mask, scale
#: map, activation or permutation kind each; together every one, see
#: test_traced_cases_cover_every_feature) plus one chain of every layer type; eager runs
#: every case.
REGIMES = ["eager", "tf_function", "graph"]
TRACED_NAMES = [n for n in NAMES if len(CASES[n]().layers) == 1] + ["example_mixed_d7_explicit"]
#: TFP's checks run on every case; a conditional case is checked at :func:`_context`,
#: passed as ``conditional_input=`` to every call and in ``bijector_kwargs`` to its
#: TransformedDistribution (as Pyro's checks run on ``flow.condition(context)``). One
#: conditional flow (with a context embedding) also runs in the traced regimes.
TFP_NAMES = NAMES
TFP_TRACED = [*TRACED_NAMES, "realnvp_conditional_embedded_d4_c3"]
TFP_MATRIX = [(n, "eager") for n in TFP_NAMES] + [
    (n, r) for r in REGIMES[1:] for n in TFP_TRACED]  # fmt: skip


def test_traced_cases_cover_every_feature():
    every = set().union(*(_features(CASES[n]()) for n in NAMES))
    traced = set().union(*(_features(CASES[n]()) for n in TRACED_NAMES))
    assert len(every) >= 20 and traced == every, sorted(every - traced)
    assert any(len(CASES[n]().layers) > 1 for n in TRACED_NAMES)


# ------------------------------------------------------------------------------ Pyro
@pytest.fixture
def torch():
    pytest.importorskip("pyro")
    return pytest.importorskip("torch")


def _clear_caches(flow):
    """Forget every (x, y) pair the compose and its parts cached (torch's cache slot)."""
    for t in [flow, *flow.parts]:
        if getattr(t, "_cache_size", 0):
            t._cached_x_y = None, None


def _pyro_flow(name: str, dtype: str):
    """The case's Pyro flow (a conditional one at :func:`_context`, via condition())."""
    spec, params, ref = _case(name)
    flow = fb.to_pyro(spec, params, dtype=dtype)
    if spec.context_dim:
        import torch

        flow = flow.condition(torch.tensor(_context(spec), dtype=getattr(torch, dtype)))
    return spec, flow, ref


@pytest.mark.parametrize("name", NAMES)
def test_pyro_inverse(name, dtype, torch):
    """x -> y -> inv(copy of y) gives x back; the inverse's log-det is minus the forward's."""
    spec, flow, ref = _pyro_flow(name, dtype)
    tol = TOL[dtype]
    x = torch.tensor(_normal(BATCH, spec.dim, 1, dtype))
    with torch.no_grad():
        y = flow(x)
        y_copy = y.clone()
        _clear_caches(flow)
        x2 = flow.inv(y_copy)
        assert x2 is not x  # computed, not fetched
        _close(x2, x, tol, "inv(f(x))")
        # the inverse's log-det, through Pyro: after inv(), the parts' caches hold the
        # inverse pass, so log_abs_det_jacobian(x2, y_copy) is minus the inverse log-det
        ld_inverse_pass = flow.log_abs_det_jacobian(x2, y_copy)
        # ... and by hand, layer by layer through the generated inverse
        z, ildj = y.clone(), 0.0
        for part in reversed(flow.parts):
            z, ld = part.inverse_with_log_det(z)
            ildj = ildj + ld
        _clear_caches(flow)
        ld_forward = flow.log_abs_det_jacobian(x.clone(), y.clone())  # recomputed from x
        assert ld_forward.shape == (BATCH,)
        _close(ld_inverse_pass, ld_forward, tol, "-ildj(y) vs fldj(x)")
        _close(-np.broadcast_to(np.asarray(ildj), (BATCH,)), ld_forward, tol, "layer ildj")
        _close(z, x, tol, "layerwise inverse")
        _close(ld_forward, ref.forward_log_det_jacobian(x.numpy()),
               TOL["reference"] if dtype == "float64" else tol, "fldj vs reference")  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_pyro_jacobian_finite_differences(name, torch):
    """log_abs_det_jacobian against log|det| of a central-difference Jacobian (float64)."""
    spec, flow, _ = _pyro_flow(name, "float64")
    d = spec.dim
    x = torch.tensor(_normal(JAC_ROWS, d, 2))
    step = FD_EPS * torch.eye(d, dtype=torch.float64)
    with torch.no_grad():
        plus = flow(x[:, None, :] + step)  # (rows, j, D): f(x + eps e_j)
        minus = flow(x[:, None, :] - step)
        jac = ((plus - minus) / (2 * FD_EPS)).transpose(1, 2)  # J[r, i, j] = d y_i / d x_j
        sign, ld_fd = torch.linalg.slogdet(jac)
        _clear_caches(flow)
        ld = flow.log_abs_det_jacobian(x, flow(x))
    assert torch.all(sign != 0), "finite-difference Jacobian is singular"
    _close(ld, ld_fd, TOL["finite_difference"], "fldj vs finite differences")


@pytest.mark.parametrize("name", NAMES)
def test_pyro_autodiff_jacobian(name, dtype, torch):
    """log_abs_det_jacobian against log|det| of the autograd Jacobian, row by row."""
    spec, flow, ref = _pyro_flow(name, dtype)
    x = torch.tensor(_normal(JAC_ROWS, spec.dim, 3, dtype))
    jacs = [torch.autograd.functional.jacobian(flow, row.clone(), vectorize=True) for row in x]
    ld_ad = torch.stack([torch.linalg.slogdet(j.double())[1] for j in jacs])
    with torch.no_grad():
        _clear_caches(flow)
        ld = flow.log_abs_det_jacobian(x, flow(x))
    _close(ld, ld_ad, TOL[dtype], "fldj vs autograd Jacobian")
    # and the autograd Jacobian is the reference's (the flow's own derivative, not just its det)
    if not _straight_through(spec):
        ref_fd = _ref_fd_jacobian(ref, x.double().numpy())
        tol = max(TOL[dtype], TOL["finite_difference"])
        _close(torch.stack(jacs).double(), ref_fd, tol, "Jacobian vs reference")


def _ref_fd_jacobian(ref, x):
    """Central-difference Jacobians (rows, D, D) of the NumPy reference at the rows of x."""
    d = x.shape[-1]
    step = FD_EPS * np.eye(d)
    plus, minus = ref.forward(x[:, None, :] + step), ref.forward(x[:, None, :] - step)
    return np.swapaxes((plus - minus) / (2 * FD_EPS), 1, 2)


@pytest.mark.parametrize("name", NAMES)
def test_pyro_transformed_distribution_shapes(name, dtype, torch):
    import pyro
    import pyro.distributions as dist

    spec, flow, ref = _pyro_flow(name, dtype)
    d, tol = spec.dim, TOL[dtype]
    tdt = getattr(torch, dtype)
    base = dist.Normal(torch.zeros(d, dtype=tdt), 1.0).to_event(1)
    q = dist.TransformedDistribution(base, [flow])
    assert q.event_shape == (d,) and q.batch_shape == ()
    pyro.set_rng_seed(5)
    with torch.no_grad():
        s = q.sample((2, 3))
        assert s.shape == (2, 3, d) and s.dtype == tdt
        lp = q.log_prob(s)  # cache path: inv(s) is the very base draw
        assert lp.shape == (2, 3) and torch.isfinite(lp).all()
        _clear_caches(flow)
        lp_fresh = q.log_prob(s.clone())  # math path
        _close(lp_fresh, lp, tol, "log_prob: cache path vs math path")
        _close(lp, _ref_log_prob(ref, s.numpy()), tol, "log_prob vs reference")
        one = q.sample()
        assert one.shape == (d,) and q.log_prob(one).shape == ()
        # a single event (no batch axis) goes through and equals its row of a batched call
        x = torch.tensor(_normal(4, d, 6, dtype))
        _clear_caches(flow)
        y_batched = flow(x)
        ld_batched = flow.log_abs_det_jacobian(x, y_batched)
        x0 = x[1].clone()
        y0 = flow(x0)
        ld0 = flow.log_abs_det_jacobian(x0, y0)
        assert y0.shape == (d,) and ld0.shape == ()
        _close(y0, y_batched[1], tol, "single event forward")
        _close(ld0, ld_batched[1], tol, "single event log-det")
        x0_back = flow.inv(y0.clone())
        assert x0_back.shape == (d,)
        _close(x0_back, x0, tol, "single event inverse")


@pytest.mark.parametrize("name", NAMES)
def test_pyro_matches_reference(name, dtype, torch):
    spec, flow, ref = _pyro_flow(name, dtype)
    tol = TOL["reference"] if dtype == "float64" else TOL[dtype]
    x = _normal(BATCH, spec.dim, 7, dtype)
    with torch.no_grad():
        y = flow(torch.tensor(x)).numpy()
        x2 = flow.inv(torch.tensor(y)).numpy()  # a fresh tensor: no cache
    y_ref = ref.forward(x)
    assert not np.allclose(y_ref, x, atol=1e-3), "the weights under test make the identity"
    _close(y, y_ref, tol, "forward vs reference")
    _close(x2, ref.inverse(y), tol, "inverse vs reference")


def test_pyro_cache_answers_identical_tensor(torch):
    """Pyro's cache (cache_size=1) hands back the very input object for inv(f(x))."""
    spec, flow, _ = _pyro_flow("affine_exp_d3", "float64")
    assert len(flow.parts) == 1 and flow.parts[0]._cache_size == 1
    x = torch.tensor(_normal(BATCH, spec.dim, 8))
    y = flow(x)
    assert flow.inv(y) is x  # cache hit: the same object, no arithmetic
    assert flow(x) is y  # forward cache too
    x2 = flow.inv(y.clone())
    assert x2 is not x
    torch.testing.assert_close(x2, x, rtol=TOL["float64"], atol=TOL["float64"])
    # a whole multi-layer flow chains the parts' caches the same way
    spec, flow, _ = _pyro_flow("example_mixed_d7_explicit", "float64")
    x = torch.tensor(_normal(BATCH, spec.dim, 9))
    assert flow.inv(flow(x)) is x


# ------------------------------------------------------------------------------- TFP
@pytest.fixture
def tfp():
    return pytest.importorskip("tensorflow_probability")


def _to_tfp(name: str, dtype: str, seed: int = 0):
    """fb.to_tfp with the case's params (in graph mode they are the variables' initial
    values, so the plain TF1 recipe below needs nothing else)."""
    spec, params, ref = _case(name, seed)
    return spec, fb.to_tfp(spec, params, dtype=dtype), ref


def run(regime: str, build, compute):
    """numpy results of ``compute(build())`` in one of TFP's execution regimes.

    build() makes the bijectors (and anything holding variables); compute(objs) returns
    a structure of tensors. eager: called directly; tf_function: compute is wrapped in a
    tf.function (objects built outside, as variables must be); graph: both run inside a
    fresh tf.Graph and are evaluated in a tf.compat.v1.Session after the initializer.
    """
    import tensorflow as tf

    if regime == "eager":
        out = compute(build())
    elif regime == "tf_function":
        objs = build()
        out = tf.function(lambda: compute(objs), autograph=False)()
    elif regime == "graph":
        with tf.Graph().as_default() as graph:
            objs = build()
            fetch = compute(objs)
            assert not tf.executing_eagerly()
            with tf.compat.v1.Session(graph=graph) as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                return sess.run(fetch)
    else:
        raise ValueError(regime)
    return tf.nest.map_structure(lambda t: t.numpy(), out)


def _tf_copy(t):
    """A fresh tensor equal to ``t`` (a different object: no cache hit)."""
    import tensorflow as tf

    copy = tf.identity(t)
    assert copy is not t
    return copy


def _given(name: str, dtype: str) -> dict:
    """``{"conditional_input": the case's context}`` for a conditional case, else {}
    (a tensor made where it is called: inside the regime's graph)."""
    import tensorflow as tf

    spec = _case(name)[0]
    return {"conditional_input": tf.constant(_context(spec), dtype)} if spec.context_dim else {}


def _jacobians(f, points):
    """Autodiff Jacobians (rows, D, D) of the row-wise map ``f`` at the rows of ``points``,
    from one forward and one backward pass: row r is repeated D times and the copy i
    back-propagates output i alone, so its input gradient is row i of J (the same numbers
    as GradientTape.batch_jacobian, without its per-regime pfor cost; rows that leaked into
    each other would show up as wrong entries)."""
    import tensorflow as tf

    rows, d = points.shape
    reps = tf.repeat(points, d, axis=0)  # (rows * D, D)
    select = tf.tile(tf.eye(d, dtype=points.dtype), [rows, 1])
    with tf.GradientTape() as tape:
        tape.watch(reps)
        out = f(reps)
        picked = tf.reduce_sum(out * select)
    return tf.reshape(tape.gradient(picked, reps), [rows, d, d])


@functools.cache
def _tfp_results(name: str, dtype: str, regime: str) -> dict:
    """Everything the four TFP suites below look at, computed once per case, dtype and
    regime (one trace instead of four); the tests then each assert their part."""
    import tensorflow as tf

    tfd = _tfd()
    spec = _case(name)[0]
    d = spec.dim
    x_np = _normal(BATCH, d, 11, dtype)
    y0_np = _normal(BATCH, d, 12, dtype)

    def compute(objs):
        _, bij, _ = objs
        x, y0, kw = tf.constant(x_np), tf.constant(y0_np), _given(name, dtype)
        out = {}
        # bijective and finite, both directions, every inverse of a fresh copy
        out["y"] = y = bij.forward(x, **kw)
        out["x_back"] = x_back = bij.inverse(_tf_copy(y), **kw)
        out["fldj"] = bij.forward_log_det_jacobian(_tf_copy(x), event_ndims=1, **kw)
        out["ildj"] = bij.inverse_log_det_jacobian(_tf_copy(y), event_ndims=1, **kw)
        out["x0"] = x0 = bij.inverse(y0, **kw)
        out["y0_back"] = y0_back = bij.forward(_tf_copy(x0), **kw)
        out["ildj0"] = bij.inverse_log_det_jacobian(_tf_copy(y0), event_ndims=1, **kw)
        out["fldj0"] = bij.forward_log_det_jacobian(_tf_copy(x0), event_ndims=1, **kw)
        assert x_back is not x and y0_back is not y0  # computed, not a cache hit
        # theoretical log-dets: Jacobians of forward at x[:JAC_ROWS], of inverse at y0[:JAC_ROWS]
        out["jac_f"] = _jacobians(lambda v: bij.forward(v, **kw), x[:JAC_ROWS])
        out["jac_i"] = _jacobians(lambda v: bij.inverse(v, **kw), y0[:JAC_ROWS])
        # a single event, no batch axis
        x1 = tf.constant(x_np[1])
        out["y1"] = y1 = bij.forward(x1, **kw)
        out["fldj1"] = bij.forward_log_det_jacobian(x1, event_ndims=1, **kw)
        out["x1_back"] = bij.inverse(_tf_copy(y1), **kw)
        out["ildj1"] = bij.inverse_log_det_jacobian(_tf_copy(y1), event_ndims=1, **kw)
        # TransformedDistribution: sample, then log_prob three ways
        base = tfd.MultivariateNormalDiag(loc=tf.zeros(d, dtype))
        q = tfd.TransformedDistribution(base, bij)
        out["s"] = s = q.sample(4, seed=SAMPLE_SEED, bijector_kwargs=kw)
        out["lp"] = q.log_prob(s, bijector_kwargs=kw)  # the cache answers the very sample's
        s_copy = _tf_copy(s)
        out["lp_by_hand"] = (base.log_prob(bij.inverse(s_copy, **kw))
                             + bij.inverse_log_det_jacobian(s_copy, event_ndims=1, **kw))  # fmt: skip
        out["lp_fresh"] = q.log_prob(_tf_copy(s), bijector_kwargs=kw)
        out["z_base"] = base.sample(4, seed=SAMPLE_SEED)
        return out

    out = run(regime, lambda: _to_tfp(name, dtype), compute)
    return {"x": x_np, "y0": y0_np, **out}


def _tfd():
    import tensorflow_probability as tfp

    return tfp.distributions


def _rows(ld, n: int):
    """A log-det broadcast over ``n`` rows (constant-Jacobian layers give a scalar)."""
    assert np.broadcast_shapes(np.shape(ld), (n,)) == (n,), np.shape(ld)
    return np.broadcast_to(ld, (n,))


@pytest.mark.parametrize(("name", "regime"), TFP_MATRIX)
def test_tfp_bijective_and_finite(name, regime, dtype, tfp):
    r = _tfp_results(name, dtype, regime)
    ref, tol = _case(name)[2], TOL[dtype]
    for key in ("y", "x_back", "fldj", "ildj", "x0", "y0_back", "ildj0", "fldj0"):
        assert np.all(np.isfinite(r[key])), key
    assert r["y"].dtype == r["x_back"].dtype == np.dtype(dtype)
    _close(r["x_back"], r["x"], tol, "inverse(forward(x))")
    _close(r["y0_back"], r["y0"], tol, "forward(inverse(y))")
    _close(_rows(r["ildj"], BATCH), -_rows(r["fldj"], BATCH), tol, "ildj(f(x)) vs -fldj(x)")
    _close(_rows(r["fldj0"], BATCH), -_rows(r["ildj0"], BATCH), tol, "fldj(f^-1(y)) vs -ildj(y)")
    _close(r["y"], ref.forward(r["x"]), tol, "forward vs reference")
    _close(r["x0"], ref.inverse(r["y0"]), tol, "inverse vs reference")
    _close(_rows(r["fldj"], BATCH), ref.forward_log_det_jacobian(r["x"]), tol, "fldj vs reference")


@pytest.mark.parametrize(("name", "regime"), TFP_MATRIX)
def test_tfp_fldj_theoretical(name, regime, dtype, tfp):
    """fldj(x) against log|det| of the autodiff Jacobian of forward, and ildj(y) against
    that of inverse (TFP's get_fldj_theoretical, both directions)."""
    r = _tfp_results(name, dtype, regime)
    spec, _, ref = _case(name)
    jac_f, jac_i, tol = r["jac_f"], r["jac_i"], TOL[dtype]
    assert jac_f.shape == jac_i.shape == (JAC_ROWS, spec.dim, spec.dim)
    sign_f, theo_f = np.linalg.slogdet(jac_f.astype(np.float64))
    sign_i, theo_i = np.linalg.slogdet(jac_i.astype(np.float64))
    assert np.all(sign_f != 0) and np.all(sign_i != 0)
    _close(_rows(r["fldj"], BATCH)[:JAC_ROWS], theo_f, tol, "fldj vs autodiff Jacobian")
    _close(_rows(r["ildj0"], BATCH)[:JAC_ROWS], theo_i, tol, "ildj vs autodiff Jacobian")
    if not _straight_through(spec):
        x = r["x"][:JAC_ROWS].astype(np.float64)
        tol = max(tol, TOL["finite_difference"])
        _close(jac_f, _ref_fd_jacobian(ref, x), tol, "Jacobian vs reference")


@pytest.mark.parametrize(("name", "regime"), TFP_MATRIX)
def test_tfp_sample_log_prob_consistency(name, regime, dtype, tfp):
    """log_prob(sample) equals base.log_prob(inverse(sample)) + ildj(sample) by hand, and
    the reference density at the sample; the sample is the reference's map of the base draw."""
    r = _tfp_results(name, dtype, regime)
    spec, _, ref = _case(name)
    tol = TOL[dtype]
    s, lp = r["s"], r["lp"]
    assert s.shape == (4, spec.dim) and s.dtype == np.dtype(dtype)
    assert lp.shape == (4,) and np.all(np.isfinite(lp))
    _close(lp, r["lp_by_hand"], tol, "log_prob(sample) vs base.log_prob(inverse) + ildj")
    _close(r["lp_fresh"], lp, tol, "log_prob: math path vs cache path")
    _close(lp, _ref_log_prob(ref, s), tol, "log_prob vs reference density")
    _close(s, ref.forward(r["z_base"].astype(np.float64)), tol, "sample vs reference map")


@pytest.mark.parametrize(("name", "regime"), TFP_MATRIX)
def test_tfp_single_event(name, regime, dtype, tfp):
    """An input of shape (D,): forward/inverse give (D,), both log-dets shape (), and the
    values are those of the same row in a batched call."""
    r = _tfp_results(name, dtype, regime)
    d, tol = _case(name)[0].dim, TOL[dtype]
    assert r["y1"].shape == (d,) and r["x1_back"].shape == (d,)
    assert np.shape(r["fldj1"]) == () and np.shape(r["ildj1"]) == ()
    _close(r["y1"], r["y"][1], tol, "single event forward vs batched row")
    _close(r["fldj1"], _rows(r["fldj"], BATCH)[1], tol, "single event fldj vs batched row")
    _close(r["x1_back"], r["x"][1], tol, "single event inverse")
    _close(r["ildj1"], -r["fldj1"], tol, "single event ildj vs -fldj")


@pytest.mark.parametrize(("name", "regime"), [
    (n, r) for n, r in TFP_MATRIX if r != "graph" and _has_coupling(CASES[n]())])  # fmt: skip
def test_tfp_equality_and_cache_isolation(name, regime, tfp):
    """Bijectors of one spec but other weights compare unequal, and one's cached result for
    a tensor object is never handed to the other (TFP shares caches between equal ones)."""
    import tensorflow as tf

    spec = _case(name)[0]
    a = _to_tfp(name, "float64", seed=0)[1]
    b = _to_tfp(name, "float64", seed=1)[1]
    assert a != b and not (a == b)
    assert a == a
    x_np = _normal(BATCH, spec.dim, 16)

    def compute(_):
        x, kw = tf.constant(x_np), _given(name, "float64")
        ya = a.forward(x, **kw)
        yb = b.forward(x, **kw)  # the same tensor object a just transformed
        xa = a.inverse(ya, **kw)  # cache hit allowed: a's own pair
        xb = b.inverse(ya, **kw)  # a's output through b's inverse: must be computed by b
        return (ya, yb, xa, xb, a.forward_log_det_jacobian(x, 1, **kw),
                b.forward_log_det_jacobian(x, 1, **kw))  # fmt: skip

    ya, yb, xa, xb, lda, ldb = run(regime, lambda: None, compute)
    ref_a, ref_b = _case(name, 0)[2], _case(name, 1)[2]
    tol = TOL["reference"]
    assert not np.allclose(ya, yb)
    _close(ya, ref_a.forward(x_np), tol, "a.forward")
    _close(yb, ref_b.forward(x_np), tol, "b.forward on a's input object")
    _close(xa, x_np, TOL["float64"], "a.inverse(a.forward(x))")
    _close(xb, ref_b.inverse(ref_a.forward(x_np)), TOL["float64"], "b.inverse of a's output")
    _close(np.broadcast_to(lda, (BATCH,)), ref_a.forward_log_det_jacobian(x_np), tol, "a fldj")
    _close(np.broadcast_to(ldb, (BATCH,)), ref_b.forward_log_det_jacobian(x_np), tol, "b fldj")


@pytest.mark.parametrize("name", TFP_NAMES)
def test_tfp_variables_and_gradients(name, tfp):
    import tensorflow as tf

    spec, bij, _ = _to_tfp(name, "float64")
    variables = bij.trainable_variables
    n_params = len(fb.param_shapes(spec))
    assert len(variables) == n_params
    if _has_coupling(spec):
        assert variables, "a flow with a coupling has trainable variables"
    if not variables:
        assert all(layer.type == "permutation" for layer in spec.layers)
        return
    x, kw = tf.constant(_normal(BATCH, spec.dim, 17)), _given(name, "float64")
    with tf.GradientTape(persistent=True) as tape:
        fldj = tf.reduce_sum(tf.broadcast_to(bij.forward_log_det_jacobian(x, 1, **kw), [BATCH]))
        loss = fldj + tf.reduce_sum(bij.forward(_tf_copy(x), **kw) ** 2)
    grads = tape.gradient(loss, variables)
    assert all(g is not None for g in grads)
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    # the log-det alone reaches every variable of a layer whose Jacobian is not constant
    for layer in bij.bijectors:
        if layer.trainable_variables and not layer.is_constant_jacobian:
            grads = tape.gradient(fldj, layer.trainable_variables)
            assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_tfp_graph_mode_params_applied(tfp):
    """Graph mode, the plain TF1 recipe: build, initialize variables, run. (Params loaded
    by assign after the variables were made were silently ignored here once.)"""
    import tensorflow as tf

    spec, params, ref = _case("affine_exp_d3")
    x_np = _normal(BATCH, spec.dim, 18)
    with tf.Graph().as_default() as graph:
        bij = fb.to_tfp(spec, params, dtype="float64")
        y = bij.forward(tf.constant(x_np))
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            y_np = sess.run(y)
    _close(y_np, ref.forward(x_np), TOL["reference"], "graph-mode forward vs reference")
