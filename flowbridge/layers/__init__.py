"""Every layer type's math, written once over the neutral IR (:mod:`flowbridge.ir`).

Each definition turns one spec layer and its input event shape into a :class:`Plan`:
the generated class's paper name and docstring, its constructor's literal arguments,
each parameter's shape and initialisation (:class:`Param`), the output event shape, and
``forward`` and ``inverse`` as functions of a parameter view ``p`` whose attributes are
symbolic (``p.dense_kernel(0)`` stands for ``self.kernels[0]`` in every backend). Both return
``(output, log_det)``; ``inverse`` returns the log-det of the inverse map, so
``inverse log-det = -forward log-det`` at matching points. Shapes: ``x`` is
``(*batch, *event_shape)``, log-dets ``(*batch,)``; :func:`plan_flow` hands each layer
the previous layer's ``output_shape``.

A coupling is three parts (as distrax's ``SplitCoupling``, zuko's
``GeneralCouplingTransform``): a *partition* of the event (``x_a`` passed through,
``x_b`` transformed), a *conditioner* reading ``x_a``, and an *elementwise map* of
``x_b`` given the conditioner's output. NICE and RealNVP differ in the map alone
(:class:`Shift`, :class:`Affine`); a new mask, conditioner or map is one more part.

The definitions live by family: :mod:`~flowbridge.layers.coupling` (couplings and the
elementwise layers of every entry, their maps from :mod:`~flowbridge.layers.maps` and
their parts from :mod:`~flowbridge.layers.parts`), :mod:`~flowbridge.layers.diagonal`
(scaling, ActNorm, batch norm, logit), :mod:`~flowbridge.layers.structure` (permutation,
squeeze, factor-out) and :mod:`~flowbridge.layers.embedding` (the context embedding); the
shared pieces (:class:`Plan`, :class:`Param`, :func:`definition`...) are in
:mod:`~flowbridge.layers.base`. Each family module registers its definitions when it is
imported, and this package imports them all, so :data:`REGISTRY` holds every layer type.
Adding a layer type = one definition in its family's module (plus its spec model); no
backend changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .. import spec as S
from . import (  # noqa: F401  (each registers its layer types)
    autoregressive,
    coupling,
    diagonal,
    linear,
    structure,
)
from .base import (
    LAYER_TYPES,
    WEIGHT_KINDS,
    ZEROS,
    Field,
    Init,
    LayerType,
    Param,
    Plan,
    View,
    _tag,
    definition,
)
from .embedding import EmbeddingPlan, plan_embedding
from .maps import MAPS, Affine, Shift, SplineMap
from .parts import MLP, Partition, ResNet
from .structure import on_active_channels

#: The definitions, by their family modules' names (re-exported here as they were).
plan_coupling, plan_elementwise = coupling.plan_coupling, coupling.plan_elementwise
plan_scaling, plan_actnorm = diagonal.plan_scaling, diagonal.plan_actnorm
plan_batch_norm, plan_logit = diagonal.plan_batch_norm, diagonal.plan_logit
plan_permutation, plan_squeeze = structure.plan_permutation, structure.plan_squeeze
plan_factor_out = structure.plan_factor_out

__all__ = [
    "LAYER_TYPES", "MAPS", "MLP", "REGISTRY", "WEIGHT_KINDS", "ZEROS", "Affine", "EmbeddingPlan", "Field",
    "Init", "LayerType", "Param", "Partition", "Plan", "ResNet", "Shift", "SplineMap", "View",
    "check_definitions", "definition", "param_shapes", "param_specs", "plan_actnorm",
    "plan_batch_norm", "plan_coupling", "plan_elementwise", "plan_embedding",
    "plan_factor_out", "plan_flow", "plan_logit", "plan_permutation", "plan_scaling",
    "plan_squeeze",
]  # fmt: skip


#: Layer type (the spec's ``type`` field) -> its neutral definition, a function of the
#: spec layer, its input event shape and the flow's context size (0: none; a layer that
#: reads no context ignores it). Derived from the registrations (:func:`definition`).
REGISTRY: dict[str, Callable[[Any, tuple[int, ...], int], Plan]] = {
    t.tag: t.plan for t in LAYER_TYPES.values()
}


def check_definitions(models: list[type], defined: dict[str, LayerType]) -> None:
    """Raise ImportError naming each layer model that has no definition."""
    undefined = [m.__name__ for m in models if _tag(m) not in defined]
    if undefined:
        raise ImportError(f"layer types without a definition in flowbridge.layers: "
                          f"{', '.join(undefined)}")  # fmt: skip


check_definitions(S.LAYER_MODELS, LAYER_TYPES)  # a model without its definition: refused now


def plan_flow(spec: S.FlowSpec) -> list[Plan]:
    """Plan every layer of ``spec``: one :class:`Plan` per spec layer, in application order.

    Each layer is planned against the event shape the layers before it give (as zuko's
    transforms carry ``forward_shape``): its ``event_shape`` is the previous plan's
    ``output_shape``. A layer acting on the active channels of an image (after a
    factor-out) is planned on those and wrapped to act on the whole tensor. The code
    generator (:func:`flowbridge.generate`), :func:`flowbridge.param_shapes` and
    :func:`flowbridge.init_params` all read these plans.

    Args:
        spec: the flow, a validated :class:`flowbridge.FlowSpec`.

    Returns:
        ``list[Plan]``: one :class:`Plan` per entry of ``spec.layers``, in order.

    Raises:
        AttributeError: ``spec`` is not a :class:`flowbridge.FlowSpec` (a plain dict, say:
            validate it first with ``FlowSpec.from_dict``).

    Example:
        >>> import flowbridge as fb
        >>> from flowbridge.layers import plan_flow
        >>> plans = plan_flow(fb.nice(2, num_couplings=2, hidden=(4,)))
        >>> [plan.class_name for plan in plans]
        ['AdditiveCoupling', 'AdditiveCoupling', 'Scaling']
        >>> plans[0].event_shape, plans[0].output_shape, plans[0].constant_jacobian
        ((2,), (2,), True)
        >>> list(plans[-1].params)
        ['log_scale']
    """
    plans = []
    image = len(spec.event_shape) == 3
    for layer, (shape, acted) in zip(spec.layers, S.layer_scopes(spec), strict=True):
        plan = REGISTRY[layer.type](layer, acted, spec.context_features)
        if plan.whole_tensor:  # on the whole tensor, no slicing
            plan = dataclasses.replace(plan, event_shape=shape, output_shape=shape)
        elif acted != shape:
            plan = on_active_channels(plan, shape)
        elif image and not layer.whole:  # the same aspects as the layers acting on fewer
            plan = dataclasses.replace(plan, variant=(*plan.variant, ("", "")))
        plans.append(plan)
    return plans


def param_specs(spec: S.FlowSpec, plans: list[Plan] | None = None) -> dict[str, Param]:
    """Every parameter of ``spec``'s flow: ``context_embedding.{local name}`` (when the
    flow has one) then ``layers.{i}.{local name}`` -> :class:`Param`, in order of
    application (the neutral layout; see :func:`param_shapes`). ``plans``: the flow's
    plans where the caller has made them already (else planned here)."""
    plans = plan_flow(spec) if plans is None else plans
    embedding = plan_embedding(spec)
    own = embedding.params if embedding is not None else {}
    return {
        **{f"context_embedding.{name}": param for name, param in own.items()},
        **{f"layers.{i}.{name}": param
           for i, plan in enumerate(plans)
           for name, param in plan.params.items()},
    }  # fmt: skip


def param_shapes(spec: S.FlowSpec) -> dict[str, tuple[int, ...]]:
    """The neutral parameter layout of ``spec``: ``layers.{i}.{local name}`` -> shape.

    Couplings: ``layers.{i}.conditioner.{j}.kernel`` ``(in, out)`` and ``.bias``
    ``(out,)``, ``j`` counting dense layers from the input; the last layer's output is
    ``[shift | raw log-scale]`` for affine couplings. Scaling: ``layers.{i}.log_scale``
    ``(D,)``. Permutations have none. A context embedding's dense layers come first, as
    ``context_embedding.{j}.kernel`` ``(in, out)`` and ``.bias``. Every backend's
    parameters travel in this layout (:func:`flowbridge.init_params`,
    :func:`flowbridge.check_params`, :func:`flowbridge.save_params`).

    Args:
        spec: the flow, a :class:`flowbridge.FlowSpec`.

    Returns:
        ``dict[str, tuple[int, ...]]``: neutral name -> shape, in order of application
        (the context embedding's first, then layer by layer).

    Raises:
        AttributeError: ``spec`` is not a :class:`flowbridge.FlowSpec` (a plain dict, say:
            validate it first with ``FlowSpec.from_dict``).

    Example:
        >>> import flowbridge as fb
        >>> fb.param_shapes(fb.nice(2, num_couplings=2, hidden=(4,)))
        {'layers.0.conditioner.0.kernel': (1, 4), 'layers.0.conditioner.0.bias': (4,),
         'layers.0.conditioner.1.kernel': (4, 1), 'layers.0.conditioner.1.bias': (1,),
         'layers.1.conditioner.0.kernel': (1, 4), 'layers.1.conditioner.0.bias': (4,),
         'layers.1.conditioner.1.kernel': (4, 1), 'layers.1.conditioner.1.bias': (1,),
         'layers.2.log_scale': (2,)}
    """
    return {name: param.shape for name, param in param_specs(spec).items()}
