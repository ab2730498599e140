"""Pyro's own splines, both orders (``"linear"``, Pyro's default, and ``"quadratic"``),
taken over exactly: ``Spline``, ``SplineCoupling`` (``identity=True``) and
``ConditionalSpline``, against the float64 NumPy reference and flowbridge's Pyro flow built
from the converted spec, forward, log-det and inverse to 1e-12; and the refusals
(another ``order``, ``identity=False``)."""

from __future__ import annotations

import numpy as np
import pytest

import flowbridge as fb

from .native_checks import TOLERANCE, error

torch = pytest.importorskip("torch")
pytest.importorskip("pyro")

BOUND = 3.0
#: entries beyond the bound (identity tails) and on it, besides the random draws
EDGES = np.array([[-3.5, 3.0, 4.0, -3.0], [3.0, -3.5, -3.0, 4.0], [4.0, -3.0, 3.0, -3.5]])


ORDERS = ["quadratic", "linear"]


def _model(order, **kw):
    """flowbridge's spline for a Pyro ``order``."""
    return (fb.RationalQuadraticSpline if order == "quadratic" else fb.RationalLinearSpline)(**kw)


def _dims(n, k, order):
    """A Pyro spline hypernet's ``param_dims``: ``[u_w, u_h, u_d (, u_l)]``."""
    return [n * k, n * k, n * (k - 1)] + ([n * k] if order == "linear" else [])


from pyro.distributions.torch_transform import ComposeTransformModule  # noqa: E402


def _randomise(module, seed, std=0.3):
    """Every parameter of ``module`` drawn afresh (float64), so no layer is the identity.

    The hypernets' ``std`` stays at 0.3: at 0.5 their outputs make bins so steep and so flat
    that the inverse is ill-conditioned (Pyro's own round trip is then off by ~1e-8, and
    two float64 evaluations of the same inverse differ as much), while forward and log-det
    still agree to 1e-12."""
    torch.manual_seed(seed)
    module.double()
    with torch.no_grad():
        for p in module.parameters():
            torch.nn.init.normal_(p, std=std)
    return module


def _x(d, seed, n=64):
    x = 2.5 * np.random.default_rng(seed).standard_normal((n, d))
    assert np.any(np.abs(x) > BOUND)  # some draws lie in the tails
    return np.concatenate([x, EDGES[:, :d]])


