"""flowbridge flows as sbi's density estimators, for neural posterior and likelihood
estimation.

``NPE(prior, density_estimator=flowbridge.sbi.posterior_nn(num_transforms=6))`` trains a
flowbridge conditional flow (in Pyro's backend, the same generated code as
:func:`flowbridge.to_pyro`) with sbi's own training loop, and sbi's ``build_posterior``
and posterior sampling use it; ``NLE(prior, density_estimator=likelihood_nn(...))`` does
the same for the likelihood. Importing this module imports torch, Pyro and sbi;
``import flowbridge`` does not.

Both builders take sbi's vocabulary (``model``, ``z_score_theta``, ``z_score_x``,
``hidden_features``, ``num_transforms``, ``embedding_net``) and check every argument
when called, before sbi trains anything; the builder they return checks sbi's batch
(``batch_theta``, ``batch_x``) and the embedding's output before it makes the flow.

Shapes follow sbi's ``ConditionalDensityEstimator``: ``log_prob`` takes inputs
``(sample, batch, *event)`` (or ``(batch, *event)``) and conditions
``(batch, *condition)``, and returns ``(sample, batch)``; ``sample(sample_shape,
condition)`` returns ``(*sample_shape, batch, *event)``; ``loss(input, condition)``
takes ``(batch, *event)`` and ``(batch, *condition)`` and returns ``(batch,)``. The input
is ``theta`` and the condition ``x`` for a posterior estimator, the other way round for a
likelihood estimator.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
from sbi.neural_nets.factory import model_builders as _SBI_MODELS
from sbi.utils.sbiutils import standardizing_net, z_score_parser, z_standardization
from torch import Tensor, nn

from . import backends
from .build import _spec, to_pyro
from .errors import SpecError
from .params import init_params
from .spec import FlowSpec, maf, nice, nsf, realnvp
from .spec.models import Conditioner, NonNegInt, PosInt
from .spec.presets import _argument, _field

backends.get("pyro").runtime()  # imports Pyro, keeping torch's validation default as it was
import pyro.distributions as dist  # noqa: E402


class FlowbridgeEstimator(ConditionalDensityEstimator):
    """A flowbridge conditional flow as sbi's ``ConditionalDensityEstimator``.

    ``q(theta | x)`` (a posterior estimator, from :func:`posterior_nn`) is a standard
    normal pushed through the flow at the context ``e(x)`` (``e``: sbi's z-scoring of
    ``x``, then the embedding net), then through the z-scoring of ``theta`` undone
    (``theta = mean + std * theta_z``; its log-det is part of every log-density). A
    likelihood estimator (from :func:`likelihood_nn`) is the same with ``x`` the input and
    ``theta`` the condition: ``q(x | theta)``. sbi calls the builder with its training
    data.

    Args:
        flow: a conditional flow from :func:`flowbridge.to_pyro` (a ``ConditionalFlow``)
            whose context is the embedding's output.
        embedding_net: maps conditions ``(batch, *condition_shape)`` to ``(batch,
            context_dim)``.
        input_shape: the event shape of the input, ``(D,)``.
        condition_shape: the shape of one condition.
        mean: ``(D,)``, the z-scoring's mean of the input (zeros: none).
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


# ------------------------------------------------------------------ the builders
#: flowbridge's presets by the name ``model`` takes (sbi's names its own estimators).
def _maf(dim: int, *, num_couplings: int = 5, hidden: tuple[int, ...] = (50, 50),
         activation: str = "relu", scale: Any = None, spline: Any = None,
         degrees: Any = "equal", context_dim: int = 0, context_embedding: Any = None,
         name: str = "maf") -> FlowSpec:  # fmt: skip
    """:func:`flowbridge.maf` (a MAF: the density one pass) with its layer count under the
    builders' name (``num_transforms``, each layer transforming every entry)."""
    return maf(dim, num_layers=num_couplings, hidden=hidden, activation=activation,
               scale=scale, spline=spline, degrees=degrees, context_dim=context_dim,
               context_embedding=context_embedding, name=name)  # fmt: skip


