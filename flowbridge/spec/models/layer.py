"""What every layer model is: :class:`_LayerModel`, and the registry of the models
(:data:`LAYER_MODELS`), filled as the family modules define them."""

from __future__ import annotations

import typing
from typing import Any, Literal

from .fields import _Model

#: Every layer type's model, in the order they are defined: a model registers itself by
#: being defined (a subclass of :class:`_LayerModel` whose ``type`` is a tag), and the
#: :data:`Layer` union, the schema's tags and the discriminator derive from this tuple.
LAYER_MODELS: list[type] = []


class _LayerModel(_Model):
    """A layer of the spec. Each layer type is one such model (plus its definition in
    :mod:`flowbridge.layers`, registered there with ``@definition(Model)``); what it must
    satisfy against the event, and how many weights it holds, it says itself, so nothing
    else in this package lists layer types. Defining the model registers it."""

    type: str  # each layer type narrows it to its tag; declared here so it comes first

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if typing.get_origin(cls.model_fields["type"].annotation) is Literal:
            LAYER_MODELS.append(cls)

    #: the event ranks the layer takes: 1 (vectors ``(D,)``), 3 (images ``(C, H, W)``)
    ranks: typing.ClassVar[tuple[int, ...]] = (1, 3)
    #: on images: whether the layer moves the whole tensor (a squeeze) rather than the
    #: channels still active (those not factored out; see :class:`FactorOut`)
    whole: typing.ClassVar[bool] = False
    #: the values the layer takes: "real", or "unit_interval" for a layer that reads
    #: data in (0, 1) and so must come first (:class:`Logit`)
    domain: typing.ClassVar[str] = "real"

    def active_after(self, active: int) -> int:
        """The number of active channels after the layer, given those before it."""
        return active

    def check(self, shape: tuple[int, ...], at: str) -> list[tuple[str, str]]:
        """``(path, message)`` for each rule the layer breaks on events of ``shape``
        (whose rank is one of :attr:`ranks`: the flow's checks see to it)."""
        return []

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The event shape the layer gives for events of ``shape``."""
        return shape

    def param_count(self, shape: tuple[int, ...], context_dim: int = 0) -> int:
        """The number of weights on events of ``shape`` (with a context of
        ``context_dim``), by arithmetic (nothing is allocated: the ceilings are checked
        with it before anything is built)."""
        return 0
