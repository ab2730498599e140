"""Spline couplings timed: flowbridge-Pyro against native Pyro with the same weights, beside
zuko's and nflows' spline coupling flows of the same sizes, and flowbridge-JAX.

    python benchmarks/splines.py --out benchmarks/results      # writes splines.md

The flow: ``D`` entries, ``L`` couplings that pass the first ``D // 2`` entries, a fixed
permutation between couplings, conditioners ``D//2 -> hidden -> hidden -> spline
parameters`` with ReLU, ``K`` rational-quadratic bins on [-3, 3]. Native Pyro's flow is
``SplineCoupling(order="quadratic", identity=True)`` with ``DenseNN`` and ``Permute``, its
weights drawn at random; flowbridge's is ``fb.from_pyro_native`` of it, so both hold the
same weights, and the worker checks their forward, log-det and log-density agree (float32,
1e-4 relative) before timing. zuko's ``NSF(passes=2)`` (a coupling flow of the same sizes,
its own conventions: soft-clipped raw parameters, exp derivatives) and nflows'
``PiecewiseRationalQuadraticCouplingTransform`` (per-entry parameter layout, raw widths
scaled by 1/sqrt(hidden)) cannot hold these weights; they are timed at the same sizes, not
checked. flowbridge-JAX runs the same spec and weights under ``jax.jit`` (checked against
flowbridge-Pyro). Operations: ``forward`` (the map and its log-det), ``log_prob`` (the
density: Pyro's ``TransformedDistribution`` inverts the flow, zuko's and nflows'
transforms map data to noise, so each evaluates its own direction), ``train`` (log_prob,
backward, an Adam step). Each framework runs in its own process, 2 threads; the timing
loop is ``flowbridge.bench.core.timeit_many`` (interleaved rounds, median of 7).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

SIZES = {"dim": 16, "couplings": 4, "hidden": 128, "bins": 8, "batch": 1024}


def _native(cfg):
    """Native Pyro's spline coupling flow, random weights (float32)."""
    import torch
    from pyro.distributions.torch_transform import ComposeTransformModule
    from pyro.distributions.transforms import Permute, SplineCoupling
    from pyro.nn import DenseNN

    torch.manual_seed(0)
    d, k, h = cfg["dim"], cfg["bins"], cfg["hidden"]
    split, n = d // 2, d - d // 2
    parts = []
    for i in range(cfg["couplings"]):
        net = DenseNN(split, [h, h], param_dims=[n * k, n * k, n * (k - 1)])
        parts.append(SplineCoupling(d, split, net, count_bins=k, bound=3.0, order="quadratic",
                                    identity=True))  # fmt: skip
        if i < cfg["couplings"] - 1:
            parts.append(Permute(torch.randperm(d)))
    flow = ComposeTransformModule(parts)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(0.5)  # non-identity, not saturated
    return flow