_PRESETS: dict[str, Callable[..., FlowSpec]] = {"realnvp": realnvp, "nice": nice, "nsf": nsf,
                                                "maf": _maf}  # fmt: skip

#: sbi's defaults for its flows: five transforms, hidden layers of 50 (two of them, as
#: sbi's MAF's residual blocks).
_NUM_TRANSFORMS, _HIDDEN = 10, (50, 50)
#: What the builders give a preset unless told otherwise, from the sbibm search in
#: examples/npe_sbibm.py: a coupling transforms half the entries, so twice sbi's 5 MAF
#: layers (C2ST on two moons about 0.61 against 0.70 with 5 couplings); a soft-clamped
#: log-scale (bound 3), since exp(s) unbounded overflowed on SLCP (a NaN loss in one of
#: two seeds with 10 couplings). The masks alternate (no random permutations: in two
#: dimensions a random permutation may be the identity, leaving an entry untransformed).
_PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "realnvp": {"scale": {"kind": "soft_clamp", "bound": 3.0}},
    "nice": {},
    # sbi's nsf: 10 bins on [-3, 3] (its num_bins and tail_bound defaults); the z-scored
    # theta lies mostly inside
    "nsf": {"spline": {"kind": "rational_quadratic", "bins": 10, "bound": 3.0}},
    # sbi's maf: 5 MADE layers (its num_transforms), each transforming every entry; the
    # log-scale soft-clamped as realnvp's (sbi's nflows layer bounds its scale too, with
    # softplus(u) + 1e-3)
    "maf": {"scale": {"kind": "soft_clamp", "bound": 3.0}},
}
#: The layer count a preset starts from, where it is not :data:`_NUM_TRANSFORMS`.
_PRESET_COUNTS = {"maf": 5}

#: sbi's spline arguments, taken with ``model="nsf"``: the spline's field each one sets.
_SPLINE_ARGUMENTS = {"num_bins": "bins", "tail_bound": "bound"}

#: What ``z_score_theta`` and ``z_score_x`` take (sbi's words).
_Z_SCORES = (None, "none", "independent", "structured")

#: Arguments of sbi's ``posterior_nn``/``likelihood_nn`` that no flowbridge preset has, and
#: why.
_SBI_ONLY = {
    "num_bins": (
        "it counts a spline's bins, and only model='nsf' (flowbridge's spline flow) has "
        "splines; use model='nsf', or leave num_bins out"
    ),
    "tail_bound": (
        "it bounds a spline's interval, and only model='nsf' (flowbridge's spline flow) has "
        "splines; use model='nsf', or leave tail_bound out"
    ),
    "num_components": (
        "it is the number of components of sbi's mixture density network "
        "('mdn'), not of a flow; use sbi's posterior_nn('mdn') for one"
    ),
}

#: The preset arguments the builder fills itself.
_BUILDER_FILLS = {
    "dim": "the size of the flow's input",
    "context_dim": "the embedding's output size",
}


@dataclass(frozen=True)
class _Recipe:
    """A builder's arguments, checked: everything the builder needs but the batch."""

    role: str  # "posterior" or "likelihood"
    model: Any  # a preset function, a FlowSpec or a function (D, context_dim) -> FlowSpec
    options: dict = field(default_factory=dict)  # the preset's arguments
    z_score_input: Any = "independent"
    z_score_condition: Any = "independent"
    embedding_net: nn.Module | None = None
    seed: int = 0

    @property
    def input_name(self) -> str:
        """The builder's argument that holds the flow's input."""
        return "batch_theta" if self.role == "posterior" else "batch_x"

    @property
    def condition_name(self) -> str:
        """The builder's argument that holds the condition."""
        return "batch_x" if self.role == "posterior" else "batch_theta"


