"""Peers in the benchmark: flowbridge-Pyro against zuko, nflows and normflows.

Each peer gets the benchmark's flow (:func:`flowbridge.bench.core.flow_and_params`: couplings
that pass the first ``D // 2`` entries, conditioners ``D//2 -> hidden -> hidden -> out``
with ReLU, seeded permutations between couplings), built from the peer's own coupling
and permutation classes and loaded with the same weights; flowbridge-Pyro gets the same
flow from the same spec and weights. Before timing, the worker checks that the peer's
map and log-det and its ``log_prob`` equal flowbridge's (float32, 1e-4); a peer whose
numbers differ stops the run.

Where a peer cannot express the flow as it is, the nearest configuration is timed and
said so (:data:`PEERS`):

- zuko 1.6: its ``RealNVP``/``NICE`` are ``GeneralCouplingTransform``s with checkerboard
  masks and no permutations; the same class is built here with the split mask and
  zuko's ``PermutationTransform`` between couplings. Its affine map
  ``MonotonicAffineTransform`` soft-clips the log-scale (``s / (1 + |s / log(slope)|)``),
  which no flowbridge scale map is; ``slope=inf`` makes it the plain ``exp`` scale at
  the same cost, so the affine rows use ``ExpScale``.
- nflows 0.14: ``AffineCouplingTransform`` scales by ``sigmoid(s + 2) + 1e-3``; the
  ``1e-3`` has no flowbridge counterpart, so a subclass drops it (``SigmoidScale``,
  offset 2, one addition less than nflows' own). Its ``MLP`` does not take the
  ``context`` argument its couplings pass; a subclass accepts and ignores it.
- normflows 1.7: ``AffineCouplingBlock`` with ``scale_map="exp"`` (exact), ``scale=False``
  for the additive coupling, ``Permute`` with the permutation set; its ``sample`` also
  returns the log-density (its only sampling call).

Each library runs in its own orientation: zuko's and nflows' transforms map data to
noise, so their couplings are the flow's forward map and ``log_prob`` runs it forward;
normflows' layers map noise to data, as Pyro's do. flowbridge's distribution follows
each: ``TransformedDistribution(base, [flow.inv])`` against zuko and nflows,
``[flow]`` against normflows, so both sides evaluate the same density the same way.
"""

from __future__ import annotations

import itertools
import math

from .core import flow_and_params, interleaved, timeit_many

#: peer -> (scale map of its affine rows, orientation, what differs from the flow).
PEERS = {
    "zuko": ("exp", "data->noise",
             "GeneralCouplingTransform (its RealNVP/NICE coupling) with the split mask and "
             "PermutationTransform; MonotonicAffineTransform(slope=inf) = exp scale"),
    "nflows": ("sigmoid", "data->noise",
               "AffineCouplingTransform with its sigmoid(s + 2) scale, the +1e-3 dropped to "
               "match; MLP subclassed to take the context argument it is passed"),
    "normflows": ("exp", "noise->data",
                  "AffineCouplingBlock(scale_map='exp', split_mode='channel') and Permute; "
                  "sample also returns log_q"),
}  # fmt: skip
KINDS = ("affine", "additive")
OPS = ("forward", "log_prob", "sample", "train")


def installed() -> dict[str, str | None]:
    """{peer: version, or None where it is not installed}."""
    from importlib import metadata

    out = {}
    for name in PEERS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def scale_of(peer: str, kind: str) -> str:
    """The flowbridge scale map of ``peer``'s rows: ``additive``, or its affine map."""
    return "additive" if kind == "additive" else PEERS[peer][0]


def data_to_noise_ops(library: str, flow, x, lr: float = 1e-6) -> dict:
    """Timed closures over a zuko flow (``library="zuko"``: a ``LazyDistribution``,
    called for its distribution) or an nflows ``Flow`` (``"nflows"``), both mapping data
    to noise: ``forward`` (the transform with its log-det), ``inverse`` (noise to data)
    and ``log_prob``, without gradients, and ``train``, one Adam step (``lr``) of the
    mean negative ``log_prob``. ``x()`` gives each call's batch."""
    import torch

    if library == "zuko":
        def forward():
            return flow().transform.call_and_ladj(x())

        def inverse():
            return flow().transform.inv(x())

        def log_prob():
            return flow().log_prob(x())
    else:
        def forward():
            return flow._transform(x())

        def inverse():
            return flow._transform.inverse(x())

        def log_prob():
            return flow.log_prob(x())

    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()

        return run

    def train():
        optimizer.zero_grad(set_to_none=True)
        (-log_prob().mean()).backward()
        optimizer.step()

    return {"forward": no_grad(forward), "inverse": no_grad(inverse),
            "log_prob": no_grad(log_prob), "train": train}  # fmt: skip


