"""The registry of test flows: factories (not instances), so every test gets fresh state.

Every layer type, mask kind, scale map, activation and permutation kind appears in at
least one case; ``test_registry`` asserts it, so nothing is silently left out.
"""

from __future__ import annotations

from pathlib import Path

import flowbridge as fb
from flowbridge import spec as S

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "specs"


def _one(layer, dim: int, name: str):
    return lambda: fb.FlowSpec(name=name, event_shape=(dim,), layers=[layer])


CASES = {
    # one layer per case, so a failure names the layer type
    "additive_half_d4": _one(S.AdditiveCoupling(), 4, "additive"),
    "additive_parity_d5_tanh": _one(
        S.AdditiveCoupling(mask=S.ParityMask(parity="odd"),
                           conditioner=S.Conditioner(hidden=(8,), activation="tanh")), 5, "a"),
    "affine_exp_d3": _one(S.AffineCoupling(conditioner=S.Conditioner(hidden=(8, 8))), 3, "b"),
    "affine_clamp_d5_last": _one(
        S.AffineCoupling(mask=S.HalfMask(part="last"), scale=S.ClampScale(low=-0.1, high=0.2),
                         conditioner=S.Conditioner(hidden=(8,), activation="elu")), 5, "c"),
    "affine_soft_clamp_d6_ceil": _one(
        S.AffineCoupling(mask=S.HalfMask(rounding="ceil"), scale=S.SoftClampScale(bound=0.5),
                         conditioner=S.Conditioner(activation="gelu")), 6, "d"),
    "affine_sigmoid_d7_explicit": _one(
        S.AffineCoupling(mask=S.ExplicitMask(values=(True, False, True, True, False, False, True)),
                         scale=S.SigmoidScale(offset=1.0),
                         conditioner=S.Conditioner(hidden=(), activation="leaky_relu")), 7, "e"),
    "additive_split_last_d6": _one(
        S.AdditiveCoupling(mask=S.SplitMask(part="last", size=4),
                           conditioner=S.Conditioner(hidden=(8,))), 6, "a2"),
    "scaling_d3": _one(S.Scaling(), 3, "f"),
    "permutation_reverse_d4": _one(S.Permutation(kind="reverse"), 4, "g"),
    "permutation_random_d6": _one(S.Permutation(kind="random", seed=3), 6, "h"),
    "permutation_explicit_d3": _one(S.Permutation(kind="explicit", indices=(2, 0, 1)), 3, "i"),
    "actnorm_d4": _one(S.ActNorm(), 4, "j"),
    # Glow's invertible 1x1 convolution on a vector: an LU linear layer, here with the
    # sign and log-magnitude diagonal, negative signs and a given permutation
    "lu_linear_log_signs_d4": _one(S.Conv1x1(diagonal="log", signs=(1, -1, -1, 1),
                                             permutation=(2, 0, 3, 1)), 4, "lu"),
    # neural splines: a coupling, an elementwise spline (learned raw parameters), Pyro's
    # edge derivative, and both in a conditional flow
    "spline_coupling_d4": _one(S.SplineCoupling(conditioner=S.Conditioner(hidden=(8,)),
                                                spline=S.RationalQuadraticSpline(bins=5)), 4, "s"),
    "spline_coupling_parity_pyro_d5": _one(S.SplineCoupling(
        mask=S.ParityMask(), conditioner=S.Conditioner(hidden=(8,), activation="tanh"),
        spline=S.RationalQuadraticSpline(bins=3, bound=2.0, edge_derivative="pyro")), 5, "s2"),
    "spline_coupling_linear_d4": _one(S.SplineCoupling(
        conditioner=S.Conditioner(hidden=(8,)),
        spline=S.RationalLinearSpline(bins=4, edge_derivative="pyro")), 4, "s5"),
    "spline_coupling_passed_spline_d5": _one(S.SplineCoupling(
        mask=S.SplitMask(size=2), conditioner=S.Conditioner(hidden=(8,)),
        spline=S.RationalLinearSpline(bins=3), passed_spline=True), 5, "s7"),
    "elementwise_spline_linear_d3": _one(S.ElementwiseSpline(
        spline=S.RationalLinearSpline(bins=5, min_lambda=0.1)), 3, "s6"),
    "elementwise_spline_d2": _one(S.ElementwiseSpline(spline=S.RationalQuadraticSpline(bins=4)),
                                  2, "s3"),  # fmt: skip
    "nsf_conditional_d3_c2": lambda: fb.FlowSpec(
        name="s4", event_shape=(3,), context_dim=2, layers=[
            S.SplineCoupling(conditioner=S.Conditioner(hidden=(8,))), S.Permutation(),
            S.ElementwiseSpline(conditioner=S.Conditioner(hidden=(6,)),
                                spline=S.RationalQuadraticSpline(bins=4))]),  # fmt: skip
    # autoregressive layers (MADE): MAF and IAF, affine and spline maps, a given order,
    # Pyro's, TFP's and explicit degrees, a context
    "maf_affine_clamp_d4_order_pyro_degrees": _one(S.AffineAutoregressive(
        conditioner=S.MADE(hidden=(8, 8), order=(2, 0, 3, 1), degrees="pyro"),
        scale=S.ClampScale()), 4, "m"),
    "iaf_affine_softplus_d5_tanh": _one(S.AffineAutoregressive(
        conditioner=S.MADE(hidden=(7,), activation="tanh"), scale=S.SoftplusScale(eps=0.01),
        direction="iaf"), 5, "m2"),
    "iaf_spline_d3_explicit_degrees": _one(S.SplineAutoregressive(
        conditioner=S.MADE(hidden=(4,), degrees=((0, 1, 2, 1),)),
        spline=S.RationalQuadraticSpline(bins=4), direction="iaf"), 3, "m3"),
    "maf_conditional_d3_c2": lambda: fb.FlowSpec(
        name="m4", event_shape=(3,), context_dim=2, layers=[
            S.SplineAutoregressive(conditioner=S.MADE(hidden=(6,), order=(2, 1, 0)),
                                   spline=S.RationalLinearSpline(bins=3)),
            S.AffineAutoregressive(conditioner=S.MADE(hidden=(5,), degrees="pyro"),
                                   direction="iaf")]),  # fmt: skip
    # one entry: no loop (D - 1 = 0 steps); the context is all the MADE's hidden units read
    "iaf_affine_conditional_d1_c2": lambda: fb.FlowSpec(
        name="m5", event_shape=(1,), context_dim=2, layers=[S.AffineAutoregressive(
            conditioner=S.MADE(hidden=(3,)), direction="iaf")]),  # fmt: skip
    # every entry's affine map: learned vectors without a context, m(context) with one
    "elementwise_affine_d1": _one(S.ElementwiseAffine(), 1, "k"),
    "elementwise_affine_soft_clamp_d3": _one(
        S.ElementwiseAffine(scale=S.SoftClampScale(bound=0.7)), 3, "k2"),
    "elementwise_affine_conditional_d1_c3": lambda: fb.FlowSpec(
        name="k3", event_shape=(1,), context_dim=3, layers=[S.ElementwiseAffine(
            conditioner=S.Conditioner(hidden=(8,), activation="tanh"),
            scale=S.ClampScale(low=-0.2, high=0.3))]),  # fmt: skip
    "elementwise_affine_sigmoid_conditional_d2_c2": lambda: fb.FlowSpec(
        name="k4", event_shape=(2,), context_dim=2, layers=[S.ElementwiseAffine(
            conditioner=S.Conditioner(hidden=(8, 8)), scale=S.SigmoidScale(offset=2.0))]),  # fmt: skip
    # conditional flows: every coupling reads [x_a | context]; scaling and permutations not
    "realnvp_conditional_d5_c3": lambda: fb.realnvp(5, hidden=(16,), context_dim=3,
                                                    permutation="random"),  # fmt: skip
    "nice_conditional_d4_c2": lambda: fb.nice(4, hidden=(8,), activation="tanh", context_dim=2),
    # a context embedding (3 -> 6 -> 5, tanh) before the couplings, which read 5 features
    "realnvp_conditional_embedded_d4_c3": lambda: fb.realnvp(
        4, hidden=(8,), context_dim=3, permutation="reverse",
        context_embedding={"features": 5, "hidden": [6], "activation": "tanh"}),  # fmt: skip
    # presets
    "nice_preset_d5": lambda: fb.nice(5, hidden=(16, 16)),
    "realnvp_preset_d4_perm": lambda: fb.realnvp(4, hidden=(16,), permutation="random"),
    # shipped example specs
    **{f"example_{p.stem}": (lambda p=p: fb.load_spec(p)) for p in sorted(EXAMPLES.iterdir())
       if len(fb.load_spec(p).event_shape) == 1},
}