def posterior_nn(
    model: str | FlowSpec | dict | Callable[[int, int], FlowSpec] = "realnvp",
    *,
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    hidden_features: int | tuple[int, ...] | None = None,
    num_transforms: int | None = None,
    embedding_net: nn.Module | None = None,
    num_couplings: int | None = None,
    hidden: tuple[int, ...] | None = None,
    seed: int = 0,
    **preset: Any,
) -> Callable[[Tensor, Tensor], FlowbridgeEstimator]:
    """A builder sbi's ``NPE(density_estimator=...)`` accepts: a flowbridge conditional
    flow ``q(theta | x)`` as the posterior estimator, in sbi's ``posterior_nn`` vocabulary.

    sbi calls the builder with its training data ``(batch_theta, batch_x)``; the builder
    z-scores both as sbi's own estimators do, puts ``x`` through the embedding net
    (default: none), and makes the flow for the embedding's output size: the preset
    ``model`` names (with ``num_transforms`` couplings of hidden layers
    ``hidden_features``), or the spec ``model`` is. Its weights start from
    :func:`flowbridge.init_params` (the identity). Every argument is checked here, when
    ``posterior_nn`` is called; the builder checks the batch and the embedding's output.

    Args:
        model: a flowbridge preset by name, as sbi's ``model`` names its estimators:
            ``"realnvp"`` (default, :func:`flowbridge.realnvp`), ``"nsf"``
            (:func:`flowbridge.nsf`, rational-quadratic spline couplings: flowbridge's,
            not nflows'; sbi's ``num_bins`` and ``tail_bound`` set its spline, default 10
            bins on ``[-3, 3]`` as sbi's), ``"maf"`` (:func:`flowbridge.maf`, MADE
            layers: flowbridge's, beside sbi's nflows one; 5 layers by default, as sbi's,
            the log-scale soft-clamped to 3) or ``"nice"`` (:func:`flowbridge.nice`); or a
            conditional :class:`flowbridge.FlowSpec` (or its dict) of event shape ``(D,)``
            and ``context_dim`` the embedding's output size, or a function
            ``(D, context_dim) -> FlowSpec``. sbi's other names (``"zuko_nsf"``,
            ``"mdn"``, ...) are refused: use sbi's ``posterior_nn`` for those.
        z_score_theta: how ``theta`` is z-scored: ``"independent"`` (default),
            ``"structured"``, ``"none"`` or ``None``. The z-scoring is an affine map after
            the flow, so its log-det is part of every log-density.
        z_score_x: how ``x`` is z-scored before the embedding, the same choices.
        hidden_features: the preset's conditioner widths: an integer ``W`` (each of the
            two hidden layers ``W`` wide, as sbi's ``hidden_features``) or a list of
            widths; default 50. Or give ``hidden``.
        num_transforms: the preset's number of couplings (sbi's name); default 10 (a
            coupling transforms half the entries: twice sbi's 5 MAF layers), 5 MADE layers
            for ``"maf"``. Or give ``num_couplings``.
        embedding_net: a ``torch.nn.Module`` mapping ``(batch, *condition_shape)`` to
            ``(batch, features)``, trained with the flow; sbi's embedding nets work
            (default: none, for vector ``x``). A flowbridge ``context_embedding`` in the
            spec is the alternative.
        num_couplings: flowbridge's name for ``num_transforms``.
        hidden: flowbridge's name for the widths, a list of positive integers.
        seed: the seed of the initial weights (and of ``permutation="random"``'s
            permutations), a non-negative integer.
        **preset: the preset's other arguments (``scale``, ``permutation``,
            ``activation``, ``context_embedding``, ... for ``"realnvp"``; ``scaling``,
            ``activation``, ... for ``"nice"``). ``"realnvp"`` defaults to
            ``scale={"kind": "soft_clamp", "bound": 3.0}`` here (an unbounded ``exp``
            scale overflowed on sbibm's SLCP; see ``examples/npe_sbibm.py``).

    Returns:
        ``builder(batch_theta, batch_x) -> FlowbridgeEstimator``.

    Raises:
        TypeError: (here) an argument this builder does not take (the message names it:
            an option of sbi's own estimators, or a typo), or one of the wrong type
            (``model``, ``embedding_net``); (when sbi calls the builder)
            ``batch_theta``/``batch_x`` not float32 or float64 tensors of one dtype, or
            an embedding that returns no tensor or one of another dtype.
        ValueError: (here) a ``model`` name that is not a flowbridge preset, a z-scoring
            sbi does not define or that this builder cannot do
            (``"transform_to_unconstrained"``), or one setting given under both its
            names; (when sbi calls the builder) an empty batch, ``theta`` that is not a
            finite batch of vectors, batches of different sizes, an embedding that fails
            on ``x`` or gives no output features, or ``model`` that does not fit
            ``theta`` and the embedding.
        SpecError: (here) a preset argument, ``seed`` or a spec ``model`` is invalid
            (the message names the argument).

    Example:
        >>> import tempfile
        >>> import torch
        >>> from sbi.inference import NPE
        >>> from sbi.utils import BoxUniform
        >>> from sbi.utils.tracking import TensorBoardTracker
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> from flowbridge.sbi import posterior_nn
        >>> prior = BoxUniform(-torch.ones(2), torch.ones(2))
        >>> theta = prior.sample((200,))
        >>> x = theta + 0.1 * torch.randn(200, 2)
        >>> logs = tempfile.TemporaryDirectory()  # sbi's TensorBoard logs: not ./sbi-logs
        >>> npe = NPE(prior, density_estimator=posterior_nn(num_transforms=2, hidden_features=16),
        ...           tracker=TensorBoardTracker(SummaryWriter(logs.name)), show_progress_bars=False)
        >>> estimator = npe.append_simulations(theta, x).train(max_num_epochs=2)
        >>> type(estimator).__name__, estimator.spec.layers[0].conditioner.hidden
        ('FlowbridgeEstimator', (16, 16))
        >>> npe.build_posterior().sample((3,), x=x[0]).shape
        torch.Size([3, 2])
        >>> logs.cleanup()
        >>> posterior_nn("zuko_nsf")
        Traceback (most recent call last):
            ...
        ValueError: model: 'zuko_nsf' is one of sbi's own estimators, not a flowbridge preset; use sbi's posterior_nn('zuko_nsf') (from sbi.neural_nets import posterior_nn), or one of flowbridge's presets 'realnvp', 'nice', 'nsf', 'maf'
    """
    recipe = _recipe("posterior", model, z_score_theta, z_score_x, hidden_features,
                     num_transforms, embedding_net, num_couplings, hidden, seed, preset)  # fmt: skip

    def build(batch_theta: Tensor, batch_x: Tensor) -> FlowbridgeEstimator:
        return _build(recipe, batch_theta, batch_x, input=batch_theta, condition=batch_x)

    return build


