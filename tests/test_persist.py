"""Every flow pickles and loads in a new process (:mod:`flowbridge.persist`): the weights
and batch-norm state bit for bit, the outputs equal, the version stamped."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import flowbridge as fb
from flowbridge import backends as B

from .cases import CASES, IMAGE_CASES

#: (case, context dim) of the flows saved in each backend: a vector flow with random
#: weights, a conditional flow behind a context embedding, an image flow with a batch norm.
SAVED = ["realnvp_preset_d4_perm", "realnvp_conditional_embedded_d4_c3", "image_batch_norm_coupling_c2_4x4"]


def _spec(name):
    return (CASES.get(name) or IMAGE_CASES[name])()


def _dtype(backend):
    return "float32" if backend == "jax" else "float64"  # JAX float64 needs its x64 mode


def _build(backend, spec, params):
    if backend == "numpy":
        return fb.to_numpy(spec, params)
    return getattr(fb, f"to_{backend}")(spec, params, dtype=_dtype(backend))


#: The new process: loads the flows first (unpickling imports flowbridge itself), then
#: runs each through its framework's public API and exports its weights.
LOADER = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    backend, path, out = sys.argv[1:4]
    if backend == "pyro":
        import torch
        flows = torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            flows = pickle.load(f)
    inputs = np.load(sys.argv[4])
    import flowbridge as fb
    result = {}
    export = {"pyro": fb.params_from_pyro, "tfp": fb.params_from_tfp, "jax": fb.params_from_jax,
              "numpy": lambda f: {k: np.asarray(v).copy() for k, v in
                                  sys.modules[type(f).__module__].neutral_params(f).items()}}
    for i, flow in enumerate(flows):  # the weights as loaded, before any call moves a state
        result.update({f"p{i}:{k}": v for k, v in export[backend](flow).items()})
    for i, flow in enumerate(flows):
        x = inputs[f"x{i}"]
        c = inputs[f"c{i}"] if f"c{i}" in inputs.files else None
        if backend == "pyro":
            tx = torch.tensor(x, dtype=next(flow.parameters()).dtype)
            at = flow.condition(torch.tensor(c, dtype=tx.dtype)) if c is not None else flow
            with torch.no_grad():
                y = at(tx)
                ld = at.log_abs_det_jacobian(tx, y)
            y, ld = y.numpy(), ld.numpy()
        elif backend == "tfp":
            import tensorflow as tf
            given = {} if c is None else {"conditional_input": tf.constant(c, tf.float64)}
            xt = tf.constant(np.moveaxis(x, -3, -1) if x.ndim == 4 else x, tf.float64)
            y = flow.forward(xt, **given).numpy()
            ld = flow.forward_log_det_jacobian(xt, event_ndims=x.ndim - 1, **given).numpy()
            y = np.moveaxis(y, -1, -3) if x.ndim == 4 else y
        else:
            y, ld = flow.forward_with_log_det(x.astype(flow.dtype) if backend == "jax" else x,
                                              *(() if c is None else (c.astype(flow.dtype) if backend == "jax" else c,)))
            y, ld = np.asarray(y), np.asarray(ld)
        result[f"y{i}"], result[f"ld{i}"] = y, ld
        result[f"class{i}"] = np.array(type(flow).__name__)
    np.savez(out, **result)
    """
)


def _outputs(backend, flow, x, c):
    """(y, log-det) of ``flow`` at x (and context c) through its framework's public API,
    channels first: the calls the new process makes (``LOADER``)."""
    if backend == "pyro":
        import torch

        with torch.no_grad():
            at = flow.condition(torch.tensor(c)) if c is not None else flow
            xt = torch.tensor(x)
            y = at(xt)
            return y.numpy(), at.log_abs_det_jacobian(xt, y).numpy()
    if backend == "tfp":
        import tensorflow as tf

        given = {} if c is None else {"conditional_input": tf.constant(c, tf.float64)}
        xt = tf.constant(np.moveaxis(x, -3, -1) if x.ndim == 4 else x, tf.float64)
        y = flow.forward(xt, **given).numpy()
        ld = flow.forward_log_det_jacobian(xt, event_ndims=x.ndim - 1, **given).numpy()
        return (np.moveaxis(y, -1, -3) if x.ndim == 4 else y), ld
    args = (x,) if c is None else (x, c)
    if backend == "jax":
        args = tuple(a.astype(flow.dtype) for a in args)
    y, ld = flow.forward_with_log_det(*args)
    return np.asarray(y), np.asarray(ld)


