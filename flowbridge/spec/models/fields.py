"""The field types every model shares: integers as JSON has them, the float constants
written into generated code, and the frozen base model whose errors name the field."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from ...limits import F32_MAX, F32_TINY, MAX_INT
from ..errors import translate


def _integral(value: Any) -> Any:
    """JSON has one number type: ``4.0`` is the integer 4 (as JSON Schema says)."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_INT:
        return int(value)
    return value


Int = Annotated[StrictInt, BeforeValidator(_integral), Field(le=MAX_INT)]
PosInt = Annotated[Int, Field(gt=0)]
NonNegInt = Annotated[Int, Field(ge=0)]
#: The conditioners' activations, listed once: the conditioners' fields and the presets'
#: arguments take this type.
Activation = Literal["relu", "tanh", "leaky_relu", "elu", "gelu"]


def _constant(low: float, high: float, *, positive: bool = False):
    """A float constant written into generated code: finite, and 0 or of magnitude in
    ``[low, high]`` (``positive``: a number in ``[low, high]``). Both bounds are float32
    normals, so every backend and dtype holds the constant as it is, never as infinity,
    zero or a subnormal."""
    if positive:
        what = f"a number in [{low:.7g}, {high:.7g}]"
        ranges = [{"minimum": low, "maximum": high}]
    else:
        what = f"0 or a magnitude in [{low:.7g}, {high:.7g}] (float32's normal range)"
        ranges = [{"const": 0}, {"minimum": low, "maximum": high},
                  {"minimum": -high, "maximum": -low}]  # fmt: skip

    def check(value: float) -> float:
        ok = low <= value <= high if positive else value == 0.0 or low <= abs(value) <= high
        if not ok:
            raise PydanticCustomError("constant", f"expected {what}, got {{got}}", {"got": value})
        return float(value)

    return Annotated[float, Field(strict=True, allow_inf_nan=False,
                                  json_schema_extra={"anyOf": ranges}),
                     AfterValidator(check)]  # fmt: skip


#: Any constant: 0 or a float32 normal magnitude.
Finite = _constant(F32_TINY, F32_MAX)


#: Branch names that pydantic puts in error locations (``layers.0.affine_coupling.mask``),
#: which the errors leave out of a field's path: the tags of the layer, mask, scale-map and
#: spline unions, filled by ``flowbridge.spec.models`` once every model is defined.
TAGS: set[str] = set()


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, /, **data: Any):  # positional-only: a "self" key is a field name
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise translate(exc, TAGS) from None


def _schema_description(description: str) -> ConfigDict:
    """A model's config that gives its JSON Schema ``description`` (cleaned as a docstring
    is), where pydantic would copy the class docstring: the docstrings carry the API
    reference's sections and examples, the published schema keeps its own text."""
    return ConfigDict(json_schema_extra={"description": inspect.cleandoc(description)})
