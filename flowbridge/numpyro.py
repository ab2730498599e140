"""flowbridge flows in NumPyro: a ``Transform`` and an autoguide.

NumPyro ships two flows (inverse autoregressive and block neural autoregressive); this
module gives it every flowbridge layer, from the same generated JAX code as
:func:`flowbridge.to_jax`, with the conformance figures of the ``jax`` backend.

Parameters are registered one ``numpyro.param`` site per neutral name
(``{prefix}_flow.layers.0.conditioner.0.kernel``, ...): the names a user already knows
from :func:`flowbridge.param_shapes`, the keys of ``svi.get_params(state)`` that
``fb.to_pyro``/``fb.to_tfp`` take back after stripping the prefix
(:func:`params_from_svi`). Importing this module imports NumPyro; ``import flowbridge``
does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform
from numpyro.infer.autoguide import AutoContinuous
from numpyro.infer.initialization import init_to_uniform

from .build import _spec, to_jax
from .layers import plan_flow
from .params import init_params
from .spec import FlowSpec, realnvp


class FlowTransform(Transform):
    """A flowbridge JAX flow as a NumPyro ``Transform`` (a pytree, as NumPyro's own).

    ``__call__`` is the flow's forward, ``_inverse`` its inverse, and
    ``log_abs_det_jacobian(x, y)`` the forward log-det: from the forward's intermediates
    when NumPyro hands them over (``call_with_intermediates``, as a guide's sample does),
    else as ``-log|det|`` of the inverse at ``y`` (what ``TransformedDistribution.log_prob``
    has just computed: under ``jax.jit`` the two are one computation). Shapes:
    ``(*batch, *event)`` in, log-dets ``(*batch,)``; ``domain``/``codomain`` are the reals
    of the flow's input and output events. A conditional flow's transform is made at a
    context with :meth:`condition`; the context broadcasts against the batch as in every
    backend.

    A flow with a batch norm runs it in evaluation mode (its running averages) unless
    the transform is given ``mutable``, the dict of a ``numpyro.primitives.mutable`` site holding the
    running averages by neutral name (:func:`state_names`): then its forward is the
    training mode (the batch's statistics, the data-to-latent direction, as in every
    backend) and writes the new averages into that dict, which SVI carries from step to
    step as mutable state; its log-det is the training mode's too.

    Args:
        flow: a flow from :func:`flowbridge.to_jax` (or a generated JAX module).
        context: for a conditional flow, the context ``(*batch, context_dim)``; ``None``
            for an unconditional one (or a conditional one not conditioned yet, which
            refuses to run).
        mutable: ``None`` (evaluation mode), or a ``numpyro.primitives.mutable`` site's dict of the
            flow's running averages (training mode).

    Raises:
        TypeError: a conditional flow called before :meth:`condition`.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpyro.distributions as dist
        >>> import flowbridge as fb
        >>> spec = fb.realnvp(3, num_couplings=2, hidden=(8,))
        >>> t = fb.to_numpyro(spec, fb.init_params(spec, seed=0, init="random"))
        >>> q = dist.TransformedDistribution(dist.Normal(jnp.zeros(3), 1.0).to_event(1), [t])
        >>> q.log_prob(jnp.ones((5, 3))).shape
        (5,)
    """

    def __init__(self, flow: Any, context: Any = None, mutable: dict | None = None):
        self.flow = flow
        self.context = context
        self.mutable = mutable

    @property
    def domain(self):
        return constraints.independent(constraints.real, len(self.flow.event_shape))

    @property
    def codomain(self):
        return constraints.independent(constraints.real, len(self.flow.output_shape))

    def _given(self) -> tuple:
        if getattr(self.flow, "context_dim", 0) and self.context is None:
            raise TypeError(f"{type(self.flow).__name__}: this transform needs a context: "
                            f"call .condition(c) first, with c of shape (*batch, "
                            f"{self.flow.context_dim})")  # fmt: skip
        return () if self.context is None else (self.context,)

    def _training(self, x):
        """The training-mode forward; its new running averages go into ``mutable``."""
        y, log_det, state = self.flow.forward_training(x, *self._given())
        self.mutable.update(state)
        return y, log_det

    def __call__(self, x):
        if self.mutable is not None:
            return self._training(x)[0]
        return self.flow.forward(x, *self._given())

    def _inverse(self, y):
        return self.flow.inverse(y, *self._given())

    def call_with_intermediates(self, x):
        """The forward and its log-det, which ``log_abs_det_jacobian`` then reuses."""
        if self.mutable is not None:
            return self._training(x)
        return self.flow.forward_with_log_det(x, *self._given())

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        """``log|det dy/dx|`` of shape ``(*batch,)``."""
        if intermediates is not None:
            return intermediates
        if self.mutable is not None:  # the batch's statistics: from x, as the forward
            return self.flow.forward_training(x, *self._given())[1]
        return -self.flow.inverse_log_det_jacobian(y, *self._given())

    def forward_shape(self, shape):
        batch = tuple(shape)[: len(shape) - len(self.flow.event_shape)]
        return batch + tuple(self.flow.output_shape)

    def inverse_shape(self, shape):
        batch = tuple(shape)[: len(shape) - len(self.flow.output_shape)]
        return batch + tuple(self.flow.event_shape)

    def condition(self, context: Any) -> FlowTransform:
        """The transform at ``context`` (``(*batch, context_dim)``), as Pyro's conditional
        modules' ``condition``; NumPyro has no conditional-transform API.

        Args:
            context: the context, broadcasting against the inputs' batch shape.

        Returns:
            A new :class:`FlowTransform` over the same flow.

        Raises:
            TypeError: the flow is not conditional.

        Example:
            >>> import jax.numpy as jnp
            >>> import flowbridge as fb
            >>> spec = fb.realnvp(2, num_couplings=2, hidden=(8,), context_dim=3)
            >>> t = fb.to_numpyro(spec).condition(jnp.ones(3))
            >>> t(jnp.zeros((4, 2))).shape
            (4, 2)
        """
        if not getattr(self.flow, "context_dim", 0):
            raise TypeError(f"{type(self.flow).__name__}: condition(c) is for a conditional "
                            "flow; this one reads no context")  # fmt: skip
        return FlowTransform(self.flow, jnp.asarray(context, self.flow.dtype), self.mutable)

    def tree_flatten(self):
        return (self.flow, self.context), (("flow", "context"), {"mutable": self.mutable})


def to_numpyro(
    spec: FlowSpec | dict, params: Any = None, *, dtype: str = "float32", mutable: dict | None = None
) -> FlowTransform:
    """The flow as a NumPyro ``Transform`` (a :class:`flowbridge.numpyro.FlowTransform`).

    ``params`` may be NumPy or JAX arrays, ``numpyro.param`` values inside a guide
    included (traced under SVI's ``jit``: their names and shapes are checked, their
    values flow through), so SVI trains them. The module cache is consulted before any
    code generation: inside a jitted guide the transform is built at trace time only,
    and the compiled step runs the flow's operations alone.

    Args:
        spec: the :class:`flowbridge.FlowSpec`, or its dict.
        params: neutral parameters; ``None`` keeps the module's identity-at-init weights.
        dtype: ``"float32"`` (default) or ``"float64"`` (JAX's 64-bit mode on).
        mutable: for a flow with a batch norm trained in NumPyro, the dict of a
            ``numpyro.primitives.mutable`` site holding its running averages (:func:`state_names`);
            the transform then runs the training mode and writes the new averages
            there. ``None`` (default): evaluation mode.

    Returns:
        A :class:`flowbridge.numpyro.FlowTransform`; ``.condition(c)`` for a conditional
        spec.

    Raises:
        SpecError: ``spec`` is not a valid spec.
        ParamError: ``params`` do not fit the spec.
        ValueError: ``dtype`` is not float32 or float64, or float64 with JAX's 64-bit
            mode off.
        BackendUnavailable: JAX or NumPyro is not installed
            (``pip install flowbridge[jax]``).

    Example:
        >>> import jax.numpy as jnp
        >>> import flowbridge as fb
        >>> spec = fb.realnvp(2, num_couplings=2, hidden=(8,))
        >>> t = fb.to_numpyro(spec, fb.init_params(spec, seed=0))
        >>> t(jnp.ones((3, 2)))  # the identity at init
        Array([[1., 1.],
               [1., 1.],
               [1., 1.]], dtype=float32)
    """
    return FlowTransform(to_jax(spec, params, dtype=dtype), mutable=mutable)


def state_names(spec: FlowSpec | dict) -> list[str]:
    """The neutral names of a flow's state (a batch norm's running averages): what a
    ``numpyro.primitives.mutable`` site holds, not ``numpyro.param`` sites.

    Args:
        spec: the :class:`flowbridge.FlowSpec`, or its dict.

    Returns:
        ``list[str]``: the names, in the neutral order (empty without a batch norm).

    Raises:
        SpecError: ``spec`` is not a valid spec.

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.numpyro import state_names
        >>> spec = fb.FlowSpec(event_shape=(2,), layers=[fb.BatchNorm(), fb.AffineCoupling()])
        >>> state_names(spec)
        ['layers.0.running_mean', 'layers.0.running_log_var']
    """
    spec = _spec(spec)
    return [f"layers.{i}.{f.name}" for i, plan in enumerate(plan_flow(spec))
            for f in plan.fields if f.kind == "state"]  # fmt: skip


def params_from_svi(params: dict, prefix: str = "auto") -> dict[str, np.ndarray]:
    """The neutral parameters of an :class:`AutoNormalizingFlow` guide's flow, from SVI's
    parameters (``svi.get_params(state)``), as NumPy arrays in their own dtype: ready for
    :func:`flowbridge.to_pyro`, :func:`flowbridge.to_tfp` or :func:`flowbridge.save_params`.

    Args:
        params: SVI's parameter dict (site name -> array).
        prefix: the guide's ``prefix`` (default ``"auto"``).

    Returns:
        ``dict[str, numpy.ndarray]``: neutral name -> array.

    Raises:
        KeyError: no site of the guide's flow is in ``params``.

    Example:
        >>> import numpy as np
        >>> from flowbridge.numpyro import params_from_svi
        >>> params_from_svi({"auto_flow.layers.0.log_scale": np.zeros(2), "loc": 1.0})
        {'layers.0.log_scale': array([0., 0.])}
    """
    head = f"{prefix}_flow."
    out = {k[len(head) :]: np.asarray(v) for k, v in params.items() if k.startswith(head)}
    if not out:
        raise KeyError(f"params: no site starts with {head!r} (the guide's prefix is "
                       f"{prefix!r}?)")  # fmt: skip
    return out


class AutoNormalizingFlow(AutoContinuous):
    """An autoguide whose posterior is a flowbridge flow on a standard normal, in the
    style of Pyro's ``AutoNormalizingFlow``, built on NumPyro's ``AutoContinuous`` (so
    ``sample_posterior``, ``Predictive``, ``get_transform`` and :meth:`quantiles` work).

    The flow acts on the model's unconstrained latent vector (its size ``latent_dim``);
    its weights are one ``numpyro.param`` site per neutral name,
    ``{prefix}_flow.{name}``, started by :func:`flowbridge.init_params` (the identity,
    so the guide starts at a standard normal, as NumPyro's ``AutoIAFNormal`` does).

    Args:
        model: the NumPyro model.
        spec: the flow: a :class:`flowbridge.FlowSpec` of event shape ``(latent_dim,)``,
            or a function of ``latent_dim`` that returns one; default
            ``flowbridge.realnvp(latent_dim)``.
        prefix: the prefix of the guide's sites (default ``"auto"``).
        init_loc_fn: NumPyro's per-site initialization (used to find the latent size).
        seed: the seed of :func:`flowbridge.init_params` for the hidden layers' weights.

    Raises:
        ValueError: the latent vector has one entry (a coupling needs two), the spec's
            event shape is not ``(latent_dim,)``, or the spec has a batch norm.

    Example:
        >>> import jax
        >>> import numpyro
        >>> import numpyro.distributions as dist
        >>> from numpyro.infer import SVI, Trace_ELBO
        >>> import flowbridge as fb
        >>> from flowbridge.numpyro import AutoNormalizingFlow
        >>> def model():
        ...     numpyro.sample("z", dist.Normal(jax.numpy.zeros(2), 1.0).to_event(1))
        >>> guide = AutoNormalizingFlow(model, lambda d: fb.realnvp(d, hidden=(8,)))
        >>> svi = SVI(model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
        >>> result = svi.run(jax.random.PRNGKey(0), 10, progress_bar=False)
        >>> sorted(result.params)[0]
        'auto_flow.layers.0.conditioner.0.bias'
    """

    def __init__(
        self,
        model: Callable,
        spec: FlowSpec | Callable[[int], FlowSpec] | None = None,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        seed: int = 0,
    ):
        self._spec_of = spec if spec is not None else (lambda dim: realnvp(dim))
        self._seed = seed
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def flow_spec(self) -> FlowSpec:
        """The guide's flow spec at the model's latent size.

        Returns:
            The :class:`flowbridge.FlowSpec`.

        Raises:
            ValueError: the latent size is 1, the spec's event shape is not
                ``(latent_dim,)``, or the spec has a batch norm.

        Example:
            >>> import jax, numpyro, numpyro.distributions as dist
            >>> from flowbridge.numpyro import AutoNormalizingFlow
            >>> def model():
            ...     numpyro.sample("a", dist.Normal(0.0, 1.0))
            ...     numpyro.sample("b", dist.Normal(jax.numpy.zeros(2), 1.0).to_event(1))
            >>> guide = AutoNormalizingFlow(model)
            >>> with numpyro.handlers.seed(rng_seed=0):
            ...     _ = guide()  # the first call finds the latent size
            >>> guide.flow_spec().event_shape
            (3,)
        """
        if self.latent_dim < 2:
            raise ValueError("latent_dim = 1: a coupling flow needs two latent entries; use "
                             "AutoNormal or AutoDiagonalNormal")  # fmt: skip
        spec = self._spec_of if isinstance(self._spec_of, FlowSpec) else self._spec_of(self.latent_dim)
        spec = _spec(spec)
        if tuple(spec.event_shape) != (self.latent_dim,):
            raise ValueError(f"spec: expected event shape ({self.latent_dim},) (the model's "
                             f"latent size), got {tuple(spec.event_shape)}")  # fmt: skip
        if state_names(spec):
            raise ValueError("spec: a batch norm in a guide's flow would normalise by the "
                             "statistics of the guide's own draws; use actnorm")  # fmt: skip
        return spec

    def _get_posterior(self):
        spec = self.flow_spec()
        start = init_params(spec, seed=self._seed)
        params = {name: numpyro.param(f"{self.prefix}_flow.{name}", jnp.asarray(value, jnp.float32))
                  for name, value in start.items()}  # fmt: skip
        return dist.TransformedDistribution(self.get_base_dist(), [to_numpyro(spec, params)])

    def get_base_dist(self):
        return dist.Normal(jnp.zeros(self.latent_dim), 1.0).to_event(1)

    def quantiles(self, params: dict, quantiles: Any, num_samples: int = 4000,
                  rng_key: Any = None) -> dict:  # fmt: skip
        """Posterior quantiles of each latent site, estimated from ``num_samples`` draws
        (a flow has no closed-form quantiles).

        Args:
            params: SVI's parameters (``svi.get_params(state)``).
            quantiles: the quantiles wanted, in [0, 1].
            num_samples: draws the estimate uses (default 4000).
            rng_key: a JAX PRNG key (default ``jax.random.PRNGKey(0)``).

        Returns:
            ``dict``: site name -> array ``(len(quantiles), *site_shape)``.

        Raises:
            ValueError: a quantile lies outside [0, 1].

        Example:
            >>> import jax, numpyro, numpyro.distributions as dist
            >>> from numpyro.infer import SVI, Trace_ELBO
            >>> from flowbridge.numpyro import AutoNormalizingFlow
            >>> def model():
            ...     numpyro.sample("z", dist.Normal(jax.numpy.zeros(2), 1.0).to_event(1))
            >>> guide = AutoNormalizingFlow(model)
            >>> svi = SVI(model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
            >>> params = svi.run(jax.random.PRNGKey(0), 5, progress_bar=False).params
            >>> guide.quantiles(params, [0.25, 0.75])["z"].shape
            (2, 2)
        """
        q = jnp.asarray(quantiles)
        if bool(jnp.any((q < 0) | (q > 1))):
            raise ValueError(f"quantiles: expected values in [0, 1], got {quantiles!r}")
        key = jax.random.PRNGKey(0) if rng_key is None else rng_key
        draws = self.sample_posterior(key, params, sample_shape=(num_samples,))
        return {name: jnp.quantile(value, q, axis=0) for name, value in draws.items()}
