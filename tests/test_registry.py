"""Nothing is silently excluded: every layer type, option and IR op has coverage."""

from __future__ import annotations

import typing

import pytest

from flowbridge import ir
from flowbridge import spec as S
from flowbridge.backends import BACKENDS
from flowbridge.layers import REGISTRY

from .cases import CASES, IMAGE_CASES

SPECS = [factory() for factory in [*CASES.values(), *IMAGE_CASES.values()]]
LAYERS = [layer for spec in SPECS for layer in spec.layers]


def _literals_of_union(annotated):
    return {typing.get_args(m.model_fields["kind"].annotation)[0]
            for m in typing.get_args(typing.get_args(annotated)[0])}  # fmt: skip


def _literals(model, field):
    return set(typing.get_args(model.model_fields[field].annotation))


def test_every_layer_type_has_a_definition_and_a_case():
    spec_types = {typing.get_args(m.model_fields["type"].annotation)[0]
                  for m in typing.get_args(typing.get_args(S.Layer)[0])}  # fmt: skip
    assert spec_types == set(REGISTRY)
    assert {layer.type for layer in LAYERS} == set(REGISTRY)


def test_every_option_has_a_case():
    couplings = [la for la in LAYERS if la.type.endswith("coupling")]
    assert {la.mask.kind for la in couplings} == _literals_of_union(S.Mask)
    scales = {la.scale.kind for la in LAYERS if hasattr(la, "scale")}  # any affine map's
    assert scales == _literals_of_union(S.ScaleMap)
    mlps = [la for la in couplings if isinstance(la.conditioner, S.Conditioner)]
    resnets = [la for la in couplings if isinstance(la.conditioner, S.ResNetConditioner)]
    assert {la.conditioner.activation for la in mlps} == _literals(S.Conditioner, "activation")
    assert len({la.conditioner.activation for la in resnets}) >= 4
    assert {la.conditioner.blocks for la in resnets} >= {0, 1, 2}
    assert {la.conditioner.kernel_size for la in resnets} >= {1, 3, 5}
    perms = {la.kind for la in LAYERS if la.type == "permutation"}
    assert perms == _literals(S.Permutation, "kind")
    assert {2, 3, 7, 64} <= {spec.dim for spec in SPECS}
    assert {1, 2, 3, 4} <= {spec.event_shape[0] for spec in SPECS if len(spec.event_shape) == 3}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.no_generated_code("checks the backend's emitter table")
def test_every_ir_op_has_an_emitter_entry(backend):
    assert set(BACKENDS[backend].emitter().OPS) == set(ir.OPS)