def _load(linears, spec_index: int, params: dict, interleave: int = 0) -> None:
    """Copy coupling ``spec_index``'s conditioner into torch ``nn.Linear`` layers
    (kernels (in, out) -> weights (out, in)); ``interleave`` = n: the last layer's
    outputs as ``[shift_0, s_0, ...]``."""
    import torch

    with torch.no_grad():
        for j, lin in enumerate(linears):
            kernel = params[f"layers.{spec_index}.conditioner.{j}.kernel"]
            bias = params[f"layers.{spec_index}.conditioner.{j}.bias"]
            if interleave and j == len(linears) - 1:
                cols = interleaved(interleave)
                kernel, bias = kernel[:, cols], bias[cols]
            lin.weight.copy_(torch.as_tensor(kernel.T.copy()))
            lin.bias.copy_(torch.as_tensor(bias.copy()))


class _Peer:
    """One peer flow behind the four timed calls; ``module`` holds its parameters."""

    def __init__(self, module, forward, log_prob, sample):
        self.module, self.forward, self.log_prob, self.sample = module, forward, log_prob, sample


def zuko_flow(spec, params, kind: str, hidden: int) -> _Peer:
    import torch
    from zuko.distributions import DiagNormal
    from zuko.flows import (
        Flow,
        GeneralCouplingTransform,
        UnconditionalDistribution,
        UnconditionalTransform,
    )
    from zuko.transforms import AdditiveTransform, MonotonicAffineTransform, PermutationTransform

    dim = spec.dim
    if kind == "additive":
        univariate, shapes = AdditiveTransform, [()]
    else:
        univariate = lambda shift, scale: MonotonicAffineTransform(shift, scale, slope=math.inf)  # noqa: E731
        shapes = [(), ()]
    parts = []
    for i, layer in enumerate(spec.layers):
        if layer.type == "permutation":
            order = torch.as_tensor(layer.indices)
            parts.append(UnconditionalTransform(PermutationTransform, order, buffer=True))
            continue
        t = GeneralCouplingTransform(dim, mask=torch.arange(dim) < dim // 2, univariate=univariate,
                                     shapes=shapes, hidden_features=(hidden, hidden))  # fmt: skip
        _load([t.hyper[0], t.hyper[2], t.hyper[4]], i, params,
              0 if kind == "additive" else dim - dim // 2)  # fmt: skip
        parts.append(t)
    base = UnconditionalDistribution(DiagNormal, torch.zeros(dim), torch.ones(dim), buffer=True)
    flow = Flow(parts, base)
    return _Peer(flow, lambda x: flow.transform().call_and_ladj(x),
                 lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))  # fmt: skip