def likelihood_nn(
    model: str | FlowSpec | dict | Callable[[int, int], FlowSpec] = "realnvp",
    *,
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    hidden_features: int | tuple[int, ...] | None = None,
    num_transforms: int | None = None,
    embedding_net: nn.Module | None = None,
    num_couplings: int | None = None,
    hidden: tuple[int, ...] | None = None,
    seed: int = 0,
    **preset: Any,
) -> Callable[[Tensor, Tensor], FlowbridgeEstimator]:
    """A builder sbi's ``NLE(density_estimator=...)`` accepts: a flowbridge conditional
    flow ``q(x | theta)`` as the likelihood estimator, in sbi's ``likelihood_nn``
    vocabulary.

    The same as :func:`posterior_nn` with the roles swapped, as in sbi: the flow's input
    is ``x`` (a batch of vectors ``(batch, D_x)``; NLE takes no other), its condition
    ``theta``, put through ``embedding_net`` (default: none) after its z-scoring. sbi's
    ``build_posterior`` then samples the posterior by MCMC (or rejection, importance
    sampling, ...) from this likelihood and the prior.

    Args:
        model: a flowbridge preset by name (``"realnvp"``, default, ``"nsf"``, ``"maf"``
            or ``"nice"``, as :func:`posterior_nn`'s), or a
            conditional :class:`flowbridge.FlowSpec` (or its dict) of event shape
            ``(D_x,)`` and ``context_dim`` the embedding's output size, or a function
            ``(D_x, context_dim) -> FlowSpec``; sbi's own names are refused.
        z_score_theta: how ``theta`` (the condition) is z-scored: ``"independent"``
            (default), ``"structured"``, ``"none"`` or ``None``.
        z_score_x: how ``x`` (the flow's input) is z-scored, the same choices; its
            log-det is part of every log-density.
        hidden_features: the preset's conditioner widths, an integer ``W`` (two hidden
            layers of ``W``) or a list; default 50. Or give ``hidden``.
        num_transforms: the preset's number of couplings; default 10. Or give
            ``num_couplings``.
        embedding_net: a ``torch.nn.Module`` mapping ``(batch, *theta_shape)`` to
            ``(batch, features)``, trained with the flow (default: none).
        num_couplings: flowbridge's name for ``num_transforms``.
        hidden: flowbridge's name for the widths.
        seed: the seed of the initial weights, a non-negative integer.
        **preset: the preset's other arguments, as for :func:`posterior_nn`.

    Returns:
        ``builder(batch_theta, batch_x) -> FlowbridgeEstimator`` (the argument order sbi
        calls it with), whose input is ``x`` and condition ``theta``.

    Raises:
        TypeError: as for :func:`posterior_nn`.
        ValueError: as for :func:`posterior_nn`, with ``x`` as the batch of finite
            vectors.
        SpecError: as for :func:`posterior_nn`.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from sbi.inference import NLE
        >>> from sbi.utils import BoxUniform
        >>> from sbi.utils.tracking import TensorBoardTracker
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> from flowbridge.sbi import likelihood_nn
        >>> prior = BoxUniform(-torch.ones(2), torch.ones(2))
        >>> theta = prior.sample((200,))
        >>> x = torch.cat([theta, theta.sum(1, keepdim=True)], 1) + 0.1 * torch.randn(200, 3)
        >>> logs = tempfile.TemporaryDirectory()
        >>> nle = NLE(prior, density_estimator=likelihood_nn(num_transforms=2, hidden_features=16),
        ...           tracker=TensorBoardTracker(SummaryWriter(logs.name)), show_progress_bars=False)
        >>> estimator = nle.append_simulations(theta, x).train(max_num_epochs=2)
        >>> estimator.input_shape, estimator.condition_shape
        (torch.Size([3]), torch.Size([2]))
        >>> estimator.log_prob(x[:4], theta[:4]).shape
        torch.Size([1, 4])
        >>> logs.cleanup()
    """
    recipe = _recipe("likelihood", model, z_score_x, z_score_theta, hidden_features,
                     num_transforms, embedding_net, num_couplings, hidden, seed, preset)  # fmt: skip

    def build(batch_theta: Tensor, batch_x: Tensor) -> FlowbridgeEstimator:
        return _build(recipe, batch_theta, batch_x, input=batch_x, condition=batch_theta)

    return build