@pytest.mark.parametrize("backend", B.NAMES)
def test_a_flow_saved_in_one_process_loads_in_another_with_the_same_weights_and_outputs(
    backend, tmp_path
):
    if not B.get(backend).available():
        pytest.skip(f"{backend} is not installed")
    rng = np.random.default_rng(3)
    flows, inputs, want = [], {}, {}
    for i, name in enumerate(SAVED):
        spec = _spec(name)
        flow = _build(backend, spec, fb.init_params(spec, i, init="random"))
        x = rng.standard_normal((5, *spec.event_shape))
        c = rng.standard_normal((5, spec.context_dim)) if spec.context_dim else None
        inputs[f"x{i}"] = x
        if c is not None:
            inputs[f"c{i}"] = c
        flows.append(flow)
        want[i] = _outputs(backend, flow, x, c)
    export = {"numpy": lambda f: {k: np.asarray(v).copy() for k, v in
                                  sys.modules[type(f).__module__].neutral_params(f).items()},
              "pyro": fb.params_from_pyro, "tfp": fb.params_from_tfp, "jax": fb.params_from_jax}  # fmt: skip
    saved = [export[backend](flow) for flow in flows]
    path = tmp_path / "flows.pkl"
    if backend == "pyro":
        import torch

        torch.save(flows, path)
    else:
        path.write_bytes(pickle.dumps(flows))
    assert b"flowbridge_generated" not in path.read_bytes()  # no class of a generated module
    np.savez(tmp_path / "in.npz", **inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", LOADER, backend, str(path), str(tmp_path / "out.npz"),
                          str(tmp_path / "in.npz")], capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    for i, flow in enumerate(flows):
        assert str(got[f"class{i}"]) == type(flow).__name__
        for k, v in saved[i].items():
            np.testing.assert_array_equal(got[f"p{i}:{k}"], v, err_msg=f"{SAVED[i]}: {k}")
            assert got[f"p{i}:{k}"].dtype == v.dtype
        np.testing.assert_array_equal(got[f"y{i}"], want[i][0], err_msg=SAVED[i])
        np.testing.assert_array_equal(got[f"ld{i}"], np.broadcast_to(want[i][1], got[f"ld{i}"].shape))


@pytest.mark.parametrize("backend", B.NAMES)
def test_a_pickled_flow_keeps_its_batch_norm_state_and_training_mode(backend):
    """The running averages a training step moved come back bit for bit (and a Pyro
    flow's training mode), through pickle in this process."""
    if not B.get(backend).available():
        pytest.skip(f"{backend} is not installed")
    spec = _spec("image_batch_norm_coupling_c2_4x4")
    flow = _build(backend, spec, fb.init_params(spec, 1, init="random"))
    x = np.random.default_rng(4).standard_normal((6, *spec.event_shape))
    if backend == "pyro":
        import torch

        flow.train()
        flow(torch.tensor(x))  # moves the running averages
        flow.eval()
    loaded = pickle.loads(pickle.dumps(flow))
    assert type(loaded) is type(flow) and loaded is not flow
    if backend == "pyro":
        assert loaded.training is False
        before, after = fb.params_from_pyro(flow), fb.params_from_pyro(loaded)
        assert any("running" in k or "mean" in k for k in before)
    elif backend == "tfp":
        before, after = fb.params_from_tfp(flow), fb.params_from_tfp(loaded)
    elif backend == "jax":
        before, after = fb.params_from_jax(flow), fb.params_from_jax(loaded)
    else:
        module = sys.modules[type(flow).__module__]
        before, after = module.neutral_params(flow), module.neutral_params(loaded)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(before[k]), err_msg=k)