def _image(shape, *layers, name="image"):
    return lambda: fb.FlowSpec(name=name, event_shape=shape, layers=list(layers))


def _resnet(**kw):
    return S.ResNetConditioner(**{"blocks": 1, "channels": 8, **kw})


#: Image flows, events (C, H, W): one case per image layer, mask, parity and conditioner
#: setting, plus RealNVP's scale block (3 checkerboard couplings, squeeze, 3 channel ones).
IMAGE_CASES = {
    "image_checkerboard_affine_c2_4x4": _image(
        (2, 4, 4), S.AffineCoupling(mask=S.CheckerboardMask(), conditioner=_resnet())),
    "image_checkerboard_odd_additive_c1_4x6_k1_tanh": _image(
        (1, 4, 6), S.AdditiveCoupling(mask=S.CheckerboardMask(parity="odd"),
                                      conditioner=_resnet(blocks=0, channels=4, kernel_size=1,
                                                          activation="tanh"))),
    "image_channel_last_sigmoid_c4_2x2_leaky": _image(
        (4, 2, 2), S.AffineCoupling(mask=S.ChannelMask(part="last"), scale=S.SigmoidScale(),
                                    conditioner=_resnet(blocks=2, channels=4,
                                                        activation="leaky_relu"))),
    "image_channel_first_soft_clamp_c3_4x4_k5": _image(
        (3, 4, 4), S.AffineCoupling(mask=S.ChannelMask(), scale=S.SoftClampScale(bound=1.0),
                                    conditioner=_resnet(kernel_size=5, activation="elu"))),
    "image_spline_checkerboard_c2_4x4": _image(
        (2, 4, 4), S.SplineCoupling(mask=S.CheckerboardMask(), conditioner=_resnet(),
                                    spline=S.RationalQuadraticSpline(bins=4))),
    "image_spline_channel_linear_c4_4x4_factor_out": _image(
        (4, 4, 4), S.SplineCoupling(mask=S.ChannelMask(part="last"), conditioner=_resnet(),
                                    spline=S.RationalLinearSpline(bins=3)),
        S.FactorOut(), S.SplineCoupling(mask=S.CheckerboardMask(parity="odd"),
                                        conditioner=_resnet(channels=4))),
    "image_squeeze_c1_4x6": _image((1, 4, 6), S.Squeeze()),
    "image_scaling_c2_2x4": _image((2, 2, 4), S.Scaling()),
    "image_scale_block_c1_4x4": _image(
        (1, 4, 4),
        *[S.AffineCoupling(mask=S.CheckerboardMask(parity=p), conditioner=_resnet(channels=6))
          for p in ("even", "odd", "even")],
        S.Squeeze(),
        *[S.AffineCoupling(mask=S.ChannelMask(part=p), conditioner=_resnet(channels=6))
          for p in ("first", "last", "first")],
        S.Scaling()),
    # multi-scale: a factor-out, then layers on the active channels only (squeezes move all)
    "image_multiscale_c1_8x8": _image(
        (1, 8, 8),
        S.AffineCoupling(mask=S.CheckerboardMask(), conditioner=_resnet(channels=4)),
        S.Squeeze(),
        S.AdditiveCoupling(mask=S.ChannelMask(), conditioner=_resnet(channels=4)),
        S.FactorOut(),
        S.AffineCoupling(mask=S.CheckerboardMask(parity="odd"), conditioner=_resnet(channels=4)),
        S.Squeeze(),
        S.AffineCoupling(mask=S.ChannelMask(part="last"), conditioner=_resnet(channels=4)),
        S.FactorOut(),
        S.Scaling()),
    "image_preset_c1_8x8": lambda: fb.realnvp_image((1, 8, 8), blocks=1, channels=4),
    # Glow: squeeze, ActNorm, 1x1 convolution (LU, U's diagonal direct) and a sigmoid-scaled
    # channel coupling, a factor-out, then a level whose convolution stores log|diag U|
    "image_glow_c1_4x4": lambda: fb.FlowSpec(name="glow", event_shape=(1, 4, 4), layers=[
        *fb.glow((1, 4, 4), num_scales=1, steps=1, blocks=0, channels=4).layers,
        S.FactorOut(), S.Conv1x1(diagonal="log", signs=(-1, 1), permutation="identity")]),
    # the data side: logit preprocessing of (0, 1) data, ActNorm per channel (also after a
    # factor-out, on the active channels)
    "image_logit_actnorm_c2_4x4": _image(
        (2, 4, 4), S.Logit(alpha=0.1), S.ActNorm(),
        S.AffineCoupling(mask=S.CheckerboardMask(), conditioner=_resnet(channels=4)),
        S.Squeeze(), S.FactorOut(), S.ActNorm()),
    # batch normalization (evaluation mode here; tests/test_images.py checks training)
    "image_batch_norm_c3_4x4": _image((3, 4, 4), S.BatchNorm(momentum=0.2, eps=1e-3)),
    "image_batch_norm_coupling_c2_4x4": _image(
        (2, 4, 4), S.BatchNorm(),
        S.AffineCoupling(mask=S.CheckerboardMask(), conditioner=_resnet(channels=4)),
        S.Squeeze(), S.FactorOut(), S.BatchNorm(momentum=0.5)),
    # shipped example specs with image events
    **{f"example_{p.stem}": (lambda p=p: fb.load_spec(p)) for p in sorted(EXAMPLES.iterdir())
       if len(fb.load_spec(p).event_shape) == 3},
}  # fmt: skip

#: A 7-entry flow with a gather mask, a split mask, a permutation and a scaling: the
#: spec the input checks at each backend's door run on (tests/test_backends.py,
#: tests/test_frameworks.py).
D7 = fb.FlowSpec(
    event_shape=(7,),
    layers=[fb.AffineCoupling(mask=fb.ParityMask(), conditioner=fb.Conditioner(hidden=(8,))),
            fb.AffineCoupling(mask=fb.SplitMask(size=3), conditioner=fb.Conditioner(hidden=(8,))),
            fb.Permutation(kind="reverse"), fb.Scaling()],
)  # fmt: skip