# ------------------------------------------------------------------ checks at the call
def _recipe(role: str, model: Any, z_score_input: Any, z_score_condition: Any,
            hidden_features: Any, num_transforms: Any, embedding_net: Any,
            num_couplings: Any, hidden: Any, seed: Any, preset: dict) -> _Recipe:  # fmt: skip
    """Every builder argument checked, before any batch is seen (errors name the
    argument as the caller wrote it)."""
    input_z, condition_z = ("z_score_theta", "z_score_x") if role == "posterior" else (
        "z_score_x", "z_score_theta")  # fmt: skip
    _check_z_score(input_z, z_score_input)
    _check_z_score(condition_z, z_score_condition)
    if embedding_net is not None and not isinstance(embedding_net, nn.Module):
        raise TypeError(f"embedding_net: expected a torch.nn.Module (such as sbi's FCEmbedding "
                        f"or CNNEmbedding) or None, got {type(embedding_net).__name__}")  # fmt: skip
    seed = _argument("seed", NonNegInt, seed)
    if model == "nsf":
        preset = _spline_preset(preset)
    for name in sorted(preset):
        if name in _SBI_ONLY:
            raise TypeError(f"{name}: not supported by flowbridge's {role}_nn: {_SBI_ONLY[name]}")
        if name in _BUILDER_FILLS:
            raise TypeError(f"{name}: set by the builder ({_BUILDER_FILLS[name]}), not an "
                            f"argument of {role}_nn")  # fmt: skip
    count = _one_of("num_transforms", num_transforms, "num_couplings", num_couplings)
    widths = _one_of("hidden_features", hidden_features, "hidden", hidden)
    options = {k: v for k, v in [("num_transforms", num_transforms), ("num_couplings", num_couplings),
                                 ("hidden_features", hidden_features), ("hidden", hidden)]
               if v is not None} | preset  # fmt: skip
    if not isinstance(model, str):
        if options:
            raise TypeError(f"{', '.join(options)}: options of a preset, but model is a spec "
                            f"(which fixes its own layers); pass a preset's name as model, "
                            f"or leave these out")  # fmt: skip
        return _Recipe(role, _check_spec_model(model), {}, z_score_input, z_score_condition,
                       embedding_net, seed)  # fmt: skip
    preset_fn = _preset(role, model)
    known = set(inspect.signature(preset_fn).parameters) - {"dim", "num_couplings", "hidden",
                                                           "context_dim", "seed"}  # fmt: skip
    unknown = sorted(set(preset) - known)
    if unknown:
        raise TypeError(f"{', '.join(unknown)}: not an argument of flowbridge's {role}_nn with "
                        f"model {model!r} (options of sbi's own estimators are not taken); "
                        f"it takes z_score_theta, z_score_x, hidden_features, num_transforms, "
                        f"embedding_net, seed and {', '.join(sorted(known))}")  # fmt: skip
    if count is None:
        count = _PRESET_COUNTS.get(model, _NUM_TRANSFORMS)
    else:
        count = _argument("num_transforms" if num_transforms is not None else "num_couplings",
                          PosInt, count)  # fmt: skip
    if widths is None:
        widths = _HIDDEN
    elif hidden_features is not None:
        widths = _widths(hidden_features)
    else:
        widths = _argument("hidden", _field(Conditioner, "hidden"), widths)
    options = {"num_couplings": count, "hidden": widths, **_PRESET_DEFAULTS[model], **preset}
    if "seed" in inspect.signature(preset_fn).parameters:
        options["seed"] = seed
    preset_fn(2, context_dim=1, **options)  # every preset argument checked as its field
    return _Recipe(role, preset_fn, options, z_score_input, z_score_condition, embedding_net, seed)