def _compare(native, spec, params, x, c=None):
    """Native Pyro vs the NumPy reference vs flowbridge's Pyro flow: forward, log-det and
    inverse (of a fresh tensor, so no cache answers); returns the largest differences."""
    ctx = () if c is None else (c,)
    ct = None if c is None else torch.tensor(c)
    ours = fb.to_pyro(spec, params, dtype=torch.float64)
    if ct is not None:
        native, ours = native.condition(ct), ours.condition(ct)
    xt = torch.tensor(x)
    y_t = native(xt)
    ld_t = native.log_abs_det_jacobian(xt, y_t)
    if ld_t.dim() == 2:  # an elementwise transform's log-det is per entry
        ld_t = ld_t.sum(-1)
    y_nat, ld_nat = y_t.detach().numpy(), ld_t.detach().numpy()
    x_nat = native.inv(y_t.detach().clone()).detach().numpy()

    ref = fb.to_numpy(spec, params)
    y_ref, ld_ref = ref.forward_with_log_det(x, *ctx)
    x_ref = ref.inverse(y_nat.copy(), *ctx)

    y_fb = ours(xt)
    ld_fb = ours.log_abs_det_jacobian(xt, y_fb).detach().numpy()
    x_fb = ours.inv(y_t.detach().clone()).detach().numpy()
    y_fb = y_fb.detach().numpy()

    pairs = {
        "forward (reference)": (y_ref, y_nat),
        "forward (flowbridge Pyro)": (y_fb, y_nat),
        "log-det (reference)": (ld_ref, ld_nat),
        "log-det (flowbridge Pyro)": (ld_fb, ld_nat),
        "inverse (reference)": (x_ref, x_nat),
        "inverse (flowbridge Pyro)": (x_fb, x_nat),
    }
    errors = {}  # flowbridge check's figures: relative max-norm, log-dets |a - b| / (1 + |b|)
    for what, (got, want) in pairs.items():
        errors[what] = error(got, want, log_det=what.startswith("log-det"))
    print({k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) <= TOLERANCE, errors
    # the draw is well-conditioned: Pyro's own round trip holds to 1e-10 (its linear
    # spline's inverse loses a few bits more than the quadratic's)
    np.testing.assert_allclose(x_nat, x, rtol=0.0, atol=1e-10)
    assert np.max(np.abs(y_nat - x)) > 0.1 and np.max(np.abs(ld_nat)) > 0.1  # not the identity
    return errors


@pytest.mark.parametrize("order", ORDERS)
def test_spline_converts_exactly(order):
    from pyro.distributions.transforms import Spline

    native = _randomise(Spline(4, count_bins=6, bound=BOUND, order=order), 0, std=1.0)
    spec, params = fb.from_pyro_native(native)
    layer = spec.layers[0]
    assert layer == fb.ElementwiseSpline(spline=_model(order, bins=6, bound=BOUND,
                                                       edge_derivative="pyro", eps=1e-6))  # fmt: skip
    assert ("layers.0.lambdas" in params) == (order == "linear")
    assert spec.dim == 4 and spec.context_dim == 0
    assert params["layers.0.widths"].shape == (4, 6)
    assert params["layers.0.derivatives"].shape == (4, 5)
    _compare(native, spec, params, _x(4, 1))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("splits", [(1, 2), (2, 1)])
def test_spline_couplings_with_a_permutation_convert_exactly(splits, order):
    from pyro.distributions.torch_transform import ComposeTransformModule
    from pyro.distributions.transforms import Permute, SplineCoupling
    from pyro.nn import DenseNN

    d, k = 4, 5
    parts = []
    for i, split in enumerate(splits):
        n = d - split
        net = DenseNN(split, [16, 16], param_dims=_dims(n, k, order))
        parts.append(SplineCoupling(d, split, net, count_bins=k, bound=BOUND, order=order,
                                    identity=True))  # fmt: skip
        if i == 0:
            parts.append(Permute(torch.tensor([2, 0, 3, 1])))
    native = _randomise(ComposeTransformModule(parts), 2)
    spec, params = fb.from_pyro_native(native)
    assert [la.type for la in spec.layers] == ["spline_coupling", "permutation", "spline_coupling"]
    for layer, split in zip(spec.layers[::2], splits, strict=True):
        assert layer.mask == fb.SplitMask(part="first", size=split)
        assert layer.conditioner.hidden == (16, 16) and layer.conditioner.activation == "relu"
        assert layer.spline == _model(order, bins=k, bound=BOUND, edge_derivative="pyro",
                                      eps=1e-6)
    # no entry exactly on the bound: the first coupling's output there is B give or take an
    # ulp, and Pyro's edge derivative (0.999, the tails' 1) makes the second coupling's
    # log-det jump by log(0.999) across B, so one rounding apart means 1e-3 apart
    x = _x(d, 3)
    _compare(native, spec, params, x[np.all(np.abs(np.abs(x) - BOUND) > 1e-6, axis=-1)])


def _conditional_spline(d, context, k=5, seed=4, order="quadratic"):
    from pyro.distributions.transforms import ConditionalSpline
    from pyro.nn import DenseNN

    net = DenseNN(context, [12, 12], param_dims=_dims(d, k, order), nonlinearity=torch.nn.Tanh())
    return _randomise(ConditionalSpline(net, d, count_bins=k, bound=BOUND, order=order), seed)


@pytest.mark.parametrize("order", ORDERS)
def test_conditional_spline_converts_exactly(order):
    native = _conditional_spline(4, 3, order=order)
    spec, params = fb.from_pyro_native(native)
    assert spec.context_dim == 3 and spec.dim == 4
    layer = spec.layers[0]
    assert layer.type == "elementwise_spline" and layer.conditioner.activation == "tanh"
    assert params["layers.0.conditioner.0.kernel"].shape == (3, 12)  # reads the context alone
    x = _x(4, 5)
    c = np.random.default_rng(6).standard_normal((len(x), 3))
    _compare(native, spec, params, x, c)


def test_conditional_spline_beside_a_conditional_affine_coupling():
    from pyro.distributions.conditional import ConditionalComposeTransformModule
    from pyro.distributions.transforms import ConditionalAffineCoupling, Permute
    from pyro.nn import ConditionalDenseNN

    coupling = ConditionalAffineCoupling(2, ConditionalDenseNN(2, 3, [8], param_dims=[2, 2]))
    parts = [_conditional_spline(4, 3), Permute(torch.tensor([3, 1, 0, 2])), coupling]
    native = _randomise(ConditionalComposeTransformModule(parts), 7)
    spec, params = fb.from_pyro_native(native)
    assert spec.context_dim == 3
    assert [la.type for la in spec.layers] == ["elementwise_spline", "permutation",
                                               "affine_coupling"]  # fmt: skip
    x = _x(4, 8)
    c = np.random.default_rng(9).standard_normal((len(x), 3))
    _compare(native, spec, params, x, c)


# --------------------------------------------------------------------------- refusals
def test_an_unknown_order_is_refused():
    from pyro.distributions.transforms import Spline

    native = Spline(4, count_bins=4)
    native.order = "cubic"
    with pytest.raises(fb.NativeError, match=r"parts\[0\] \(Spline\): order='cubic' cannot "
                       "be converted; expected 'linear' or 'quadratic'"):  # fmt: skip
        fb.from_pyro_native(native)


@pytest.mark.parametrize("order", ORDERS)
def test_pyro_default_spline_coupling_converts_exactly(order):
    """``spline_coupling(input_dim)``, Pyro's helper: ``identity=False`` (its default), so
    the passed entries have a spline of their own (``lower_spline``), and the hypernet
    reads them before it."""
    from pyro.distributions.transforms import Permute, SplineCoupling
    from pyro.nn import DenseNN

    d, k, split = 4, 4, 1
    n = d - split
    net = DenseNN(split, [10, 10], param_dims=_dims(n, k, order))
    coupling = SplineCoupling(d, split, net, count_bins=k, bound=BOUND, order=order)
    assert not coupling.identity
    native = _randomise(ComposeTransformModule([Permute(torch.tensor([3, 2, 0, 1])), coupling]),
                        11)  # fmt: skip
    spec, params = fb.from_pyro_native(native)
    layer = spec.layers[1]
    assert layer.passed_spline and params["layers.1.a_widths"].shape == (split, k)
    x = _x(d, 12)
    _compare(native, spec, params, x[np.all(np.abs(np.abs(x) - BOUND) > 1e-6, axis=-1)])


def test_spline_mixing_refusals():
    from pyro.distributions.transforms import Spline
    from pyro.nn import DenseNN

    unconditional = Spline(4, count_bins=4, order="quadratic")
    with pytest.raises(fb.NativeError, match=r"parts\[1\] \(Spline\): an unconditional Spline "
                       "in a conditional flow"):  # fmt: skip
        fb.from_pyro_native([_conditional_spline(4, 3), unconditional])
    with pytest.raises(fb.NativeError, match=r"contexts of sizes \[2, 3\]"):
        fb.from_pyro_native([_conditional_spline(4, 3), _conditional_spline(4, 2)])
    with pytest.raises(fb.NativeError, match=r"expected DenseNN\(3, ..., param_dims=\[20, 20, 16\]\)"):
        from pyro.distributions.transforms import ConditionalSpline

        net = DenseNN(3, [8], param_dims=[20, 20, 20])
        fb.from_pyro_native(ConditionalSpline(net, 4, 5, order="quadratic"))
