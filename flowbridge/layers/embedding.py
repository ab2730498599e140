"""The context embedding: an MLP applied once to a conditional flow's context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import spec as S
from .base import Param, _configuration
from .parts import MLP


@dataclass(frozen=True)
class EmbeddingPlan:
    """The flow's context embedding (:class:`flowbridge.spec.ContextEmbedding`) resolved:
    one generated class, applied once to the context before the couplings. Its
    parameters' local names are ``{j}.kernel``/``{j}.bias`` (neutral names under
    ``context_embedding.``); ``embed(p, context)`` returns the features."""

    doc: str
    args: dict[str, Any]  # {"sizes": [context_dim, *hidden, features]}
    params: dict[str, Param]
    context_dim: int
    features: int
    embed: Callable = field(compare=False)  # (p, context) -> features


def plan_embedding(spec: S.FlowSpec) -> EmbeddingPlan | None:
    """The embedding of ``spec``'s context, or None when it has none: the conditioner's
    MLP part (:class:`MLP`) on the context, every kernel started fan-in uniform."""
    emb = spec.context_embedding
    if emb is None:
        return None
    mlp = MLP(emb, spec.context_dim, emb.features, prefix="", zero_last=False)
    depth = len(emb.hidden)
    slope = f" (negative slope {emb.negative_slope!r})" if emb.activation == "leaky_relu" else ""
    acts = f"{emb.activation}{slope} after each hidden layer" if depth else "no hidden layer"
    config = f"dense layers {' -> '.join(map(str, mlp.sizes))}, {acts}, none after the last"
    doc = f"""The context embedding: features = e(context), applied once before the couplings.

    Every coupling's conditioner reads [x_a | features].
    {_configuration(config)}"""
    return EmbeddingPlan(
        doc=doc,
        args=mlp.args,
        params=mlp.params,
        context_dim=spec.context_dim,
        features=emb.features,
        embed=lambda p, context: mlp(p, context),
    )