def _spline_preset(preset: dict) -> dict:
    """``model="nsf"``'s arguments with sbi's ``num_bins`` and ``tail_bound`` put into its
    ``spline`` (default: sbi's 10 bins on [-3, 3])."""
    given = {name: preset[name] for name in _SPLINE_ARGUMENTS if name in preset}
    if not given:
        return preset
    if "spline" in preset:
        raise TypeError(f"{', '.join(given)} and spline: give the spline's settings one way")
    spline = dict(_PRESET_DEFAULTS["nsf"]["spline"])
    spline.update({_SPLINE_ARGUMENTS[name]: value for name, value in given.items()})
    rest = {k: v for k, v in preset.items() if k not in _SPLINE_ARGUMENTS}
    return {**rest, "spline": spline}


def _check_z_score(name: str, value: Any) -> None:
    """A z-scoring sbi defines and this builder does."""
    if isinstance(value, str) and value == "transform_to_unconstrained":
        raise ValueError(f"{name}: 'transform_to_unconstrained' is not supported by flowbridge's "
                         f"builders (it maps through the prior's support, which they are not "
                         f"given); use 'independent', 'structured', 'none' or None (sbi's "
                         f"posterior keeps draws inside the prior's support either way), or "
                         f"one of sbi's zuko_* estimators, which support it")  # fmt: skip
    if not any(value is z or (isinstance(value, str) and value == z) for z in _Z_SCORES):
        raise ValueError(f"{name}: expected one of 'independent', 'structured', 'none' or None, "
                         f"got {value!r}")  # fmt: skip


