"""flowbridge flows as sbi's density estimators (``flowbridge/sbi.py``): the shape
conventions of sbi's ``ConditionalDensityEstimator`` for posterior and likelihood
estimators, log-densities equal to the flow's own (through the float64 reference), sbi's
embedding nets and z-scoring, sbi's vocabulary checked when the builder is made, sbi's
batch checked when it is built, and sbi's NPE (one round and two) and NLE training the
flow end to end. Nothing here writes into the checkout: sbi's TensorBoard logs go to
pytest's temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flowbridge as fb

torch = pytest.importorskip("torch")
pytest.importorskip("sbi")

from sbi.inference import NLE, NPE  # noqa: E402
from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters  # noqa: E402
from sbi.neural_nets.embedding_nets import (  # noqa: E402
    CNNEmbedding,
    FCEmbedding,
    PermutationInvariantEmbedding,
)
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator  # noqa: E402
from sbi.utils import BoxUniform  # noqa: E402
from sbi.utils.tracking import TensorBoardTracker  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from flowbridge.errors import SpecError  # noqa: E402
from flowbridge.sbi import FlowbridgeEstimator, likelihood_nn, posterior_nn  # noqa: E402

THETA = torch.randn(300, 3, generator=torch.Generator().manual_seed(0)) * 2 + 1
X = torch.cat([THETA, THETA[:, :1] ** 2], 1) + 0.3 * torch.randn(300, 4, generator=torch.Generator().manual_seed(1))

BUILDERS = {"posterior": posterior_nn, "likelihood": likelihood_nn}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets gain nothing from intra-op threads, and on a shared 2-core machine two
    threads per op run 30-100x slower than one (measured: 50 training steps 0.09 s on
    one thread, 3-10 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _writes_nothing_here():
    """sbi's default tracker writes ``./sbi-logs``: no test here may leave one."""
    logs = Path.cwd() / "sbi-logs"
    existed = logs.exists()
    yield
    assert existed or not logs.exists(), f"the test wrote sbi's logs into {logs}"


@pytest.fixture
def tracker(tmp_path):
    """sbi's TensorBoard tracker on pytest's temporary directory."""
    writer = SummaryWriter(str(tmp_path / "sbi-logs"))
    yield TensorBoardTracker(writer)
    writer.close()


def _estimator(**kw):
    torch.manual_seed(0)
    est = posterior_nn(num_couplings=3, hidden=(16,), **kw)(THETA, X)
    _perturb(est)
    return est


def _perturb(est):
    """Non-identity weights, as after training."""
    with torch.no_grad():
        for p in est.net.parameters():
            p.add_(0.2 * torch.randn_like(p))