def nflows_flow(spec, params, kind: str, hidden: int) -> _Peer:
    import torch
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AdditiveCouplingTransform, AffineCouplingTransform
    from nflows.transforms.permutations import Permutation

    class ContextMLP(MLP):
        """nflows' MLP, taking (and ignoring) the context its couplings pass."""

        def forward(self, inputs, context=None):
            return super().forward(inputs)

    class SigmoidAffineCoupling(AffineCouplingTransform):
        """nflows' affine coupling with scale sigmoid(s + 2), without its + 1e-3."""

        def _scale_and_shift(self, transform_params):
            n = self.num_transform_features
            return torch.sigmoid(transform_params[:, n:] + 2.0), transform_params[:, :n]

    dim = spec.dim
    mask = torch.tensor([0] * (dim // 2) + [1] * (dim - dim // 2))  # <= 0: passed through
    make_net = lambda n_in, n_out: ContextMLP((n_in,), (n_out,), hidden_sizes=[hidden, hidden])  # noqa: E731
    coupling = AdditiveCouplingTransform if kind == "additive" else SigmoidAffineCoupling
    parts = []
    for i, layer in enumerate(spec.layers):
        if layer.type == "permutation":
            parts.append(Permutation(torch.as_tensor(layer.indices), dim=1))
            continue
        t = coupling(mask, make_net)
        net = t.transform_net
        _load([net._input_layer, net._hidden_layers[0], net._output_layer], i, params)
        parts.append(t)
    flow = Flow(CompositeTransform(parts), StandardNormal([dim]))
    return _Peer(flow, lambda x: flow._transform(x), flow.log_prob, flow.sample)


def normflows_flow(spec, params, kind: str, hidden: int) -> _Peer:
    import normflows as nf
    import numpy as np
    import torch

    dim = spec.dim
    split, n = dim // 2, dim - dim // 2
    if dim % 2:  # its "channel" split passes ceil(D / 2) entries
        raise ValueError(f"normflows rows need an even dimension, got {dim}")
    flows = []
    for i, layer in enumerate(spec.layers):
        if layer.type == "permutation":
            perm = nf.flows.Permute(dim, mode="shuffle")
            with torch.no_grad():
                perm.perm.copy_(torch.as_tensor(layer.indices))
                perm.inv_perm.copy_(torch.as_tensor(np.argsort(layer.indices)))
            flows.append(perm)
            continue
        out = n if kind == "additive" else 2 * n
        mlp = nf.nets.MLP([split, hidden, hidden, out], leaky=0.0)  # LeakyReLU(0) is ReLU
        _load([mlp.net[0], mlp.net[2], mlp.net[4]], i, params, 0 if kind == "additive" else n)
        flows.append(nf.flows.AffineCouplingBlock(mlp, scale=kind != "additive", scale_map="exp",
                                                  split_mode="channel"))  # fmt: skip
    model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(dim, trainable=False), flows=flows)
    return _Peer(model, model.forward_and_log_det, model.log_prob, model.sample)


BUILDERS = {"zuko": zuko_flow, "nflows": nflows_flow, "normflows": normflows_flow}


def flowbridge_flow(spec, params, peer: str) -> _Peer:
    """flowbridge-Pyro's side of a peer's rows: the same flow, its distribution in the
    peer's orientation (``[flow.inv]`` where the peer's transform maps data to noise)."""
    import pyro.distributions as dist
    import torch

    import flowbridge as fb

    flow = fb.to_pyro(spec, params)
    base = dist.Normal(torch.zeros(spec.dim), 1.0).to_event(1)
    normalizing = PEERS[peer][1] == "data->noise"
    d = dist.TransformedDistribution(base, [flow.inv if normalizing else flow])
    return _Peer(flow, lambda x: _with_log_det(flow, x), d.log_prob, lambda n: d.sample((n,)))


def torch_worker(cfg: dict, threads: int, repeats: int, min_time: float):
    """Time each installed peer and flowbridge-Pyro on the same flow, interleaved; rows
    are ``{"impl": peer or "flowbridge-pyro", "peer", "kind", "op", "seconds"}``."""
    import torch

    torch.set_num_threads(threads)
    dim, b = cfg["dim"], cfg["batch"]
    xs = [torch.randn(b, dim) for _ in range(2)]
    counter = itertools.count()

    def x():  # two inputs in turn: no single-entry cache answers
        return xs[next(counter) % 2]

    versions = {k: v for k, v in installed().items() if v}
    todo, checks = {}, {}
    for kind, peer in itertools.product(KINDS, versions):
        spec, params = flow_and_params(cfg, scale_of(peer, kind))
        ours = flowbridge_flow(spec, params, peer)
        theirs = BUILDERS[peer](spec, params, kind, cfg["hidden"])
        checks[f"{peer}/{kind}"] = _check_equal(ours, theirs, xs[0])
        for impl, flow in (("flowbridge-pyro", ours), (peer, theirs)):
            for op, fn in _ops(flow, x, b).items():
                todo[(f"{impl}|{peer}|{kind}", op)] = fn
    rows = []
    for row in timeit_many(todo, repeats, min_time):
        impl, peer, kind = row["impl"].split("|")
        rows.append({**row, "impl": impl, "peer": peer, "kind": kind})
    info = {"torch": torch.__version__, "threads": threads, "peers": versions,
            "max_difference": checks}  # fmt: skip
    return rows, info


def _with_log_det(flow, x):
    y = flow(x)
    return y, flow.log_abs_det_jacobian(x, y)


def _check_equal(ours: _Peer, theirs: _Peer, x) -> float:
    """The largest difference between the two flows' map, log-det and log_prob at ``x``;
    an AssertionError above 1e-4 (relative to each quantity's size)."""
    import torch

    with torch.no_grad():
        pairs = list(zip(ours.forward(x.clone()), theirs.forward(x.clone()), strict=True))
        pairs.append((ours.log_prob(x.clone()), theirs.log_prob(x.clone())))
    worst = 0.0
    for a, b in pairs:
        assert a.shape == b.shape and torch.isfinite(a).all(), (a.shape, b.shape)
        scale = 1.0 + b.abs().max().item()
        worst = max(worst, (a - b).abs().max().item() / scale)
    assert worst < 1e-4, f"the peer's flow differs from flowbridge's: {worst:.3g}"
    return worst


def _ops(flow: _Peer, x, b: int) -> dict:
    import torch

    opt = torch.optim.Adam(flow.module.parameters(), lr=1e-5)

    def forward():
        with torch.no_grad():
            return flow.forward(x())

    def log_prob():
        with torch.no_grad():
            return flow.log_prob(x())

    def sample():
        with torch.no_grad():
            return flow.sample(b)

    def train():
        opt.zero_grad(set_to_none=True)
        (-flow.log_prob(x()).mean()).backward()
        opt.step()

    return {"forward": forward, "log_prob": log_prob, "sample": sample, "train": train}


def _table(results: dict) -> dict:
    """{(kind, peer): {impl: {op: seconds}}} of the peer runs."""
    out: dict = {}
    for run in results["runs"]:
        if run["group"] != "torch-peers":
            continue
        for r in run["rows"]:
            out.setdefault((r["kind"], r["peer"]), {}).setdefault(r["impl"], {})[r["op"]] = r["seconds"]
    return out


def ratios(results: dict) -> list[dict]:
    """flowbridge-Pyro's time over each peer's, per kind and op (< 1: flowbridge faster)."""
    return [{"kind": kind, "peer": peer, "op": op,
             "ratio": impls["flowbridge-pyro"][op] / impls[peer][op]}
            for (kind, peer), impls in _table(results).items() for op in OPS]  # fmt: skip


def markdown(results: dict) -> list[str]:
    """The peer section of the benchmark's Markdown (empty without peer runs)."""
    table = _table(results)
    if not table:
        return []
    run = next(r for r in results["runs"] if r["group"] == "torch-peers")
    info = run["info"]
    cfg = run["config"]
    lines = ["", f"## Peers (D={cfg['dim']}, couplings={cfg['couplings']}, "
             f"hidden={cfg['hidden']}, batch={cfg['batch']})", "",
             "Each peer and flowbridge-Pyro run the same flow with the same weights, checked "
             "equal before timing (largest difference, relative to size: "
             + ", ".join(f"{k} {v:.1e}" for k, v in info["max_difference"].items())
             + "). Times in ms; the ratio is flowbridge-Pyro's time over the peer's "
             "(below 1: flowbridge is faster). Versions: "
             + ", ".join(f"{k} {v}" for k, v in info["peers"].items()) + ".", "",
             "| coupling | peer | configuration | " + " | ".join(OPS) + " |",
             "| --- | --- | --- |" + " --- |" * len(OPS)]  # fmt: skip
    for (kind, peer), impls in table.items():
        what = PEERS[peer][2] if kind == "affine" else "additive coupling, exact"
        cells = []
        for op in OPS:
            ours, theirs = impls["flowbridge-pyro"][op], impls[peer][op]
            cells.append(f"{ours * 1e3:.3g} vs {theirs * 1e3:.3g} ({ours / theirs:.2f}x)")
        lines.append(f"| {kind} | {peer} | {what} | " + " | ".join(cells) + " |")
    return lines


def plot(results: dict, path) -> None:
    """Bars: each peer's time over flowbridge-Pyro's, per op and kind (above 1: slower)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _table(results)
    if not table:
        return
    fig, ax = plt.subplots(figsize=(11, 4))
    keys = list(table)
    for k, op in enumerate(OPS):
        speedups = [table[key][key[1]][op] / table[key]["flowbridge-pyro"][op] for key in keys]
        ax.bar([j + 0.2 * k for j in range(len(keys))], speedups, width=0.2, label=op)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.3 for j in range(len(keys))], [f"{p}\n{k}" for k, p in keys], fontsize=8)
    ax.set_ylabel("peer time / flowbridge-Pyro time")
    ax.set_title("Peers on the same flow and weights (above 1: flowbridge-Pyro is faster)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