def _one_of(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """One setting under either of its names, not both."""
    if value is not None and alias_value is not None:
        raise ValueError(f"{name} and {alias}: the same setting under two names (got "
                         f"{value!r} and {alias_value!r}); pass one")  # fmt: skip
    return alias_value if value is None else value


def _widths(hidden_features: Any) -> tuple[int, ...]:
    """``hidden_features`` as the conditioner's widths: ``W`` is ``(W, W)``."""
    if isinstance(hidden_features, int) and not isinstance(hidden_features, bool):
        width = _argument("hidden_features", PosInt, hidden_features)
        return (width,) * len(_HIDDEN)
    return _argument("hidden_features", _field(Conditioner, "hidden"), hidden_features)


def _preset(role: str, name: str) -> Callable[..., FlowSpec]:
    """The preset ``model`` names."""
    if name in _PRESETS:
        return _PRESETS[name]
    presets = ", ".join(map(repr, _PRESETS))
    if name in _SBI_MODELS:
        raise ValueError(f"model: {name!r} is one of sbi's own estimators, not a flowbridge "
                         f"preset; use sbi's {role}_nn({name!r}) (from sbi.neural_nets import "
                         f"{role}_nn), or one of flowbridge's presets {presets}")  # fmt: skip
    raise ValueError(f"model: expected one of flowbridge's presets {presets}, a FlowSpec, its "
                     f"dict or a function (D, context_dim) -> FlowSpec, got {name!r}")  # fmt: skip


def _check_spec_model(model: Any) -> FlowSpec | Callable[[int, int], FlowSpec]:
    """A spec ``model``: conditional, of vector events; or a function making one."""
    if isinstance(model, (FlowSpec, dict)):
        try:
            spec = _spec(model)
        except SpecError as exc:
            raise SpecError(f"model: {exc}") from None
        if len(spec.event_shape) != 1 or not spec.context_dim:
            raise ValueError(f"model: expected a conditional spec (context_dim > 0) of vector "
                             f"events (D,), got event shape {tuple(spec.event_shape)} and "
                             f"context_dim {spec.context_dim}")  # fmt: skip
        return spec
    if callable(model):
        return model
    raise TypeError(f"model: expected one of flowbridge's presets {', '.join(map(repr, _PRESETS))}, "
                    f"a FlowSpec, its dict or a function (D, context_dim) -> FlowSpec, got "
                    f"{type(model).__name__}")  # fmt: skip


# ------------------------------------------------------------------ checks at the build
def _build(recipe: _Recipe, batch_theta: Any, batch_x: Any, *, input: Any,
           condition: Any) -> FlowbridgeEstimator:  # fmt: skip
    """The estimator for sbi's batch: ``input`` is what the flow models (``theta`` for a
    posterior, ``x`` for a likelihood), ``condition`` what it is conditioned on."""
    iname, cname = recipe.input_name, recipe.condition_name
    for name, value in [("batch_theta", batch_theta), ("batch_x", batch_x)]:
        _check_tensor(name, value)
    if batch_x.dtype != batch_theta.dtype:
        raise TypeError(f"batch_x: expected batch_theta's dtype ({_dtype(batch_theta)}), got "
                        f"{_dtype(batch_x)}; convert one of them")  # fmt: skip
    if input.dim() != 2 or input.shape[1] == 0:
        raise ValueError(f"{iname}: expected a batch of vectors (batch, D) with D > 0, got "
                         f"shape {tuple(input.shape)}")  # fmt: skip
    if condition.dim() < 2 or condition.shape[1:].numel() == 0:
        raise ValueError(f"{cname}: expected a batch (batch, *condition_shape) of at least one "
                         f"entry each, got shape {tuple(condition.shape)}")  # fmt: skip
    if batch_theta.shape[0] != batch_x.shape[0]:
        raise ValueError(f"batch_theta and batch_x: expected the same batch size, got "
                         f"{batch_theta.shape[0]} and {batch_x.shape[0]}")  # fmt: skip
    if input.shape[0] == 0:
        raise ValueError(f"{iname}: expected at least one row to build from, got an empty batch "
                         f"of shape {tuple(input.shape)}")  # fmt: skip
    if not torch.isfinite(input).all():
        rows = int((~torch.isfinite(input)).any(1).sum())
        raise ValueError(f"{iname}: expected finite values (the flow's input), got NaN or inf "
                         f"in {rows} of {input.shape[0]} rows")  # fmt: skip
    dim, condition_shape = input.shape[1], condition.shape[1:]
    embed, features = _embedding(recipe, condition)
    if isinstance(recipe.model, FlowSpec):
        flow_spec = recipe.model
    elif recipe.model in _PRESETS.values():
        flow_spec = recipe.model(dim, context_dim=features, **recipe.options)
    else:
        made = recipe.model(dim, features)
        try:
            flow_spec = _spec(made)
        except SpecError as exc:
            raise SpecError(f"model: the function's spec: {exc}") from None
    if tuple(flow_spec.event_shape) != (dim,) or flow_spec.context_dim != features:
        raise ValueError(f"model: expected event shape ({dim},) ({iname}'s) and context_dim "
                         f"{features} (the embedding's output), got "
                         f"{tuple(flow_spec.event_shape)} and {flow_spec.context_dim}")  # fmt: skip
    do_z, structured = z_score_parser(recipe.z_score_input)
    if do_z:
        mean, std = z_standardization(input, structured)
        mean, std = mean.expand(dim).clone(), std.expand(dim).clone()
    else:
        mean, std = input.new_zeros(dim), input.new_ones(dim)
    flow = to_pyro(flow_spec, init_params(flow_spec, seed=recipe.seed), dtype=input.dtype)
    return FlowbridgeEstimator(flow, embed, (dim,), condition_shape, mean, std, flow_spec)


def _check_tensor(name: str, value: Any) -> None:
    """A float32 or float64 torch tensor (sbi's training data)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (as sbi passes its training data), "
                        f"got {type(value).__module__}.{type(value).__name__}; convert with "
                        f"torch.as_tensor(..., dtype=torch.float32)")  # fmt: skip
    if value.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name}: expected float32 or float64 values, got {_dtype(value)} "
                        f"(sbi trains on float32: convert with .float())")  # fmt: skip


def _dtype(value: Tensor) -> str:
    return str(value.dtype).removeprefix("torch.")


def _embedding(recipe: _Recipe, condition: Tensor) -> tuple[nn.Module, int]:
    """The condition's z-scoring and embedding, and its number of output features,
    checked on the first two conditions."""
    cname = recipe.condition_name
    given = recipe.embedding_net is not None
    embed = recipe.embedding_net if given else nn.Identity()
    do_z, structured = z_score_parser(recipe.z_score_condition)
    if do_z:
        embed = nn.Sequential(standardizing_net(condition, structured), embed)
    probe = condition[:2]
    with torch.no_grad():
        try:
            out = embed(probe)
        except Exception as exc:
            if not given:
                raise
            raise ValueError(f"embedding_net: failed on {cname}[:2] of shape "
                             f"{tuple(probe.shape)}: {type(exc).__name__}: {exc}") from exc  # fmt: skip
    if not given:
        if out.dim() != 2:
            raise ValueError(f"{cname}: expected a batch of vectors (batch, F) without an "
                             f"embedding_net, got shape {tuple(condition.shape)}; pass an "
                             f"embedding_net (sbi's CNNEmbedding, FCEmbedding, ...) that maps "
                             f"it to vectors")  # fmt: skip
        return embed, out.shape[1]
    if not isinstance(out, Tensor):
        raise TypeError(f"embedding_net: expected it to return a torch.Tensor of features "
                        f"(batch, F), got {type(out).__name__}")  # fmt: skip
    if out.dim() != 2 or out.shape[0] != probe.shape[0]:
        raise ValueError(f"embedding_net: expected features (batch, F), here "
                         f"({probe.shape[0]}, F), got shape {tuple(out.shape)}")  # fmt: skip
    if out.shape[1] == 0:
        raise ValueError("embedding_net: expected at least one output feature (the flow's "
                         "context), got 0")  # fmt: skip
    if out.dtype != condition.dtype:
        raise TypeError(f"embedding_net: expected features of {cname}'s dtype "
                        f"({_dtype(condition)}), got {_dtype(out)}")  # fmt: skip
    return embed, out.shape[1]
