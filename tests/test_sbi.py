"""flowbridge flows as sbi's density estimators (``flowbridge/sbi.py``): the shape
conventions of sbi's ``ConditionalDensityEstimator``, log-densities equal to the flow's
own (through the float64 reference), sbi's embedding nets and z-scoring, refusals, and
sbi's NPE training the flow end to end, with ``build_posterior`` sampling it."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb

torch = pytest.importorskip("torch")
pytest.importorskip("sbi")

from sbi.inference import NPE  # noqa: E402
from sbi.neural_nets.embedding_nets import FCEmbedding  # noqa: E402
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator  # noqa: E402
from sbi.utils import BoxUniform  # noqa: E402

from flowbridge.sbi import FlowbridgeEstimator, posterior_nn  # noqa: E402

THETA = torch.randn(300, 3, generator=torch.Generator().manual_seed(0)) * 2 + 1
X = torch.cat([THETA, THETA[:, :1] ** 2], 1) + 0.3 * torch.randn(300, 4, generator=torch.Generator().manual_seed(1))


def _estimator(**kw):
    torch.manual_seed(0)
    est = posterior_nn(num_couplings=3, hidden=(16,), **kw)(THETA, X)
    with torch.no_grad():  # non-identity weights, as after training
        for p in est.net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return est


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
    unscored = posterior_nn(z_score_theta=None, z_score_x=None, num_couplings=2, hidden=(8,))(THETA, X)
    assert torch.equal(unscored._std, torch.ones(3)) and isinstance(unscored.embedding_net, torch.nn.Identity)
    own = fb.realnvp(3, num_couplings=2, hidden=(8,), context_dim=4,
                     context_embedding={"features": 6, "hidden": [16]})  # flowbridge's embedding
    est = posterior_nn(own)(THETA, X)
    assert est.spec == own and est.sample((2,), X[:3]).shape == (2, 3, 3)
    with pytest.raises(ValueError, match=r"expected event shape \(3,\) .theta's. and context_dim 4"):
        posterior_nn(fb.realnvp(3, context_dim=5))(THETA, X)
    with pytest.raises(ValueError, match=r"theta: expected a batch of vectors"):
        posterior_nn()(THETA.reshape(300, 3, 1), X)


def test_sbis_npe_trains_the_flow_and_samples_the_posterior():
    """sbi's own NPE loop on a small linear-Gaussian task: the validation loss falls, the
    posterior samples sit around the observation's exact posterior mean."""
    torch.manual_seed(0)
    prior = BoxUniform(-3 * torch.ones(2), 3 * torch.ones(2))
    theta = prior.sample((2000,))
    x = theta + 0.3 * torch.randn_like(theta)
    npe = NPE(prior, density_estimator=posterior_nn(num_couplings=4, hidden=(32, 32)),
              show_progress_bars=False)  # fmt: skip
    estimator = npe.append_simulations(theta, x).train(max_num_epochs=40, training_batch_size=100)
    assert isinstance(estimator, FlowbridgeEstimator)
    losses = npe._summary["validation_loss"]
    assert losses[-1] < losses[0] - 0.5, losses
    posterior = npe.build_posterior()
    x_o = torch.tensor([0.5, -1.0])
    draws = posterior.sample((2000,), x=x_o, show_progress_bars=False)
    assert draws.shape == (2000, 2)
    np.testing.assert_allclose(draws.mean(0).numpy(), x_o.numpy(), atol=0.1)  # the prior is flat here
    # the exact sd is 0.3; 40 short epochs get within a third of it (0.41 seen)
    assert ((draws.std(0) > 0.2) & (draws.std(0) < 0.5)).all(), draws.std(0)
    log_p = posterior.log_prob(draws[:5], x=x_o)
    assert log_p.shape == (5,) and torch.isfinite(log_p).all()
