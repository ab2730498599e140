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

Dtypes follow JAX's mode, as NumPyro's own arrays do: with ``dtype=None`` (the default)
a transform or a guide's flow computes in float64 where ``jax_enable_x64`` is on and in
float32 where it is off, decided when the transform is built (a guide builds its flow at
every call, so a guide trained in one mode samples and predicts in the other, as
NumPyro's ``AutoIAFNormal`` does); ``dtype="float32"`` or ``"float64"`` fixes it (float64
needs the mode on). A transform casts a float32 or float64 JAX input to its flow's dtype,
since NumPyro draws its base samples in JAX's default dtype; the flow itself refuses
every other dtype by name.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, MutableMapping
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

from .backends.jax.prelude import _checked_context, _dtype
from .build import _spec, to_jax
from .layers import plan_flow
from .params import init_params
from .spec import FlowSpec, realnvp


def _dtype_name(dtype: Any) -> str:
    """The flow's dtype by name: ``dtype`` (``"float32"``, ``"float64"`` or a NumPy/JAX
    dtype of those), or JAX's mode where it is ``None``; else a ValueError naming it."""
    if dtype is None:
        return "float64" if jax.config.jax_enable_x64 else "float32"
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        name = None
    if isinstance(dtype, bool) or name not in ("float32", "float64"):
        raise ValueError(f"dtype: expected 'float32', 'float64' or None (JAX's mode: float64 "
                         f"where jax_enable_x64 is on, else float32), got {dtype!r}")  # fmt: skip
    return name


def _check_flow(flow: Any) -> None:
    """Refuse anything but a flowbridge JAX flow (a pytree with the flow's methods)."""
    methods = ("forward_with_log_det", "inverse_with_log_det", "forward_training",
               "inverse_log_det_jacobian")  # fmt: skip
    if (
        all(callable(getattr(flow, m, None)) for m in methods)
        and all(hasattr(flow, a) for a in ("event_shape", "output_shape", "dtype"))
        and not jax.tree_util.all_leaves([flow])  # a registered pytree of its weights
    ):
        return
    raise TypeError("flow: expected a flowbridge JAX flow (from flowbridge.to_jax or a "
                    "generated JAX module's build_flow; flowbridge.to_numpyro builds the "
                    f"transform from a spec), got {type(flow).__module__}."
                    f"{type(flow).__qualname__}")  # fmt: skip


def _check_mutable(mutable: Any, names: list[str] | None = None) -> None:
    """Refuse a ``mutable`` that is not ``None`` or a dict (whose keys are among ``names``,
    the flow's state names, where they are given)."""
    if mutable is None:
        return
    if names is None:
        expected = ""
    elif names:
        expected = f" (its keys among {names}: flowbridge.numpyro.state_names)"
    else:
        expected = " (this flow has none: no batch norm, so no state names)"
    if not isinstance(mutable, MutableMapping):
        raise TypeError("mutable: expected None or the dict of a numpyro.primitives.mutable "
                        f"site holding the flow's running averages{expected}, got "
                        f"{type(mutable).__name__}")  # fmt: skip
    foreign = [] if names is None else sorted(str(k) for k in mutable if k not in names)
    if foreign:
        raise ValueError(f"mutable: unexpected key {foreign[0]!r}: expected the flow's state "
                         f"names{expected}")  # fmt: skip


def _in_flow_dtype(flow: Any, value: Any) -> Any:
    """A float32 or float64 JAX array in the flow's dtype (NumPyro draws in JAX's default
    dtype, which the flow's need not be); any other value as it is, for the flow's own
    checks, which name it."""
    if (isinstance(value, jax.Array) and np.dtype(value.dtype).name in ("float32", "float64")
            and value.dtype != flow.dtype):  # fmt: skip
        return value.astype(flow.dtype)
    return value


