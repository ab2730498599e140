"""flowbridge flows as sbi's density estimators, for neural posterior estimation.

``NPE(prior, density_estimator=flowbridge.sbi.posterior_nn(num_couplings=6))`` trains a
flowbridge conditional flow (in Pyro's backend, the same generated code as
:func:`flowbridge.to_pyro`) with sbi's own training loop, and sbi's ``build_posterior``
and posterior sampling use it. Importing this module imports torch, Pyro and sbi;
``import flowbridge`` does not.

Shapes follow sbi's ``ConditionalDensityEstimator``: ``log_prob`` takes inputs
``(sample, batch, *event)`` (or ``(batch, *event)``) and conditions
``(batch, *condition)``, and returns ``(sample, batch)``; ``sample(sample_shape,
condition)`` returns ``(*sample_shape, batch, *event)``; ``loss(input, condition)``
takes ``(batch, *event)`` and ``(batch, *condition)`` and returns ``(batch,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
from sbi.utils.sbiutils import standardizing_net, z_score_parser, z_standardization
from torch import Tensor, nn

from .build import _spec, to_pyro
from .params import init_params
from .spec import FlowSpec, realnvp


class FlowbridgeEstimator(ConditionalDensityEstimator):
    """A flowbridge conditional flow as sbi's ``ConditionalDensityEstimator``.

    ``q(theta | x)`` is a standard normal pushed through the flow at the context
    ``e(x)`` (``e``: sbi's z-scoring of ``x``, then the embedding net), then through the
    z-scoring of ``theta`` undone (``theta = mean + std * theta_z``; its log-det is part
    of every log-density). Build it with :func:`posterior_nn`, which sbi calls with the
    first training batch.

    Args:
        flow: a conditional flow from :func:`flowbridge.to_pyro` (a ``ConditionalFlow``)
            whose context is the embedding's output.
        embedding_net: maps conditions ``(batch, *condition_shape)`` to ``(batch,
            context_dim)``.
        input_shape: the event shape of ``theta``, ``(D,)``.
        condition_shape: the shape of one condition ``x``.
        mean: ``(D,)``, the z-scoring's mean of ``theta`` (zeros: none).
        std: ``(D,)``, its standard deviation (ones: none).
        spec: the flow's :class:`flowbridge.FlowSpec`.

    Example:
        >>> import torch
        >>> from flowbridge.sbi import posterior_nn
        >>> theta, x = torch.randn(100, 2), torch.randn(100, 3)
        >>> estimator = posterior_nn(num_couplings=2, hidden=(8,))(theta, x)
        >>> estimator.log_prob(theta[:4].unsqueeze(0), x[:4]).shape
        torch.Size([1, 4])
        >>> estimator.sample((5,), x[:4]).shape
        torch.Size([5, 4, 2])
    """

    def __init__(self, flow: nn.Module, embedding_net: nn.Module, input_shape: Any,
                 condition_shape: Any, mean: Tensor, std: Tensor, spec: FlowSpec):  # fmt: skip
        super().__init__(net=flow, input_shape=torch.Size(input_shape),
                         condition_shape=torch.Size(condition_shape))  # fmt: skip
        self._embedding_net = embedding_net
        self.spec = spec
        self.register_buffer("_mean", mean)
        self.register_buffer("_std", std)

    @property
    def embedding_net(self) -> nn.Module:
        """The condition's z-scoring and embedding, ``x -> e(x)``."""
        return self._embedding_net

    def _distribution(self, features: Tensor, batch_shape: tuple = ()) -> Any:
        """``q(theta | x)`` at the embedded conditions ``features`` (``(*batch, F)``)."""
        zeros = self._mean.new_zeros(self._mean.shape).expand(*batch_shape, *self._mean.shape)
        base = dist.Normal(zeros, 1.0).to_event(1)
        unscore = dist.transforms.AffineTransform(self._mean, self._std, event_dim=1, cache_size=1)
        return dist.TransformedDistribution(base, [self.net.condition(features), unscore])

    def _features(self, condition: Tensor) -> Tensor:
        """``e(x)`` for conditions ``(*batch, *condition_shape)``: ``(*batch, F)``."""
        batch = condition.shape[: condition.dim() - len(self.condition_shape)]
        flat = condition.reshape(-1, *self.condition_shape)
        return self._embedding_net(flat).reshape(*batch, -1)

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """``log q(theta | x)``.

        Args:
            input: ``theta``, ``(sample, batch, *event)`` or ``(batch, *event)``.
            condition: ``x``, ``(batch, *condition)`` or ``(sample, batch, *condition)``.

        Returns:
            ``(sample, batch)`` (sample 1 for an input without one); batch dimensions of
            input and condition broadcast.

        Raises:
            ValueError: an input or condition of the wrong event shape (sbi's checks).

        Example:
            >>> import torch
            >>> from flowbridge.sbi import posterior_nn
            >>> est = posterior_nn(num_couplings=2, hidden=(8,))(torch.randn(50, 2), torch.randn(50, 3))
            >>> est.log_prob(torch.randn(7, 4, 2), torch.randn(4, 3)).shape
            torch.Size([7, 4])
        """
        self._check_input_shape(input)
        self._check_condition_shape(condition)
        input, condition, _ = self._broadcast_and_align(input, condition)
        return self._distribution(self._features(condition)).log_prob(input)

    def loss(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """The negative log-density sbi's training minimises.

        Args:
            input: ``theta``, ``(batch, *event)``.
            condition: ``x``, ``(batch, *condition)``.

        Returns:
            ``(batch,)``.

        Raises:
            ValueError: an input or condition of the wrong event shape.

        Example:
            >>> import torch
            >>> from flowbridge.sbi import posterior_nn
            >>> est = posterior_nn(num_couplings=2, hidden=(8,))(torch.randn(50, 2), torch.randn(50, 3))
            >>> est.loss(torch.randn(4, 2), torch.randn(4, 3)).shape
            torch.Size([4])
        """
        return -self.log_prob(input.unsqueeze(0), condition)[0]

    def sample(self, sample_shape: Any, condition: Tensor, **kwargs: Any) -> Tensor:
        """Draws of ``theta`` at each condition.

        Args:
            sample_shape: the draws' leading shape.
            condition: ``x``, ``(batch, *condition)``.

        Returns:
            ``(*sample_shape, batch, *event)``.

        Raises:
            ValueError: a condition of the wrong event shape.

        Example:
            >>> import torch
            >>> from flowbridge.sbi import posterior_nn
            >>> est = posterior_nn(num_couplings=2, hidden=(8,))(torch.randn(50, 2), torch.randn(50, 3))
            >>> est.sample((10,), torch.randn(1, 3)).shape
            torch.Size([10, 1, 2])
        """
        return self.sample_and_log_prob(sample_shape, condition)[0]

    def sample_and_log_prob(self, sample_shape: Any, condition: Tensor,
                            **kwargs: Any) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Draws and their log-densities, the log-density from the draw's own forward
        (the flow's cache answers it: no inverse is run).

        Args:
            sample_shape: the draws' leading shape.
            condition: ``x``, ``(batch, *condition)``.

        Returns:
            ``(*sample_shape, batch, *event)`` and ``(*sample_shape, batch)``.

        Raises:
            ValueError: a condition of the wrong event shape.

        Example:
            >>> import torch
            >>> from flowbridge.sbi import posterior_nn
            >>> est = posterior_nn(num_couplings=2, hidden=(8,))(torch.randn(50, 2), torch.randn(50, 3))
            >>> draws, log_q = est.sample_and_log_prob((6,), torch.randn(3, 3))
            >>> draws.shape, log_q.shape
            (torch.Size([6, 3, 2]), torch.Size([6, 3]))
        """
        self._check_condition_shape(condition)
        if condition.dim() == len(self.condition_shape):
            condition = condition.unsqueeze(0)
        features = self._features(condition)
        q = self._distribution(features, (condition.shape[0],))
        draws = q.rsample(torch.Size(sample_shape))
        return draws, q.log_prob(draws)


def posterior_nn(
    spec: FlowSpec | dict | Callable[[int, int], FlowSpec] | None = None,
    *,
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    embedding_net: nn.Module | None = None,
    num_couplings: int = 5,
    hidden: tuple[int, ...] = (50, 50),
    seed: int = 0,
    **preset: Any,
) -> Callable[[Tensor, Tensor], FlowbridgeEstimator]:
    """A builder sbi's ``NPE(density_estimator=...)`` accepts: a flowbridge conditional
    flow as the posterior estimator, in the style of sbi's ``posterior_nn``.

    sbi calls the builder with its first training batch ``(theta, x)``; the builder
    z-scores both as sbi's own estimators do (``z_score_theta``, ``z_score_x``:
    ``"independent"``, ``"structured"`` or ``None``), puts ``x`` through the embedding net
    (default: none), and makes the flow for the embedding's output size: ``spec`` if
    given, else :func:`flowbridge.realnvp` with ``num_couplings``, ``hidden`` and
    ``preset``. Its weights start from :func:`flowbridge.init_params` (the identity).

    Args:
        spec: a conditional :class:`flowbridge.FlowSpec` (or its dict) of event shape
            ``(D,)`` and ``context_dim`` the embedding's output size, or a function
            ``(D, context_dim) -> FlowSpec``; default: the preset.
        z_score_theta: how ``theta`` is z-scored (default ``"independent"``).
        z_score_x: how ``x`` is z-scored (default ``"independent"``).
        embedding_net: maps ``(batch, *condition_shape)`` to ``(batch, features)``; sbi's
            embedding nets work (default: the identity, for vector ``x``). A flowbridge
            context embedding in ``spec`` is the alternative.
        num_couplings: the preset's couplings (default 5, sbi's ``num_transforms``).
        hidden: the preset's conditioner widths (default ``(50, 50)``, as sbi's).
        seed: the seed of the initial hidden weights.
        **preset: other arguments of :func:`flowbridge.realnvp` (``scale``,
            ``permutation``, ``context_embedding``, ...).

    Returns:
        ``builder(batch_theta, batch_x) -> FlowbridgeEstimator``.

    Raises:
        ValueError: (when sbi calls the builder) ``theta`` is not a batch of vectors, the
            embedding does not give vectors, or ``spec`` does not fit ``theta`` and the
            embedding (the message names both sizes).
        SpecError: a preset argument or ``spec`` is invalid.

    Example:
        >>> import torch
        >>> from sbi.inference import NPE
        >>> from sbi.utils import BoxUniform
        >>> from flowbridge.sbi import posterior_nn
        >>> prior = BoxUniform(-torch.ones(2), torch.ones(2))
        >>> theta = prior.sample((200,))
        >>> x = theta + 0.1 * torch.randn(200, 2)
        >>> npe = NPE(prior, density_estimator=posterior_nn(num_couplings=2, hidden=(16,)),
        ...           show_progress_bars=False)
        >>> estimator = npe.append_simulations(theta, x).train(max_num_epochs=2)
        >>> type(estimator).__name__
        'FlowbridgeEstimator'
        >>> npe.build_posterior().sample((3,), x=x[0]).shape
        torch.Size([3, 2])
    """

    def build(batch_theta: Tensor, batch_x: Tensor) -> FlowbridgeEstimator:
        if batch_theta.dim() != 2:
            raise ValueError(f"theta: expected a batch of vectors (batch, D), got shape "
                             f"{tuple(batch_theta.shape)}")  # fmt: skip
        dim, condition_shape = batch_theta.shape[1], batch_x.shape[1:]
        embed = embedding_net if embedding_net is not None else nn.Identity()
        do_x, structured_x = z_score_parser(z_score_x)
        if do_x:
            embed = nn.Sequential(standardizing_net(batch_x, structured_x), embed)
        with torch.no_grad():
            out = embed(batch_x[:2])
        if out.dim() != 2:
            raise ValueError(f"embedding_net: expected features (batch, F), got shape "
                             f"{tuple(out.shape)}")  # fmt: skip
        features = out.shape[1]
        if spec is None:
            flow_spec = realnvp(dim, num_couplings=num_couplings, hidden=hidden,
                                context_dim=features, **preset)  # fmt: skip
        elif callable(spec):
            flow_spec = _spec(spec(dim, features))
        else:
            flow_spec = _spec(spec)
        if tuple(flow_spec.event_shape) != (dim,) or flow_spec.context_dim != features:
            raise ValueError(f"spec: expected event shape ({dim},) (theta's) and context_dim "
                             f"{features} (the embedding's output), got "
                             f"{tuple(flow_spec.event_shape)} and {flow_spec.context_dim}")  # fmt: skip
        do_theta, structured_theta = z_score_parser(z_score_theta)
        if do_theta:
            mean, std = z_standardization(batch_theta, structured_theta)
            mean, std = mean.expand(dim).clone(), std.expand(dim).clone()
        else:
            mean, std = batch_theta.new_zeros(dim), batch_theta.new_ones(dim)
        flow = to_pyro(flow_spec, init_params(flow_spec, seed=seed), dtype=batch_theta.dtype)
        return FlowbridgeEstimator(flow, embed, (dim,), condition_shape, mean, std, flow_spec)

    return build