def torch_worker(cfg, repeats, min_time):
    import numpy as np
    import pyro.distributions as dist
    import torch

    import flowbridge as fb
    from flowbridge.bench.core import timeit_many
    from flowbridge.bench.peers import data_to_noise_ops

    torch.set_num_threads(2)
    d, b = cfg["dim"], cfg["batch"]
    native = _native(cfg)
    spec, params = fb.from_pyro_native(native)
    ours = fb.to_pyro(spec, {k: v.astype(np.float32) for k, v in params.items()})
    base = dist.Normal(torch.zeros(d), torch.ones(d)).to_event(1)
    xs = [torch.randn(b, d) for _ in range(2)]
    counter = itertools.count()

    def x():  # two inputs in turn: Pyro's single-entry caches never answer
        return xs[next(counter) % 2]

    # checked equal before timing
    with torch.no_grad():
        worst = 0.0
        y0, y1 = native(xs[0].clone()), ours(xs[0].clone())
        pairs = [(y0, y1), (native.log_abs_det_jacobian(xs[0], y0), ours.log_abs_det_jacobian(
            xs[0], y1)), (dist.TransformedDistribution(base, [native]).log_prob(xs[1].clone()),
                          dist.TransformedDistribution(base, [ours]).log_prob(xs[1].clone()))]
        for a, c in pairs:
            worst = max(worst, ((a - c).abs().max() / (1 + c.abs().max())).item())
    assert worst < 1e-4, worst

    def pyro_ops(flow):
        q = dist.TransformedDistribution(base, [flow])
        opt = torch.optim.Adam(flow.parameters(), lr=1e-6)

        def forward():
            with torch.no_grad():
                v = x()
                y = flow(v)
                return flow.log_abs_det_jacobian(v, y)

        def log_prob():
            with torch.no_grad():
                return q.log_prob(x())

        def train():
            opt.zero_grad(set_to_none=True)
            (-q.log_prob(x()).mean()).backward()
            opt.step()
            q.clear_cache()

        return {"forward": forward, "log_prob": log_prob, "train": train}

    todo = {}
    for impl, flow in (("flowbridge-pyro", ours), ("native-pyro", native)):
        for op, fn in pyro_ops(flow).items():
            todo[(impl, op)] = fn
    versions = {}
    try:
        import zuko

        versions["zuko"] = zuko.__version__
        flow = zuko.flows.NSF(d, bins=cfg["bins"], transforms=cfg["couplings"], passes=2,
                              hidden_features=(cfg["hidden"],) * 2)  # fmt: skip
        ops = data_to_noise_ops("zuko", flow, x)
        todo.update({("zuko", op): ops[op] for op in ("forward", "log_prob", "train")})
    except ImportError:
        pass
    try:
        from importlib import metadata

        from nflows.distributions import StandardNormal
        from nflows.flows import Flow
        from nflows.nn.nets import MLP
        from nflows.transforms import CompositeTransform, RandomPermutation
        from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform

        versions["nflows"] = metadata.version("nflows")
        mask = torch.zeros(d)
        mask[d // 2:] = 1  # nflows: 1 = transformed

        class Net(MLP):
            def forward(self, inputs, context=None):
                return super().forward(inputs)

        def net(n_in, n_out):
            return Net((n_in,), (n_out,), [cfg["hidden"]] * 2)

        parts = []
        for i in range(cfg["couplings"]):
            parts.append(PiecewiseRationalQuadraticCouplingTransform(
                mask, net, num_bins=cfg["bins"], tails="linear", tail_bound=3.0))
            if i < cfg["couplings"] - 1:
                parts.append(RandomPermutation(d))
        nf = Flow(CompositeTransform(parts), StandardNormal((d,)))
        ops = data_to_noise_ops("nflows", nf, x)
        todo.update({("nflows", op): ops[op] for op in ("forward", "log_prob", "train")})
    except ImportError:
        pass
    rows = timeit_many(todo, repeats, min_time)
    return rows, {"torch": torch.__version__, "peers": versions, "checked": worst}


def jax_worker(cfg, repeats, min_time):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    import flowbridge as fb
    from flowbridge.bench.core import timeit_many

    torch.set_num_threads(1)
    spec, params = fb.from_pyro_native(_native(cfg))
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    flow = fb.to_jax(spec, params32)
    ref = fb.to_numpy(spec, params)
    d, b = cfg["dim"], cfg["batch"]
    xs = [np.random.default_rng(i).standard_normal((b, d)).astype(np.float32) for i in (0, 1)]
    z, ld = ref.inverse_with_log_det(xs[0].astype(np.float64))
    want = -0.5 * (z**2).sum(-1) - 0.5 * d * np.log(2 * np.pi) + ld

    def log_prob(f, v):
        u, log_det = f.inverse_with_log_det(v)
        return -0.5 * jnp.sum(u**2, -1) - 0.5 * d * jnp.log(2 * jnp.pi) + log_det

    got = np.asarray(jax.jit(log_prob)(flow, xs[0]))
    worst = float(np.max(np.abs(got - want) / (1 + np.abs(want))))
    assert worst < 1e-4, worst
    fwd = jax.jit(lambda f, v: f.forward_with_log_det(v))
    lp = jax.jit(log_prob)

    @jax.jit
    def step(f, v):
        loss, grads = jax.value_and_grad(lambda g: -jnp.mean(log_prob(g, v)))(f)
        return jax.tree_util.tree_map(lambda p, g: p - 1e-6 * g, f, grads), loss

    state = {"flow": flow}
    counter = itertools.count()

    def x():
        return xs[next(counter) % 2]

    def train():
        state["flow"], loss = step(state["flow"], x())
        return loss.block_until_ready()

    todo = {("flowbridge-jax", "forward"): lambda: fwd(flow, x())[1].block_until_ready(),
            ("flowbridge-jax", "log_prob"): lambda: lp(flow, x()).block_until_ready(),
            ("flowbridge-jax", "train"): train}  # fmt: skip
    rows = timeit_many(todo, repeats, min_time)
    return rows, {"jax": jax.__version__, "checked": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="where splines.md goes")
    parser.add_argument("--worker", choices=["torch", "jax"], help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.5)
    args = parser.parse_args()
    if args.worker:
        run = torch_worker if args.worker == "torch" else jax_worker
        rows, info = run(SIZES, args.repeats, args.min_time)
        print(json.dumps({"rows": rows, "info": info}))
        return
    results, infos = [], {}
    for worker in ("torch", "jax"):  # each framework in its own process
        out = subprocess.run([sys.executable, __file__, "--worker", worker, "--repeats",
                              str(args.repeats), "--min-time", str(args.min_time)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        data = json.loads(out.stdout.strip().splitlines()[-1])
        results += data["rows"]
        infos[worker] = data["info"]
    table = {}
    for row in results:
        table.setdefault(row["impl"], {})[row["op"]] = row["seconds"] * 1e3
    native = table["native-pyro"]
    lines = [f"Spline couplings, D={SIZES['dim']}, {SIZES['couplings']} couplings, hidden "
             f"{SIZES['hidden']}x2, {SIZES['bins']} bins, batch {SIZES['batch']}, float32, 2 "
             f"threads; ms per call (ratio to native Pyro). Checked before timing: "
             f"flowbridge-Pyro vs native Pyro {infos['torch']['checked']:.1e}, flowbridge-JAX vs "
             f"the float64 reference {infos['jax']['checked']:.1e}. Peers: "
             f"{infos['torch']['peers']}.", "",
             "| impl | forward | log_prob | train |", "| --- | --- | --- | --- |"]  # fmt: skip
    for impl, ops in table.items():
        cells = [f"{ops[op]:.3g} ({ops[op] / native[op]:.2f}x)" if op in ops else ""
                 for op in ("forward", "log_prob", "train")]  # fmt: skip
        lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "splines.md").write_text(text)


if __name__ == "__main__":
    main()