def test_a_pyro_flow_loads_with_weights_only_once_rebuild_is_allowed(tmp_path):
    torch = pytest.importorskip("torch")
    spec = fb.realnvp(3, num_couplings=2, hidden=(8,))
    flow = fb.to_pyro(spec, fb.init_params(spec, 0, init="random"))
    torch.save(flow, tmp_path / "flow.pt")
    with pytest.raises(pickle.UnpicklingError, match="flowbridge.persist.rebuild"):
        torch.load(tmp_path / "flow.pt", weights_only=True)
    with torch.serialization.safe_globals(fb.persist.SAFE_GLOBALS):
        loaded = torch.load(tmp_path / "flow.pt", weights_only=True)
    x = torch.randn(4, 3)
    assert torch.equal(loaded(x.clone()), flow(x.clone()))


def test_deepcopy_gives_an_equal_independent_flow():
    torch = pytest.importorskip("torch")
    spec = fb.realnvp(3, num_couplings=2, hidden=(8,))
    flow = fb.to_pyro(spec, fb.init_params(spec, 0, init="random"), dtype="float64")
    twin = copy.deepcopy(flow)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(twin(x.clone()), flow(x.clone()))
    with torch.no_grad():
        next(twin.parameters()).add_(1.0)
    assert not torch.equal(next(twin.parameters()), next(flow.parameters()))


def test_the_pickle_is_stamped_with_the_version_and_names_it_when_it_cannot_rebuild():
    spec = fb.realnvp(3, num_couplings=2, hidden=(8,))
    flow = fb.to_numpy(spec, fb.init_params(spec, 0, init="random"))
    function, (state,) = fb.persist._reduce(flow)
    assert function is fb.persist.rebuild
    assert state["flowbridge"] == fb.__version__ and state["format"] == fb.persist.FORMAT
    assert state["spec_hash"] == spec.hash and state["backend"] == "numpy"
    broken = {**state, "flowbridge": "0.0.1", "params": {"layers.0.nonsense": np.zeros(2)}}
    with pytest.raises(fb.persist.PersistError,
                       match=r"saved by flowbridge 0\.0\.1 with flowbridge .*: .*missing"):  # fmt: skip
        fb.persist.rebuild(broken)
    with pytest.raises(fb.persist.PersistError, match="has format 2, this version reads format 1"):
        fb.persist.rebuild({**state, "format": 2})


SBI_LOADER = textwrap.dedent(
    """
    import sys, torch
    posterior = torch.load(sys.argv[1], weights_only=False)
    x_o, theta = torch.load(sys.argv[2])
    torch.save(posterior.log_prob(theta, x=x_o, norm_posterior=False), sys.argv[3])
    """
)


@pytest.mark.filterwarnings("ignore:Maximum number of epochs")
def test_a_pickled_sbi_posterior_loads_in_a_new_process(tmp_path):
    """sbi saves posteriors whole (``torch.save``/``pickle``): one with a flowbridge
    estimator loads in a new process and gives the same log-densities."""
    pytest.importorskip("sbi")
    torch = pytest.importorskip("torch")
    from sbi.inference import NPE
    from sbi.utils import BoxUniform
    from sbi.utils.tracking import TensorBoardTracker
    from torch.utils.tensorboard import SummaryWriter

    from flowbridge.sbi import posterior_nn

    torch.manual_seed(0)
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    theta = prior.sample((300,))
    x = theta + 0.3 * torch.randn_like(theta)
    writer = SummaryWriter(str(tmp_path / "logs"))
    npe = NPE(prior, density_estimator=posterior_nn(num_transforms=2, hidden_features=16),
              tracker=TensorBoardTracker(writer), show_progress_bars=False)  # fmt: skip
    npe.append_simulations(theta, x).train(max_num_epochs=3, training_batch_size=100)
    writer.close()
    posterior = npe.build_posterior()
    x_o, probe = torch.tensor([0.5, -1.0]), prior.sample((7,))
    want = posterior.log_prob(probe, x=x_o, norm_posterior=False)  # no Monte Carlo
    torch.save(posterior, tmp_path / "posterior.pt")
    torch.save((x_o, probe), tmp_path / "probe.pt")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", SBI_LOADER, str(tmp_path / "posterior.pt"),
                          str(tmp_path / "probe.pt"), str(tmp_path / "out.pt")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "out.pt"), want)