def test_shapes_follow_sbis_conventions():
    est = _estimator()
    assert isinstance(est, ConditionalDensityEstimator) and isinstance(est, FlowbridgeEstimator)
    assert est.input_shape == torch.Size([3]) and est.condition_shape == torch.Size([4])
    x, theta = X[:5], THETA[:5]
    assert est.log_prob(theta.unsqueeze(0).expand(7, 5, 3), x).shape == (7, 5)
    assert est.log_prob(theta, x).shape == (1, 5)  # no sample dimension: one is added
    assert est.log_prob(theta[:1].unsqueeze(0), x).shape == (1, 5)  # batch 1 broadcasts
    assert est.log_prob(theta.unsqueeze(0).expand(2, 5, 3), x.unsqueeze(0).expand(2, 5, 4)).shape == (2, 5)
    assert est.loss(theta, x).shape == (5,)
    assert est.sample((8,), x).shape == (8, 5, 3)
    assert est.sample((2, 4), x[:1]).shape == (2, 4, 1, 3)
    draws, log_q = est.sample_and_log_prob((6,), x)
    assert draws.shape == (6, 5, 3) and log_q.shape == (6, 5)
    np.testing.assert_allclose(log_q.detach().numpy(), est.log_prob(draws.detach().clone(), x).detach().numpy(),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    with pytest.raises(ValueError, match="Shape of condition"):
        est.log_prob(theta, X[:5, :3])
    with pytest.raises(ValueError, match="Shape of input"):
        est.log_prob(THETA[:5, :2], x)


def test_log_prob_is_the_flows_own_density():
    """log q(theta | x) = log N(z) + log|det dz/dtheta_z| - sum(log std), z the flow's
    inverse of the z-scored theta at the embedded x: written out here with the float64
    reference on the estimator's own weights."""
    est = _estimator()
    theta, x = THETA[:6], X[:6]
    got = est.log_prob(theta, x)[0].detach().numpy()
    features = est.embedding_net(x).detach().numpy().astype(np.float64)
    ref = fb.to_numpy(est.spec, fb.params_from_pyro(est.net))
    mean, std = est._mean.numpy().astype(np.float64), est._std.numpy().astype(np.float64)
    z, ildj = ref.inverse_with_log_det((theta.numpy() - mean) / std, features)
    want = -0.5 * np.sum(z**2, -1) - 1.5 * np.log(2 * np.pi) + ildj - np.sum(np.log(std))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(std, 1.0)  # the z-scoring is real, and its log-det is counted


def test_embedding_nets_z_scoring_and_specs():
    x10 = torch.randn(300, 10)
    est = posterior_nn(embedding_net=FCEmbedding(10, output_dim=4), num_couplings=2,
                       hidden=(8,))(THETA, x10)  # fmt: skip
    assert est.spec.context_dim == 4 and est.log_prob(THETA[:3], x10[:3]).shape == (1, 3)
    unscored = posterior_nn(z_score_theta=None, z_score_x="none", num_couplings=2, hidden=(8,))(THETA, X)
    assert torch.equal(unscored._std, torch.ones(3)) and isinstance(unscored.embedding_net, torch.nn.Identity)
    own = fb.realnvp(3, num_couplings=2, hidden=(8,), context_dim=4,
                     context_embedding={"features": 6, "hidden": [16]})  # flowbridge's embedding
    est = posterior_nn(own)(THETA, X)
    assert est.spec == own and est.sample((2,), X[:3]).shape == (2, 3, 3)
    assert posterior_nn(own.to_dict())(THETA, X).spec == own  # its dict
    made = posterior_nn(lambda d, c: fb.nice(d, hidden=(8,), context_dim=c))(THETA, X)  # a function
    assert made.spec.layers[-1].type == "scaling" and made.spec.context_dim == 4
    with pytest.raises(ValueError, match=r"model: expected event shape \(3,\) .batch_theta's. and context_dim 4"):
        posterior_nn(fb.realnvp(3, context_dim=5))(THETA, X)
    with pytest.raises(ValueError, match=r"batch_theta: expected a batch of vectors"):
        posterior_nn()(THETA.reshape(300, 3, 1), X)


# ------------------------------------------------------------------ sbi's vocabulary
def _types(est):
    return [layer.type for layer in est.spec.layers]


@pytest.mark.parametrize("role", sorted(BUILDERS))
def test_sbis_vocabulary_builds_what_it_names(role):
    """``model``, ``hidden_features``, ``num_transforms`` and the z-scorings as sbi names
    them, and flowbridge's own names for the same settings."""
    make = BUILDERS[role]
    default = make()(THETA, X)
    # ten couplings (a coupling transforms half the entries: twice sbi's five MAF layers)
    # with alternating masks, a soft-clamped scale; two hidden layers of 50
    assert _types(default) == ["affine_coupling"] * 10
    assert {layer.scale.kind for layer in default.spec.layers if layer.type == "affine_coupling"} \
        == {"soft_clamp"}  # fmt: skip
    assert default.spec.layers[0].conditioner.hidden == (50, 50)
    assert _types(make("nice", num_transforms=2)(THETA, X)) == ["additive_coupling"] * 2 + ["scaling"]
    three = make(model="realnvp", num_couplings=3)(THETA, X)
    assert _types(three) == ["affine_coupling"] * 3
    wide = make(hidden_features=20)(THETA, X).spec.layers[0].conditioner
    assert wide.hidden == (20, 20)
    assert make(hidden_features=[8, 4, 2])(THETA, X).spec.layers[0].conditioner.hidden == (8, 4, 2)
    assert make(hidden=(12,))(THETA, X).spec.layers[0].conditioner.hidden == (12,)
    nice = make("nice", scaling=False, activation="tanh", num_transforms=2)(THETA, X)
    assert _types(nice) == ["additive_coupling"] * 2 and nice.spec.layers[0].conditioner.activation == "tanh"
    # sbi's nsf vocabulary: 10 bins on [-3, 3] unless num_bins / tail_bound say otherwise
    spline = make("nsf", num_transforms=2)(THETA, X)
    assert _types(spline) == ["spline_coupling"] * 2
    assert (spline.spec.layers[0].spline.bins, spline.spec.layers[0].spline.bound) == (10, 3.0)
    narrow = make("nsf", num_transforms=2, num_bins=4, tail_bound=5.0)(THETA, X).spec.layers[0]
    assert (narrow.spline.bins, narrow.spline.bound) == (4, 5.0)
    made = make("maf")(THETA, X)  # sbi's maf: 5 MADE layers, the orders alternating
    assert _types(made) == ["affine_autoregressive"] * 5
    assert made.spec.layers[0].conditioner.order is None and made.spec.layers[1].conditioner.order
    seeded = make(num_transforms=3, permutation="random", seed=1)(THETA, X)  # seeds the permutations too
    assert [layer.seed for layer in seeded.spec.layers if layer.type == "permutation"] == [1, 2]
    est = make(z_score_theta="structured", z_score_x="none")(THETA, X)
    if role == "posterior":  # theta is the input: its z-scoring is one mean and one std
        assert torch.unique(est._std).numel() == 1
    else:  # x is the input and is not z-scored
        assert torch.equal(est._std, torch.ones(4)) and est.input_shape == (4,)


#: (arguments, error, message): each refused when the builder is made, not at .train().
CALL_REFUSALS = [
    ({"model": "zuko_maf"}, ValueError, r"model: 'zuko_maf' is one of sbi's own estimators.*_nn\('zuko_maf'\)"),
    ({"model": "zuko_nsf"}, ValueError, r"model: 'zuko_nsf' is one of sbi's own"),
    ({"model": "realnvp_image"}, ValueError, r"model: expected one of flowbridge's presets 'realnvp', 'nice', 'nsf', 'maf'"),
    ({"model": 3}, TypeError, r"model: expected one of flowbridge's presets .*got int"),
    ({"model": fb.realnvp(3)}, ValueError, r"model: expected a conditional spec"),
    ({"model": {"layers": []}}, SpecError, r"^model: "),
    ({"hidden_features": 0}, SpecError, r"hidden_features: expected a positive integer, got 0"),
    ({"hidden_features": "20"}, SpecError, r"hidden_features: expected a list of positive integers"),
    ({"hidden_features": [8, 0]}, SpecError, r"hidden_features"),
    ({"num_transforms": 0}, SpecError, r"num_transforms: expected a positive integer, got 0"),
    ({"num_couplings": 0}, SpecError, r"num_couplings: expected a positive integer, got 0"),
    ({"num_transforms": 2.5}, SpecError, r"num_transforms: expected a positive integer, got 2.5"),
    ({"num_transforms": 2, "num_couplings": 3}, ValueError, r"num_transforms and num_couplings: the same setting"),
    ({"hidden_features": 8, "hidden": (8,)}, ValueError, r"hidden_features and hidden: the same setting"),
    ({"num_bins": 8}, TypeError, r"num_bins: not supported .*only model='nsf'"),
    ({"tail_bound": 4.0}, TypeError, r"tail_bound: not supported .*only model='nsf'"),
    ({"model": "nsf", "num_bins": 1}, SpecError, r"spline.bins: expected a number >= 2, got 1"),
    ({"model": "nsf", "num_bins": 8, "spline": {"bins": 4}}, TypeError,
     r"num_bins and spline: give the spline's settings one way"),
    ({"model": "nsf", "scale": {"kind": "exp"}}, TypeError, r"scale: not an argument .* model 'nsf'"),
    ({"num_components": 4}, TypeError, r"num_components: not supported .*mixture density"),
    ({"num_blocks": 2}, TypeError, r"num_blocks: not an argument of flowbridge's"),
    ({"hiden": (8,)}, TypeError, r"hiden: not an argument"),
    ({"model": "nice", "mask": "parity"}, TypeError, r"mask: not an argument .* model 'nice'"),
    ({"context_dim": 3}, TypeError, r"context_dim: set by the builder"),
    ({"dim": 3}, TypeError, r"dim: set by the builder"),
    ({"z_score_theta": "transform_to_unconstrained"}, ValueError,
     r"z_score_theta: 'transform_to_unconstrained' is not supported.*'independent'"),
    ({"z_score_x": "transform_to_unconstrained"}, ValueError, r"z_score_x: 'transform_to_unconstrained'"),
    ({"z_score_x": "yes"}, ValueError, r"z_score_x: expected one of 'independent', 'structured', 'none' or None"),
    ({"z_score_theta": True}, ValueError, r"z_score_theta: expected one of"),
    ({"embedding_net": lambda x: x}, TypeError, r"embedding_net: expected a torch.nn.Module"),
    ({"seed": -1}, SpecError, r"seed: expected a non-negative integer, got -1"),
    ({"seed": 1.5}, SpecError, r"seed: expected a non-negative integer, got 1.5"),
    ({"seed": "0"}, SpecError, r"seed: expected a non-negative integer"),
    ({"scale": {"kind": "nope"}}, SpecError, r"scale.kind: expected one of"),
    ({"activation": "swish"}, SpecError, r"activation: expected one of"),
    ({"model": fb.realnvp(3, context_dim=4), "num_transforms": 3}, TypeError,
     r"num_transforms: options of a preset, but model is a spec"),
]


@pytest.mark.parametrize("role", sorted(BUILDERS))
@pytest.mark.parametrize("kwargs,error,message", CALL_REFUSALS,
                         ids=[",".join(map(str, kw)) + f"={list(kw.values())[0]!r}"[:24] for kw, _, _ in CALL_REFUSALS])  # fmt: skip
def test_arguments_are_checked_at_the_call(role, kwargs, error, message):
    with pytest.raises(error, match=message):
        BUILDERS[role](**kwargs)


# ------------------------------------------------------------------ sbi's batch
class _Features(torch.nn.Module):
    """An embedding that returns what it is told to (for the hostile cases)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fn(self.linear(x))


_N = 40
_T, _X = THETA[:_N], X[:_N]

#: (builder arguments, theta, x, error, message): what the builder refuses when sbi calls it.
BUILD_REFUSALS = {
    "numpy theta": ({}, _T.numpy(), _X, TypeError, r"batch_theta: expected a torch.Tensor .*got numpy.ndarray"),
    "numpy x": ({}, _T, _X.numpy(), TypeError, r"batch_x: expected a torch.Tensor"),
    "int theta": ({}, _T.long(), _X, TypeError, r"batch_theta: expected float32 or float64 values, got int64"),
    "int x": ({}, _T, _X.int(), TypeError, r"batch_x: expected float32 or float64 values, got int32"),
    "bool x": ({}, _T, _X > 0, TypeError, r"batch_x: expected float32 or float64 values, got bool"),
    "complex theta": ({}, _T.to(torch.complex64), _X, TypeError, r"batch_theta: .*got complex64"),
    "float16": ({}, _T.half(), _X.half(), TypeError, r"batch_theta: .*got float16"),
    "mixed dtypes": ({}, _T.double(), _X, TypeError, r"batch_x: expected batch_theta's dtype \(float64\), got float32"),
    "empty batch": ({}, _T[:0], _X[:0], ValueError, r"batch_theta: expected at least one row .* shape \(0, 3\)"),
    "batch sizes": ({}, _T, _X[:30], ValueError, r"batch_theta and batch_x: expected the same batch size, got 40 and 30"),
    "theta of matrices": ({}, _T.reshape(_N, 3, 1), _X, ValueError, r"batch_theta: expected a batch of vectors"),
    "theta of nothing": ({}, _T[:, :0], _X, ValueError, r"batch_theta: expected a batch of vectors \(batch, D\) with D > 0"),
    "x without a batch": ({}, _T[0], _X[0], ValueError, r"batch_theta: expected a batch of vectors"),
    "x of one dimension": ({}, _T, _X[:, 0], ValueError, r"batch_x: expected a batch \(batch, \*condition_shape\)"),
    "x images, no embedding": ({}, _T, _X.reshape(_N, 2, 2), ValueError,
                               r"batch_x: expected a batch of vectors .* without an embedding_net.*pass an embedding_net"),
    "nan theta": ({}, _T.masked_fill(_T > 3, float("nan")), _X, ValueError, r"batch_theta: expected finite values"),
    "inf theta": ({}, _T.masked_fill(_T > 3, float("inf")), _X, ValueError, r"batch_theta: expected finite values"),
    "embedding of 0 features": ({"embedding_net": _Features(lambda f: f[:, :0])}, _T, _X, ValueError,
                                r"embedding_net: expected at least one output feature"),
    "embedding returns a tuple": ({"embedding_net": _Features(lambda f: (f,))}, _T, _X, TypeError,
                                  r"embedding_net: expected it to return a torch.Tensor .*got tuple"),
    "embedding of matrices": ({"embedding_net": _Features(lambda f: f[..., None])}, _T, _X, ValueError,
                              r"embedding_net: expected features \(batch, F\), here \(2, F\), got shape \(2, 2, 1\)"),
    "embedding loses the batch": ({"embedding_net": _Features(lambda f: f.sum(0, keepdim=True))}, _T, _X, ValueError,
                                  r"embedding_net: expected features .*got shape \(1, 2\)"),
    "embedding of float64": ({"embedding_net": _Features(lambda f: f.double())}, _T, _X, TypeError,
                             r"embedding_net: expected features of batch_x's dtype \(float32\), got float64"),
    "embedding that fails": ({"embedding_net": torch.nn.Linear(7, 2)}, _T, _X, ValueError,
                             r"embedding_net: failed on batch_x\[:2\] of shape \(2, 4\): RuntimeError"),
    "spec of another size": ({"model": fb.realnvp(2, context_dim=4)}, _T, _X, ValueError,
                             r"model: expected event shape \(3,\) \(batch_theta's\) and context_dim 4"),
    "function giving no spec": ({"model": lambda d, c: "realnvp"}, _T, _X, SpecError, r"model: the function's spec"),
}


@pytest.mark.parametrize("case", sorted(BUILD_REFUSALS))
def test_the_builder_checks_sbis_batch(case):
    kwargs, theta, x, error, message = BUILD_REFUSALS[case]
    small = {} if "model" in kwargs else {"num_transforms": 2, "hidden_features": 8}
    build = posterior_nn(**small, **kwargs)
    with pytest.raises(error, match=message):
        build(theta, x)


def test_the_likelihood_builder_checks_x_as_its_input():
    build = likelihood_nn(num_transforms=2, hidden_features=8)
    with pytest.raises(ValueError, match=r"batch_x: expected finite values .* 40 of 40 rows"):
        build(_T, _X + float("nan"))
    with pytest.raises(ValueError, match=r"batch_x: expected a batch of vectors \(batch, D\)"):
        build(_T, _X.reshape(_N, 2, 2))
    with pytest.raises(TypeError, match=r"batch_theta: expected float32 or float64 values, got int64"):
        build(_T.long(), _X)
    with pytest.raises(ValueError, match=r"embedding_net: expected at least one output feature"):
        likelihood_nn(embedding_net=torch.nn.Linear(3, 0))(_T, _X)
    # a condition may hold NaN (an embedding may read it as a missing value); sbi decides
    est = posterior_nn(z_score_x=None, num_transforms=2, hidden_features=8)(_T, _X.masked_fill(_X > 3, float("nan")))
    assert est.condition_shape == (4,)


# ------------------------------------------------------------------ shapes, as sbi's tests check them
def _shape_case(role, dim, condition):
    """An estimator with random weights, its inputs and conditions (200 rows)."""
    gen = torch.Generator().manual_seed(3)
    inputs = torch.randn(200, dim, generator=gen) * 2 - 1
    if condition == "image":  # (2, 7), as an image, through sbi's CNN with structured z-scoring
        conditions = torch.randn(200, 2, 7, generator=gen)
        kw = {"embedding_net": CNNEmbedding((2, 7), kernel_size=1, num_linear_units=8, output_dim=3),
              f"z_score_{'x' if role == 'posterior' else 'theta'}": "structured"}  # fmt: skip
    else:
        conditions = torch.randn(200, 1 if condition == "scalar" else 5, generator=gen)
        kw = {}
    theta, x = (inputs, conditions) if role == "posterior" else (conditions, inputs)
    torch.manual_seed(4)
    est = BUILDERS[role](num_transforms=2, hidden_features=8, **kw)(theta, x)
    _perturb(est)
    return est, inputs, conditions


@pytest.mark.parametrize("condition", ["scalar", "vector", "image"])
@pytest.mark.parametrize("dim", [1, 3])  # one: the presets' context-only layer
@pytest.mark.parametrize("role", sorted(BUILDERS))
def test_loss_log_prob_and_sample_shapes(role, dim, condition):
    """sbi's conventions at batch 1 and 6: loss ``(batch,)``; log_prob ``(sample,
    batch)``, the same value in every sample row and the same batched as one condition
    at a time; sample ``(*sample_shape, batch, D)`` for ``()``, ``(1,)`` and ``(2, 3)``;
    a single condition broadcasting against a batch of inputs."""
    est, inputs, conditions = _shape_case(role, dim, condition)
    assert est.input_shape == (dim,) and est.condition_shape == conditions.shape[1:]
    for batch in (1, 6):
        u, c = inputs[:batch], conditions[:batch]
        with torch.no_grad():
            assert est.loss(u, c).shape == (batch,)
            log_q = est.log_prob(u.unsqueeze(0).expand(2, batch, dim), c)
            assert log_q.shape == (2, batch) and torch.isfinite(log_q).all()
            torch.testing.assert_close(log_q[0], log_q[1])
            one_by_one = torch.cat([est.log_prob(u[i:i + 1], c[i:i + 1]) for i in range(batch)], 1)
            torch.testing.assert_close(log_q[:1], one_by_one, rtol=1e-5, atol=1e-5)
            for shape in [(), (1,), (2, 3)]:
                assert est.sample(shape, c).shape == (*shape, batch, dim)
            draws, log_d = est.sample_and_log_prob((4,), c)
            assert draws.shape == (4, batch, dim) and log_d.shape == (4, batch)
            torch.testing.assert_close(log_d, est.log_prob(draws, c), rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # one condition, six inputs: the condition broadcasts
        single = est.log_prob(inputs[:6].unsqueeze(0), conditions[:1])
        torch.testing.assert_close(single, est.log_prob(inputs[:6].unsqueeze(0), conditions[:1].expand(6, *conditions.shape[1:])))


@pytest.mark.parametrize("role", sorted(BUILDERS))
def test_batched_draws_match_draws_one_condition_at_a_time(role):
    """2000 draws at two conditions together and at each alone: the same means (to a
    few standard errors)."""
    est, _, conditions = _shape_case(role, 3, "vector")
    torch.manual_seed(5)
    with torch.no_grad():
        both = est.sample((2000,), conditions[:2])
        alone = torch.stack([est.sample((2000,), conditions[i:i + 1])[:, 0] for i in range(2)], 1)
    spread = both.std(0)
    assert ((both.mean(0) - alone.mean(0)).abs() < 0.15 * spread).all(), (both.mean(0), alone.mean(0))
    assert not torch.allclose(both.mean(0)[0], both.mean(0)[1], atol=0.05)  # the conditions matter


# ------------------------------------------------------------------ sbi's embedding nets
def _iid_x(theta, trials=5, gen=None):
    return theta[:, None, :2] + 0.3 * torch.randn(theta.shape[0], trials, 2, generator=gen)


@pytest.mark.parametrize("net", ["FCEmbedding", "CNNEmbedding", "PermutationInvariantEmbedding"])
def test_sbis_embedding_nets_train_with_the_flow(net):
    """Each of sbi's embedding nets: the flow's context is its output, the loss's gradient
    reaches its weights, and one optimiser step changes them."""
    gen = torch.Generator().manual_seed(6)
    theta = torch.randn(100, 3, generator=gen)
    if net == "FCEmbedding":
        x, embedding = torch.randn(100, 10, generator=gen), FCEmbedding(10, output_dim=4, num_hiddens=8)
    elif net == "CNNEmbedding":  # 8x8 single-channel images
        x = torch.randn(100, 8, 8, generator=gen)
        embedding = CNNEmbedding((8, 8), out_channels_per_layer=[2, 2], num_linear_units=8,
                                 output_dim=4, kernel_size=3)  # fmt: skip
    else:  # iid trials (batch, trials, 2), each through a small MLP, then summed
        x = _iid_x(theta, gen=gen)
        embedding = PermutationInvariantEmbedding(FCEmbedding(2, output_dim=4, num_hiddens=8),
                                                  trial_net_output_dim=4, num_hiddens=8, output_dim=4)  # fmt: skip
    est = posterior_nn(embedding_net=embedding, z_score_x=None, num_transforms=2, hidden_features=8)(theta, x)
    assert est.spec.context_dim == 4 and est.condition_shape == x.shape[1:]
    assert est.log_prob(theta[:7], x[:7]).shape == (1, 7) and est.sample((3,), x[:2]).shape == (3, 2, 3)
    before = [p.detach().clone() for p in embedding.parameters()]
    optimiser = torch.optim.SGD(est.parameters(), lr=0.1)
    _perturb(est)  # off the identity, so the context reaches the output
    est.loss(theta, x).mean().backward()
    assert all(p.grad is not None for p in embedding.parameters())
    assert any(p.grad.abs().sum() > 0 for p in embedding.parameters())
    optimiser.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, embedding.parameters(), strict=True))


def test_sbis_npe_with_iid_trials_and_a_permutation_invariant_embedding(tracker):
    gen = torch.Generator().manual_seed(7)
    prior = BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2))
    theta = prior.sample((300,))
    x = _iid_x(theta, trials=4, gen=gen)
    embedding = PermutationInvariantEmbedding(FCEmbedding(2, output_dim=4, num_hiddens=8),
                                              trial_net_output_dim=4, num_hiddens=8, output_dim=4)  # fmt: skip
    npe = NPE(prior, density_estimator=posterior_nn(embedding_net=embedding, num_transforms=2,
                                                    hidden_features=8),
              tracker=tracker, show_progress_bars=False)  # fmt: skip
    npe.append_simulations(theta, x).train(max_num_epochs=2, training_batch_size=50)
    draws = npe.build_posterior().sample((10,), x=x[0], show_progress_bars=False)
    assert draws.shape == (10, 2) and torch.isfinite(draws).all()


# ------------------------------------------------------------------ sbi's trainers
def _linear_gaussian(n, seed):
    torch.manual_seed(seed)
    prior = BoxUniform(-3 * torch.ones(2), 3 * torch.ones(2))
    theta = prior.sample((n,))
    return prior, theta, theta + 0.3 * torch.randn_like(theta)


@pytest.mark.parametrize("model", ["realnvp", "nsf", "maf"])
def test_sbis_npe_trains_the_flow_and_samples_the_posterior(tracker, tmp_path, model):
    """sbi's own NPE loop on a small linear-Gaussian task, with affine and with spline
    couplings: the validation loss falls, the posterior samples sit around the
    observation's exact posterior mean, and sbi's logs go where the tracker points."""
    prior, theta, x = _linear_gaussian(2000, 0)
    builder = posterior_nn(model, num_transforms=4, hidden_features=32)
    npe = NPE(prior, density_estimator=builder, tracker=tracker, show_progress_bars=False)
    estimator = npe.append_simulations(theta, x).train(max_num_epochs=40, training_batch_size=100)
    assert isinstance(estimator, FlowbridgeEstimator)
    losses = npe._summary["validation_loss"]
    assert losses[-1] < losses[0] - 0.5, losses
    assert list((tmp_path / "sbi-logs").glob("events.out.tfevents.*"))
    posterior = npe.build_posterior()
    x_o = torch.tensor([0.5, -1.0])
    draws = posterior.sample((2000,), x=x_o, show_progress_bars=False)
    assert draws.shape == (2000, 2)
    np.testing.assert_allclose(draws.mean(0).numpy(), x_o.numpy(), atol=0.1)  # the prior is flat here
    # the exact sd is 0.3; 40 short epochs get within a third of it (0.41 seen)
    assert ((draws.std(0) > 0.2) & (draws.std(0) < 0.5)).all(), draws.std(0)
    log_p = posterior.log_prob(draws[:5], x=x_o)
    assert log_p.shape == (5,) and torch.isfinite(log_p).all()


def test_sbis_npe_over_two_rounds(tracker):
    """Multi-round NPE: the second round's simulations come from the first round's
    posterior at x_o and sbi trains on them with its atomic loss (the flow's log_prob
    on many atoms per condition); the same estimator carries on."""
    prior, theta, x = _linear_gaussian(300, 1)
    x_o = torch.tensor([1.0, 0.5])
    npe = NPE(prior, density_estimator=posterior_nn(num_transforms=2, hidden_features=16),
              tracker=tracker, show_progress_bars=False)  # fmt: skip
    first = npe.append_simulations(theta, x).train(max_num_epochs=3, training_batch_size=50)
    proposal = npe.build_posterior().set_default_x(x_o)
    theta2 = proposal.sample((300,), show_progress_bars=False)
    x2 = theta2 + 0.3 * torch.randn_like(theta2)
    second = npe.append_simulations(theta2, x2, proposal=proposal).train(
        max_num_epochs=3, training_batch_size=50, num_atoms=5)
    assert second is first and npe._round == 1
    assert all(np.isfinite(npe._summary["training_loss"]))
    posterior = npe.build_posterior().set_default_x(x_o)
    draws = posterior.sample((50,), show_progress_bars=False)
    assert draws.shape == (50, 2) and torch.isfinite(posterior.log_prob(draws)).all()


def test_sbis_nle_trains_the_flow_and_samples_the_posterior(tracker):
    """sbi's NLE on the linear-Gaussian task: the flow learns the likelihood
    N(x; theta, 0.3^2 I) (its log-density within 0.35 nats of the true one on average
    where the data are: 0.22 seen, 3.6 before training), and sbi's MCMC samples the
    posterior from it."""
    prior, theta, x = _linear_gaussian(2000, 2)
    nle = NLE(prior, density_estimator=likelihood_nn(num_transforms=2, hidden_features=32),
              tracker=tracker, show_progress_bars=False)  # fmt: skip
    estimator = nle.append_simulations(theta, x).train(max_num_epochs=30, training_batch_size=100,
                                                       learning_rate=5e-3)  # fmt: skip
    assert isinstance(estimator, FlowbridgeEstimator)
    assert estimator.input_shape == (2,) and estimator.condition_shape == (2,)
    losses = nle._summary["validation_loss"]
    assert losses[-1] < losses[0] - 1.0, losses
    with torch.no_grad():
        got = estimator.log_prob(x[:200], theta[:200])[0]
    want = torch.distributions.Normal(theta[:200], 0.3).log_prob(x[:200]).sum(1)
    assert (got - want).abs().mean() < 0.35, (got - want).abs().mean()
    # four vectorised slice-sampling chains, 20 warm-up steps: about 2 s for 100 draws
    mcmc = MCMCPosteriorParameters(method="slice_np_vectorized", num_chains=4, warmup_steps=20,
                                   thin=1, init_strategy="proposal")  # fmt: skip
    posterior = nle.build_posterior(posterior_parameters=mcmc)
    x_o = torch.tensor([0.5, -1.0])
    torch.manual_seed(3)
    draws = posterior.sample((100,), x=x_o, show_progress_bars=False)
    assert draws.shape == (100, 2) and torch.isfinite(draws).all()
    np.testing.assert_allclose(draws.mean(0).numpy(), x_o.numpy(), atol=0.2)  # sd 0.3, flat prior


def test_sbis_npe_with_one_dimensional_theta(tracker):
    """One-dimensional theta (a coupling cannot split one entry: the preset chooses its
    context-only layer), trained by sbi's NPE and sampled."""
    torch.manual_seed(8)
    prior = BoxUniform(-torch.ones(1), torch.ones(1))
    theta = prior.sample((200,))
    x = torch.cat([theta, theta**2], 1) + 0.1 * torch.randn(200, 2)
    npe = NPE(prior, density_estimator=posterior_nn(num_transforms=2, hidden_features=8),
              tracker=tracker, show_progress_bars=False)  # fmt: skip
    npe.append_simulations(theta, x).train(max_num_epochs=2)
    assert npe.build_posterior().sample((5,), x=x[0], show_progress_bars=False).shape == (5, 1)


def test_flowbridge_leaves_torchs_validation_default_as_sbi_set_it():
    """sbi switches torch's global Distribution validation off; Pyro's first import turns
    it back on. flowbridge imports Pyro keeping the program's setting (sbi's own test
    suite checks the default is untouched by every estimator)."""
    code = ("import torch, sbi.neural_nets\n"
            "before = torch.distributions.Distribution._validate_args\n"
            "from flowbridge.sbi import posterior_nn\n"
            "posterior_nn(hidden_features=8, num_transforms=2)(torch.randn(50, 2), torch.randn(50, 3))\n"
            "print(before, torch.distributions.Distribution._validate_args)")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    before, after = run.stdout.split()
    assert before == after