class FlowTransform(Transform):
    """A flowbridge JAX flow as a NumPyro ``Transform`` (a pytree, as NumPyro's own).

    ``__call__`` is the flow's forward, ``_inverse`` its inverse, and
    ``log_abs_det_jacobian(x, y)`` the forward log-det. The flow is not run twice for
    it: from the forward's intermediates when NumPyro hands them over
    (``call_with_intermediates``, as a guide's sample does), else from the last
    direction this transform ran, when ``x`` and ``y`` are that call's very input and
    output (``TransformedDistribution.log_prob`` inverts ``y`` and then asks for the
    log-det at the pair; NeuTra calls ``t(z)`` and then ``log_abs_det_jacobian(z, t(z))``),
    else by running the inverse at ``y``. That last result is an identity cache of one
    entry, as Pyro's and TFP's caches: it holds its input and output by weak reference
    and is dropped when either is (and when the transform is pickled), so it never keeps
    a tracer past its trace, and the log-det it gives is the very value (and gradient)
    the direction computed. Shapes:
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

    Inputs (``x``, ``y``) that are float32 or float64 JAX arrays are cast to the flow's
    dtype, as NumPyro's own transforms follow JAX's promotion: under ``jax_enable_x64`` a
    float32 transform takes NumPyro's float64 base draws. Any other input goes to the
    flow's own check, which refuses bfloat16, complex, boolean or ragged inputs by name.

    Args:
        flow: a flow from :func:`flowbridge.to_jax` (or a generated JAX module's
            ``build_flow``).
        context: for a conditional flow, the context ``(*batch, context_dim)``; ``None``
            for an unconditional one (or a conditional one not conditioned yet, which
            refuses to run).
        mutable: ``None`` (evaluation mode), or a ``numpyro.primitives.mutable`` site's dict of the
            flow's running averages (training mode).

    Raises:
        TypeError: ``flow`` is not a flowbridge JAX flow; ``mutable`` is not ``None`` or a
            dict; a ``context`` for a flow that reads none, or one that is not real
            numbers; a conditional flow called before :meth:`condition`.
        ValueError: ``context`` is not of shape ``(*batch, context_dim)``.

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
        _check_flow(flow)
        _check_mutable(mutable)
        if context is not None:
            if not getattr(flow, "context_dim", 0):
                raise TypeError(f"context: {type(flow).__name__} reads no context; give "
                                "None")  # fmt: skip
            context = _checked_context(flow, _in_flow_dtype(flow, context))
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
        x = _in_flow_dtype(self.flow, x)
        y, log_det, state = self.flow.forward_training(x, *self._given())
        self.mutable.update(state)
        return y, log_det

    def __call__(self, x):
        if self.mutable is not None:
            return self._training(x)[0]
        y, log_det = self.flow.forward_with_log_det(_in_flow_dtype(self.flow, x), *self._given())
        self._keep(x, y, log_det)
        return y

    def _inverse(self, y):
        x, log_det = self.flow.inverse_with_log_det(_in_flow_dtype(self.flow, y), *self._given())
        self._keep(x, y, -log_det)
        return x

    def _keep(self, x: Any, y: Any, log_det: Any) -> None:
        """Keep the forward log-det of the pair ``(x, y)`` for :meth:`log_abs_det_jacobian`:
        one entry, by identity, with weak references to ``x`` and ``y``; it is dropped as
        soon as either is (a traced pair at the end of its trace)."""
        me, entry = weakref.ref(self), []

        def forget(_):  # this entry's x or y is gone: drop it (not a later one)
            transform = me()
            if transform is not None and getattr(transform, "_last", None) is entry:
                transform._last = None

        try:
            entry += [weakref.ref(x, forget), weakref.ref(y, forget), log_det]
        except TypeError:  # an input that takes no weak reference (a list): nothing kept
            entry = None
        self._last = entry

    def __getstate__(self):
        """Pickled without the kept pair (weak references do not pickle)."""
        state = super().__getstate__()
        state.pop("_last", None)
        return state

    def _kept(self, x: Any, y: Any) -> Any:
        """The kept forward log-det of the pair ``(x, y)``, or ``None``."""
        last = getattr(self, "_last", None)  # a transform rebuilt from its pytree has none
        if last is not None and last[0]() is x and last[1]() is y:
            return last[2]
        return None

    def call_with_intermediates(self, x):
        """The forward and its log-det, which ``log_abs_det_jacobian`` then reuses."""
        if self.mutable is not None:
            return self._training(x)
        return self.flow.forward_with_log_det(_in_flow_dtype(self.flow, x), *self._given())

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        """``log|det dy/dx|`` of shape ``(*batch,)``."""
        if intermediates is not None:
            return intermediates
        kept = self._kept(x, y)
        if kept is not None:
            return kept
        if self.mutable is not None:  # the batch's statistics: from x, as the forward
            x = _in_flow_dtype(self.flow, x)
            return self.flow.forward_training(x, *self._given())[1]
        return -self.flow.inverse_log_det_jacobian(_in_flow_dtype(self.flow, y), *self._given())

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
            context: the context, broadcasting against the inputs' batch shape: real
                numbers (a float32 or float64 JAX array is cast to the flow's dtype),
                checked before anything is converted.

        Returns:
            A new :class:`FlowTransform` over the same flow.

        Raises:
            TypeError: the flow is not conditional; ``context`` is ``None``, or not real
                numbers (strings, booleans, complex numbers, bfloat16).
            ValueError: ``context`` is not of shape ``(*batch, context_dim)``, or a
                ragged nested list.

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
        context = _checked_context(self.flow, _in_flow_dtype(self.flow, context))
        return FlowTransform(self.flow, context, self.mutable)

    def tree_flatten(self):
        return (self.flow, self.context), (("flow", "context"), {"mutable": self.mutable})


def to_numpyro(
    spec: FlowSpec | dict,
    params: Any = None,
    *,
    dtype: str | None = None,
    mutable: dict | None = None,
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
        dtype: ``None`` (default): JAX's mode when the transform is built, float64 where
            ``jax_enable_x64`` is on, else float32; or ``"float32"`` or ``"float64"``
            (JAX's 64-bit mode on).
        mutable: for a flow with a batch norm trained in NumPyro, the dict of a
            ``numpyro.primitives.mutable`` site holding its running averages (its keys
            among :func:`state_names`); the transform then runs the training mode and
            writes the new averages there. ``None`` (default): evaluation mode.

    Returns:
        A :class:`flowbridge.numpyro.FlowTransform`; ``.condition(c)`` for a conditional
        spec.

    Raises:
        SpecError: ``spec`` is not a valid spec.
        ParamError: ``params`` do not fit the spec.
        ValueError: ``dtype`` is not float32, float64 or ``None``, or float64 with JAX's
            64-bit mode off; ``mutable`` has a key that is not one of the flow's state
            names.
        TypeError: ``mutable`` is not ``None`` or a dict.
        BackendUnavailable: JAX or NumPyro is not installed
            (``pip install flowbridge[jax]``).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import flowbridge as fb
        >>> spec = fb.realnvp(2, num_couplings=2, hidden=(8,))
        >>> t = fb.to_numpyro(spec, fb.init_params(spec, seed=0))
        >>> t(jnp.ones((3, 2)))  # the identity at init; float32: JAX's 64-bit mode is off
        Array([[1., 1.],
               [1., 1.],
               [1., 1.]], dtype=float32)
        >>> with jax.enable_x64(True):
        ...     print(fb.to_numpyro(spec).flow.dtype)  # float64 in JAX's 64-bit mode
        float64
    """
    spec = _spec(spec)
    dtype = _dtype_name(dtype)
    _check_mutable(mutable, state_names(spec))
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
        ``dict[str, numpy.ndarray]``: neutral name -> array, a writable copy (JAX's
        arrays are read-only seen from NumPy; torch warns of those).

    Raises:
        TypeError: ``params`` is not a mapping, or ``prefix`` not a string.
        KeyError: no site of the guide's flow is in ``params``.

    Example:
        >>> import numpy as np
        >>> from flowbridge.numpyro import params_from_svi
        >>> params_from_svi({"auto_flow.layers.0.log_scale": np.zeros(2), "loc": 1.0})
        {'layers.0.log_scale': array([0., 0.])}
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected SVI's parameter dict (svi.get_params(state)), got "
                        f"{type(params).__name__}")  # fmt: skip
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: expected the guide's prefix, a string, got {prefix!r}")
    head = f"{prefix}_flow."
    out = {k[len(head) :]: np.array(v) for k, v in params.items()
           if isinstance(k, str) and k.startswith(head)}  # fmt: skip
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

    Its dtype follows JAX's mode unless ``dtype`` fixes it: with ``dtype=None`` the flow
    is built at every call of the guide in float64 where ``jax_enable_x64`` is on and in
    float32 where it is off (the weights start in that dtype), so a model written with
    the mode on trains in float64, and a guide trained in one mode samples, predicts and
    gives quantiles in the other, as ``AutoIAFNormal`` does.

    Args:
        model: the NumPyro model.
        spec: the flow: a :class:`flowbridge.FlowSpec` of event shape ``(latent_dim,)``,
            its dict, or a function of ``latent_dim`` that returns either; default
            ``flowbridge.realnvp(latent_dim)``. It must be unconditional: a guide has no
            context to give it.
        prefix: the prefix of the guide's sites (default ``"auto"``).
        init_loc_fn: NumPyro's per-site initialization (used to find the latent size).
        seed: the seed of :func:`flowbridge.init_params` for the hidden layers' weights.
        dtype: ``None`` (default: JAX's mode at each call, see above), ``"float32"`` or
            ``"float64"`` (which needs JAX's 64-bit mode on when the guide runs).

    Raises:
        TypeError: ``model`` is not callable; ``spec`` is not a spec, its dict, a
            function or ``None``; ``prefix`` is not a string; ``seed`` is not an integer.
        ValueError: ``dtype`` is not float32, float64 or ``None``; the spec is
            conditional (it reads a context); at the first call: the latent vector has
            one entry (a coupling needs two), the spec's event shape is not
            ``(latent_dim,)``, or the spec has a batch norm.
        SpecError: ``spec`` is a dict that is not a valid spec.

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
        >>> sorted(result.params)[0], result.params[sorted(result.params)[0]].dtype.name
        ('auto_flow.layers.0.conditioner.0.bias', 'float32')
        >>> fixed = AutoNormalizingFlow(model, fb.realnvp(2, hidden=(8,)).to_dict())  # a dict
    """

    def __init__(
        self,
        model: Callable,
        spec: FlowSpec | dict | Callable[[int], FlowSpec | dict] | None = None,
        *,
        prefix: str = "auto",
        init_loc_fn: Callable = init_to_uniform,
        seed: int = 0,
        dtype: str | None = None,
    ):
        if not callable(model):
            raise TypeError(f"model: expected a NumPyro model (a callable), got "
                            f"{type(model).__name__}")  # fmt: skip
        if isinstance(spec, (FlowSpec, dict)):
            spec = _unconditional(_spec(spec))
        elif spec is not None and not callable(spec):
            raise TypeError("spec: expected a FlowSpec, its dict, a function of latent_dim "
                            "that returns one, or None (flowbridge.realnvp(latent_dim)), got "
                            f"{type(spec).__name__}")  # fmt: skip
        if not isinstance(prefix, str):
            raise TypeError(f"prefix: expected a string, got {prefix!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected an integer, got {seed!r}")
        self._spec_of = spec if spec is not None else (lambda dim: realnvp(dim))
        self._seed = seed
        self._dtype = None if dtype is None else _dtype_name(dtype)
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    @property
    def dtype(self) -> str:
        """The dtype the guide's flow is built in now, the ``dtype`` it was given or else
        JAX's mode (float64 where ``jax_enable_x64`` is on, else float32).

        Returns:
            ``str``: ``"float32"`` or ``"float64"``.

        Example:
            >>> import jax
            >>> from flowbridge.numpyro import AutoNormalizingFlow
            >>> guide = AutoNormalizingFlow(lambda: None)
            >>> guide.dtype
            'float32'
            >>> with jax.enable_x64(True):
            ...     guide.dtype
            'float64'
            >>> AutoNormalizingFlow(lambda: None, dtype="float32").dtype
            'float32'
        """
        return self._dtype or _dtype_name(None)

    def flow_spec(self) -> FlowSpec:
        """The guide's flow spec at the model's latent size.

        Returns:
            The :class:`flowbridge.FlowSpec`.

        Raises:
            ValueError: the spec's event shape is not ``(latent_dim,)``, the spec is
                conditional, or the spec has a batch norm.
            SpecError: the spec function returned something that is not a valid spec.

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
        spec = self._spec_of
        spec = _unconditional(_spec(spec if isinstance(spec, FlowSpec) else spec(self.latent_dim)))
        if tuple(spec.event_shape) != (self.latent_dim,):
            raise ValueError(f"spec: expected event shape ({self.latent_dim},) (the model's "
                             f"latent size), got {tuple(spec.event_shape)}")  # fmt: skip
        if state_names(spec):
            raise ValueError("spec: a batch norm in a guide's flow would normalise by the "
                             "statistics of the guide's own draws; use actnorm")  # fmt: skip
        return spec

    def _usable_dtype(self) -> str:
        """The guide's dtype now; float64 with JAX's 64-bit mode off is refused, naming
        the switch, before any array is made (JAX would truncate it to float32)."""
        return _dtype(self.dtype).name

    def _get_posterior(self):
        spec, dtype = self.flow_spec(), self._usable_dtype()
        start = init_params(spec, seed=self._seed)
        params = {name: numpyro.param(f"{self.prefix}_flow.{name}", jnp.asarray(value, dtype))
                  for name, value in start.items()}  # fmt: skip
        return dist.TransformedDistribution(self.get_base_dist(),
                                            [to_numpyro(spec, params, dtype=dtype)])  # fmt: skip

    def get_base_dist(self):
        dtype = self._usable_dtype()
        return dist.Normal(jnp.zeros(self.latent_dim, dtype), jnp.ones((), dtype)).to_event(1)

    def quantiles(self, params: dict, quantiles: Any, num_samples: int = 4000,
                  rng_key: Any = None) -> dict:  # fmt: skip
        """Posterior quantiles of each latent site, estimated from ``num_samples`` draws
        (a flow has no closed-form quantiles). It runs under ``jax.jit`` too, as
        ``AutoDiagonalNormal``'s does: the quantiles' values are checked where they are
        known (outside ``jit``, or given as constants), their dtype and shape always.

        Args:
            params: SVI's parameters (``svi.get_params(state)``).
            quantiles: the quantiles wanted, in [0, 1]: a number or a list (1-D).
            num_samples: draws the estimate uses (default 4000), a positive integer.
            rng_key: a JAX PRNG key (default ``jax.random.PRNGKey(0)``).

        Returns:
            ``dict``: site name -> array ``(len(quantiles), *site_shape)`` (``site_shape``
            alone for one number).

        Raises:
            ValueError: a quantile lies outside [0, 1] or is NaN; ``quantiles`` has more
                than one dimension, or is ragged.
            TypeError: ``quantiles`` is not real numbers; ``num_samples`` is not an
                integer.

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
            >>> jitted = jax.jit(lambda p, q: guide.quantiles(p, q)["z"])
            >>> jitted(params, jax.numpy.array([0.5])).shape
            (1, 2)
        """
        if isinstance(quantiles, jax.Array):
            q = quantiles
        else:
            try:
                q = np.asarray(quantiles)
            except (TypeError, ValueError):  # NumPy's "inhomogeneous shape"
                raise ValueError(f"quantiles: expected a number or a list of numbers in [0, 1], "
                                 f"got a ragged {type(quantiles).__name__}") from None  # fmt: skip
        kind = np.dtype(q.dtype)
        if not (jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)):
            raise TypeError(f"quantiles: expected numbers in [0, 1], got dtype {kind}")
        if q.ndim > 1:
            raise ValueError(f"quantiles: expected a number or a list of numbers (1-D), got "
                             f"shape {tuple(q.shape)}")  # fmt: skip
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
            raise TypeError(f"num_samples: expected a positive integer, got {num_samples!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples: expected a positive integer, got {num_samples}")
        if not isinstance(q, jax.core.Tracer):  # known: checked (NaN fails too)
            host = np.asarray(q, np.float64)
            if not np.all((host >= 0) & (host <= 1)):
                raise ValueError(f"quantiles: expected values in [0, 1], got {quantiles!r}")
        key = jax.random.PRNGKey(0) if rng_key is None else rng_key
        draws = self.sample_posterior(key, params, sample_shape=(num_samples,))
        return {name: jnp.quantile(value, jnp.asarray(q, value.dtype), axis=0)
                for name, value in draws.items()}  # fmt: skip


def _unconditional(spec: FlowSpec) -> FlowSpec:
    """``spec`` if it reads no context; else a ValueError: a guide has none to give."""
    if spec.context_dim:
        raise ValueError(
            f"spec: a guide's flow must be unconditional (a guide has no "
            f"context to give it), got a spec with context_dim={spec.context_dim}"
        )
    return spec
