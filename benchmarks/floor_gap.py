"""Where a training step's time beyond the floor goes: from the conditioner MLPs alone to
the whole flow, one piece at a time, in JAX and in torch.

    python benchmarks/floor_gap.py --out benchmarks/results            # full run
    python benchmarks/floor_gap.py --small --repeats 1 --min-time 0.01 --out DIR  # smoke

The benchmark's floors (:mod:`flowbridge.bench.vector`) run every coupling's conditioner
MLP once, all on the same input, and train them (backward with the input's gradient, an
Adam step). Issue #31 asks flowbridge's training step for 1.05x that floor. This script
times the training steps of a ladder of hand-written programs between the floor and the
flow, each step adding one piece, with the same weights, in one process per framework,
interleaved round by round (:func:`flowbridge.bench.core.timeit_many`):

- ``floor``: the benchmark's floor;
- ``chain``: the MLPs in sequence, as a flow runs them: each coupling reads the half the
  previous one wrote, ``x_b = y_b - shift - s`` (every output used; no log-det, no
  permutation), trained on ``-mean(log_prob)`` of a standard normal base;
- ``affine``: the affine coupling's arithmetic added, ``x_b = (y_b - shift) * exp(-s)``
  and the log-det ``-sum(s)``;
- ``affine + permutations``: the permutations between couplings added: the benchmark's
  flow written by hand (its ``log_prob`` checked equal to flowbridge's first);
- ``flowbridge``: the generated flow, ``inverse_with_log_det``; in torch also through
  Pyro's ``TransformedDistribution.log_prob`` (``flowbridge (Pyro distribution)``), as the
  benchmark's Pyro row trains.

JAX forms are jitted, their couplings one ``lax.scan`` over stacked weights (as flowbridge
and flowjax run them); torch forms run eagerly, 2 threads. The flow: D=64, 8 couplings,
hidden 256 x 2 (ReLU), batch 1024, float32, exp scale (``--small``: D 8, 3 couplings,
hidden 16, batch 32). Results: ``floor_gap.{md,json}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

FORMS = ("floor", "chain", "affine", "affine + permutations", "flowbridge")


def _setup(small: bool):
    import numpy as np

    from flowbridge.bench.core import flow_and_params

    cfg = {"dim": 8, "couplings": 3, "hidden": 16, "batch": 32} if small else {
        "dim": 64, "couplings": 8, "hidden": 256, "batch": 1024}  # fmt: skip
    spec, params = flow_and_params(cfg, "exp")
    couplings = range(0, 2 * cfg["couplings"] - 1, 2)
    weights = [[(params[f"layers.{i}.conditioner.{j}.kernel"],
                 params[f"layers.{i}.conditioner.{j}.bias"]) for j in range(3)]
               for i in couplings]  # fmt: skip
    # the permutation read before each coupling in the inverse pass (the last: none)
    perms = [np.asarray(spec.layers[i].indices) for i in range(1, 2 * cfg["couplings"] - 1, 2)]
    inverse_perms = [np.argsort(p) for p in perms] + [np.arange(cfg["dim"])]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((cfg["batch"], cfg["dim"])).astype(np.float32) for _ in range(2)]
    return cfg, spec, params, weights, inverse_perms, xs


def jax_worker(small: bool, repeats: int, min_time: float) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.example_libraries import optimizers

    import flowbridge as fb
    from flowbridge.bench.core import timeit_many

    cfg, spec, params, weights, inverse_perms, xs = _setup(small)
    dim, split = cfg["dim"], cfg["dim"] // 2
    stacked = [tuple(jnp.asarray(np.stack([w[j][k] for w in weights])) for k in (0, 1))
               for j in range(3)]  # fmt: skip
    inv = jnp.asarray(np.stack(inverse_perms))
    xs = [jnp.asarray(x) for x in xs]
    half = 0.5 * dim * np.log(2 * np.pi)

    def mlp(layer, h):
        for j, (kernel, bias) in enumerate(layer):
            h = h @ kernel + bias
            h = jax.nn.relu(h) if j < 2 else h
        return h

    def floor_loss(w, x):  # the benchmark's floor: upstream ones, the input's gradient too
        return jnp.sum(jax.lax.scan(lambda _, layer: (None, mlp(layer, x[..., :split])), None, w)[1])

    def hand_log_prob(piece):
        def log_prob(w, y):
            def one(carry, layer):
                y, ld = carry
                lw, ip = layer
                if piece == "affine + permutations":
                    y = jnp.take(y, ip, axis=-1)
                y_a, y_b = y[..., :split], y[..., split:]
                out = mlp(lw, y_a)
                shift, s = out[..., : dim - split], out[..., dim - split :]
                if piece == "chain":
                    return (jnp.concatenate([y_a, y_b - shift - s], -1), ld), None
                x = jnp.concatenate([y_a, (y_b - shift) * jnp.exp(-s)], -1)
                return (x, ld - jnp.sum(s, -1)), None

            start = (y, jnp.zeros(y.shape[:-1], y.dtype))
            (z, ld), _ = jax.lax.scan(one, start, (w, inv), reverse=True)
            return -0.5 * jnp.sum(z**2, -1) - half + ld

        return log_prob

    flow = fb.to_jax(spec, params)

    def flow_log_prob(f, y):
        z, ld = f.inverse_with_log_det(y)
        return -0.5 * jnp.sum(z**2, -1) - half + ld

    want = np.asarray(flow_log_prob(flow, xs[0]))
    got = np.asarray(hand_log_prob("affine + permutations")(stacked, xs[0]))
    assert np.abs(got - want).max() <= 1e-4 * (1 + np.abs(want).max()), "the hand flow differs"

    def trainer(loss, held, argnums=0):
        init, update, get = optimizers.adam(1e-5)
        state = [init(held)]

        @jax.jit
        def step(opt, x):
            grads = jax.grad(loss, argnums=argnums)(get(opt), x)
            if isinstance(argnums, tuple):  # the input's gradient returned, so XLA keeps it
                return update(0, grads[0], opt), grads[1]
            return update(0, grads, opt), jnp.zeros(())

        counter = itertools.count()

        def train():
            state[0], out = step(state[0], xs[next(counter) % 2])
            return jax.block_until_ready((state[0], out))

        return train

    mean_nll = lambda lp: lambda w, x: -jnp.mean(lp(w, x))  # noqa: E731
    todo = {("floor", "train"): trainer(floor_loss, stacked, argnums=(0, 1))}
    for piece in ("chain", "affine", "affine + permutations"):
        todo[(piece, "train")] = trainer(mean_nll(hand_log_prob(piece)), stacked)
    todo[("flowbridge", "train")] = trainer(mean_nll(flow_log_prob), flow)
    rows = timeit_many(todo, repeats, min_time)
    return {"times": {r["impl"]: r["seconds"] for r in rows}, "version": f"JAX {jax.__version__}"}


def torch_worker(small: bool, repeats: int, min_time: float) -> dict:
    import numpy as np
    import pyro.distributions as dist
    import torch

    import flowbridge as fb
    from flowbridge.bench.core import timeit_many

    torch.set_num_threads(2)
    cfg, spec, params, weights, inverse_perms, xs = _setup(small)
    dim, split = cfg["dim"], cfg["dim"] // 2
    xs = [torch.as_tensor(x) for x in xs]
    half = 0.5 * dim * np.log(2 * np.pi)
    inv = [torch.as_tensor(p) for p in inverse_perms]

    def fresh():  # each form's own weights: its Adam moves them
        return [[(torch.tensor(k, requires_grad=True), torch.tensor(b, requires_grad=True))
                 for k, b in layer] for layer in weights]  # fmt: skip

    def mlp(layer, h):
        for j, (kernel, bias) in enumerate(layer):
            h = torch.addmm(bias, h, kernel)
            h = torch.relu(h) if j < 2 else h
        return h

    def hand_log_prob(piece, w, y):
        ld = y.new_zeros(y.shape[:-1])
        for i in reversed(range(len(w))):
            if piece == "affine + permutations" and i < len(w) - 1:
                y = y[..., inv[i]]
            y_a, y_b = y[..., :split], y[..., split:]
            out = mlp(w[i], y_a)
            shift, s = out[..., : dim - split], out[..., dim - split :]
            if piece == "chain":
                y = torch.cat([y_a, y_b - shift - s], -1)
                continue
            y = torch.cat([y_a, (y_b - shift) * torch.exp(-s)], -1)
            ld = ld - s.sum(-1)
        return -0.5 * (y**2).sum(-1) - half + ld

    flow = fb.to_pyro(spec, params)

    def flow_log_prob(y):
        z, ld = flow.inverse_with_log_det(y)
        return -0.5 * (z**2).sum(-1) - half + ld

    with torch.no_grad():
        want = flow_log_prob(xs[0].clone())
        got = hand_log_prob("affine + permutations", fresh(), xs[0])
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + want.abs().max().item()))

    counter = itertools.count()

    def trainer(loss, tensors):
        opt = torch.optim.Adam(tensors, lr=1e-5)

        def train():
            opt.zero_grad(set_to_none=True)
            x = xs[next(counter) % 2].clone()  # a fresh tensor: no cache answers
            loss(x).backward()
            opt.step()

        return train

    floor_w = fresh()

    def floor_loss(x):
        x.requires_grad_()
        return sum(mlp(layer, x[..., :split]).sum() for layer in floor_w)

    todo = {("floor", "train"): trainer(floor_loss, [t for layer in floor_w for p in layer for t in p])}
    for piece in ("chain", "affine", "affine + permutations"):
        w = fresh()
        todo[(piece, "train")] = trainer(lambda x, piece=piece, w=w: -hand_log_prob(piece, w, x).mean(),
                                         [t for layer in w for p in layer for t in p])  # fmt: skip
    todo[("flowbridge", "train")] = trainer(lambda x: -flow_log_prob(x).mean(), list(flow.parameters()))
    other = fb.to_pyro(spec, params)  # its own weights, in Pyro's distribution
    density = dist.TransformedDistribution(dist.Normal(torch.zeros(dim), 1.0).to_event(1), [other])
    todo[("flowbridge (Pyro distribution)", "train")] = trainer(
        lambda x: -density.log_prob(x).mean(), list(other.parameters()))
    rows = timeit_many(todo, repeats, min_time)
    return {"times": {r["impl"]: r["seconds"] for r in rows}, "version": f"torch {torch.__version__}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--small", action="store_true", help="a tiny flow (smoke test)")
    parser.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work = jax_worker if args.worker == "jax" else torch_worker
        print("GAP " + json.dumps(work(args.small, args.repeats, args.min_time)))
        return

    from flowbridge.bench.core import machine

    runs = {}
    for framework in ("jax", "torch"):
        cmd = [sys.executable, __file__, "--worker", framework, "--repeats", str(args.repeats),
               "--min-time", str(args.min_time)] + ["--small"] * args.small  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        runs[framework] = json.loads(next(ln for ln in out.splitlines() if ln.startswith("GAP "))[4:])
    size = "D=8, 3 couplings, hidden 16, batch 32" if args.small else (
        "D=64, 8 couplings, hidden 256 x 2, batch 1024")  # fmt: skip
    lines = [
        "# A training step from the floor to the flow (`python benchmarks/floor_gap.py"
        + " --small" * args.small + f" --repeats {args.repeats} --min-time {args.min_time}"
        + " --out benchmarks/results`)",
        "",
        f"{size}, float32, exp scale; {machine().get('cpu', '?')}; each framework in its own "
        f"process, its forms timed interleaved (medians of {args.repeats} rounds, `--min-time "
        f"{args.min_time}`): {runs['jax']['version']} (jitted, couplings scanned), "
        f"{runs['torch']['version']} (eager, 2 threads). Milliseconds per training step "
        "(`-mean(log_prob)`, backward, Adam; the floor's as the benchmark's), the form's time "
        "over the floor's, and the step the piece adds.",
        "",
        "| form | JAX | JAX: added | torch | torch: added |",
        "| --- | --- | --- | --- | --- |",
    ]
    forms = [*FORMS, "flowbridge (Pyro distribution)"]
    for k, form in enumerate(forms):
        cells = []
        for framework in ("jax", "torch"):
            times = runs[framework]["times"]
            if form not in times:
                cells += ["", ""]
                continue
            t, floor = times[form], times["floor"]
            before = times.get(forms[k - 1]) if k and form in FORMS else None
            cells += [f"{1e3 * t:.2f} ({t / floor:.2f}x)",
                      f"{(t - before) / floor:+.2f}" if before else ""]  # fmt: skip
        lines.append(f"| {form} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "floor_gap.md").write_text("\n".join(lines) + "\n")
    (args.out / "floor_gap.json").write_text(json.dumps({"runs": runs, "machine": machine()},
                                                        indent=1) + "\n")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
