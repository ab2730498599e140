"""Autoregressive layers timed: flowbridge against native Pyro, TFP and NumPyro with the same
weights, both directions, at two sizes, beside zuko's and nflows' MAF.

    python benchmarks/autoregressive.py --out benchmarks/results   # writes autoregressive.md

The flow: ``D`` entries, ``L`` affine autoregressive layers, each a MADE ``D -> hidden ->
hidden -> 2D`` with ReLU, the orders reversed between layers. Each native flow is built
with random weights and taken over with flowbridge's importer (``fb.from_pyro_native``,
``fb.from_tfp_native``, ``fb.from_numpyro_native``), so both hold the same weights, and
the worker checks their outputs agree (float32, 1e-4 relative) before timing.

Operations: ``one_pass`` (the direction the MADE's input is given: an IAF's forward with
its log-det, Pyro's and NumPyro's sampling; a MAF's inverse with its log-det, TFP's
density), ``d_pass`` (the other direction, ``D`` passes: flowbridge's one loop against
each native's own loop), ``train`` (the one-pass direction's log-density, backward, an
optimizer step). zuko's ``MAF`` and nflows' ``MaskedAffineAutoregressiveTransform`` (MAFs,
their conventions their own: no shared weights, timed at the same sizes, not checked)
give the same three operations. Each framework runs in its own process, 2 threads; TFP's
and JAX's calls are compiled (``tf.function``, ``jax.jit``); the timing loop is
``flowbridge.bench.core.timeit_many`` (interleaved rounds, median of 7).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

SIZES = [{"dim": 8, "layers": 4, "hidden": 128, "batch": 512},
         {"dim": 32, "layers": 4, "hidden": 128, "batch": 512}]  # fmt: skip


def _reversed(d):
    return list(range(d - 1, -1, -1))


def _check(pairs):
    worst = 0.0
    for a, c in pairs:
        a, c = (float(v) for v in (abs(a - c).max(), abs(c).max()))
        worst = max(worst, a / (1 + c))
    assert worst < 1e-4, worst
    return worst


def torch_worker(cfg, repeats, min_time):
    import numpy as np
    import pyro.distributions as dist
    import torch
    from pyro.distributions.torch_transform import ComposeTransformModule
    from pyro.distributions.transforms import AffineAutoregressive
    from pyro.nn import AutoRegressiveNN

    import flowbridge as fb
    from flowbridge.bench.core import timeit_many
    from flowbridge.bench.peers import data_to_noise_ops

    torch.set_num_threads(2)
    torch.manual_seed(0)
    d, b, h = cfg["dim"], cfg["batch"], cfg["hidden"]
    parts = [AffineAutoregressive(AutoRegressiveNN(d, [h, h], permutation=torch.tensor(
        list(range(d)) if i % 2 == 0 else _reversed(d)))) for i in range(cfg["layers"])]  # fmt: skip
    native = ComposeTransformModule(parts)
    with torch.no_grad():
        for p in native.parameters():
            p.mul_(0.5)
    spec, params = fb.from_pyro_native(parts)
    ours = fb.to_pyro(spec, {k: v.astype(np.float32) for k, v in params.items()})
    base = dist.Normal(torch.zeros(d), torch.ones(d)).to_event(1)
    xs = [torch.randn(b, d) for _ in range(2)]
    counter = itertools.count()

    def x():  # two inputs in turn: Pyro's single-entry caches never answer
        return xs[next(counter) % 2]

    with torch.no_grad():
        y0, y1 = native(xs[0].clone()), ours(xs[0].clone())
        worst = _check([(y0, y1), (native.log_abs_det_jacobian(xs[0], y0),
                                   ours.log_abs_det_jacobian(xs[0], y1)),
                        (native.inv(y0.clone()), ours.inv(y0.clone()))])  # fmt: skip

    def pyro_ops(flow):
        opt = torch.optim.Adam(flow.parameters(), lr=1e-6)

        def one_pass():
            with torch.no_grad():
                v = x()
                return flow.log_abs_det_jacobian(v, flow(v))

        def d_pass():
            with torch.no_grad():
                return flow.inv(x().clone())

        def train():  # a guide's step: sample by the forward, score by its log-det
            opt.zero_grad(set_to_none=True)
            v = x()
            y = flow(v)
            (base.log_prob(v) - flow.log_abs_det_jacobian(v, y)).mean().backward()
            opt.step()

        return {"one_pass": one_pass, "d_pass": d_pass, "train": train}

    todo = {}
    for impl, flow in (("flowbridge-pyro (IAF)", ours), ("native-pyro (IAF)", native)):
        for op, fn in pyro_ops(flow).items():
            todo[(impl, op)] = fn
    versions = {}
    try:
        import zuko

        versions["zuko"] = zuko.__version__
        zflow = zuko.flows.MAF(d, transforms=cfg["layers"], hidden_features=(h, h))
        ops = data_to_noise_ops("zuko", zflow, x)
        todo.update({("zuko (MAF)", "one_pass"): ops["forward"],
                     ("zuko (MAF)", "d_pass"): ops["inverse"],
                     ("zuko (MAF)", "train"): ops["train"]})  # fmt: skip
    except ImportError:
        pass
    try:
        from importlib import metadata

        from nflows.distributions import StandardNormal
        from nflows.flows import Flow
        from nflows.transforms import CompositeTransform, ReversePermutation
        from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform

        versions["nflows"] = metadata.version("nflows")
        layers = []
        for i in range(cfg["layers"]):
            layers.append(MaskedAffineAutoregressiveTransform(d, h, num_blocks=2))
            if i < cfg["layers"] - 1:
                layers.append(ReversePermutation(d))
        nf = Flow(CompositeTransform(layers), StandardNormal((d,)))
        ops = data_to_noise_ops("nflows", nf, x)
        todo.update({("nflows (MAF)", "one_pass"): ops["forward"],
                     ("nflows (MAF)", "d_pass"): ops["inverse"],
                     ("nflows (MAF)", "train"): ops["train"]})  # fmt: skip
    except ImportError:
        pass
    rows = timeit_many(todo, repeats, min_time)
    return rows, {"torch": torch.__version__, "peers": versions, "checked": worst}


def tf_worker(cfg, repeats, min_time):
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras

    import flowbridge as fb
    from flowbridge.bench.core import timeit_many

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tfb = tfp.bijectors
    d, b, h = cfg["dim"], cfg["batch"], cfg["hidden"]
    init = tf_keras.initializers.RandomNormal(0.0, 0.05, seed=0)
    mafs = []
    for i in range(cfg["layers"]):
        made = tfb.AutoregressiveNetwork(params=2, hidden_units=[h, h], activation="relu",
                                         input_order="left-to-right" if i % 2 == 0
                                         else "right-to-left", kernel_initializer=init)  # fmt: skip
        mafs.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made))
    native = tfb.Chain(mafs[::-1])
    xs = [tf.constant(np.random.default_rng(i).standard_normal((b, d)), tf.float32)
          for i in (0, 1)]  # fmt: skip
    native.inverse(xs[0])  # builds the networks
    spec, params = fb.from_tfp_native(native)
    ours = fb.to_tfp(spec, {k: v.astype(np.float32) for k, v in params.items()})
    worst = _check([(native.inverse(xs[0]).numpy(), ours.inverse(xs[0]).numpy()),
                    (native.forward(xs[1]).numpy(), ours.forward(xs[1]).numpy())])
    counter = itertools.count()

    def x():
        return xs[next(counter) % 2]

    def tf_ops(flow):  # the flow is captured, not an argument: tf.function traces once
        dist = tfp.distributions.TransformedDistribution(
            tfp.distributions.MultivariateNormalDiag(tf.zeros(d)), flow)
        opt = tf_keras.optimizers.Adam(1e-6)
        one = tf.function(lambda v: flow.inverse_log_det_jacobian(v, event_ndims=1)
                          + tf.reduce_sum(flow.inverse(v), -1))  # fmt: skip
        many = tf.function(lambda v: flow.forward(v))

        @tf.function
        def step(v):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(dist.log_prob(v))
            variables = flow.trainable_variables
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss

        return {"one_pass": lambda: one(x()).numpy(), "d_pass": lambda: many(x()).numpy(),
                "train": lambda: step(x()).numpy()}

    todo = {}
    for impl, flow in (("flowbridge-tfp (MAF)", ours), ("native-tfp (MAF)", native)):
        for op, fn in tf_ops(flow).items():
            todo[(impl, op)] = fn
    rows = timeit_many(todo, repeats, min_time)
    return rows, {"tensorflow": tf.__version__, "checked": worst}


def jax_worker(cfg, repeats, min_time):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from numpyro.distributions.flows import InverseAutoregressiveTransform
    from numpyro.nn import AutoregressiveNN

    import flowbridge as fb
    from flowbridge.bench.core import timeit_many

    d, b, h = cfg["dim"], cfg["batch"], cfg["hidden"]
    nets, weights, perms = [], [], []
    for i in range(cfg["layers"]):
        perm = np.arange(d) if i % 2 == 0 else np.arange(d)[::-1].copy()
        init, apply = AutoregressiveNN(d, [h, h], permutation=perm)
        _, w = init(jax.random.PRNGKey(i), (d,))
        nets.append(apply)
        weights.append(jax.tree_util.tree_map(lambda a: 0.5 * a, w))
        perms.append(perm)

    def native_flow(ws):
        return [InverseAutoregressiveTransform(lambda v, a=a, w=w: a(w, v))
                for a, w in zip(nets, ws, strict=True)]  # fmt: skip

    spec, params = fb.from_numpyro_native(native_flow(weights), weights, hidden_dims=[h, h],
                                          permutations=perms)  # fmt: skip
    ours = fb.to_jax(spec, {k: v.astype(np.float32) for k, v in params.items()})
    xs = [np.random.default_rng(i).standard_normal((b, d)).astype(np.float32) for i in (0, 1)]

    def native_forward(ws, v):
        total = 0.0
        for t in native_flow(ws):
            y, inter = t.call_with_intermediates(v)
            total = total + t.log_abs_det_jacobian(v, y, inter)
            v = y
        return v, total

    def native_inverse(ws, v):
        for t in reversed(native_flow(ws)):
            v = t.inv(v)
        return v

    worst = _check([(np.asarray(jax.jit(native_forward)(weights, xs[0])[0]),
                     np.asarray(jax.jit(lambda f, v: f.forward_with_log_det(v))(ours, xs[0])[0])),
                    (np.asarray(jax.jit(native_inverse)(weights, xs[1])),
                     np.asarray(jax.jit(lambda f, v: f.inverse(v))(ours, xs[1])))])  # fmt: skip
    counter = itertools.count()

    def x():
        return xs[next(counter) % 2]

    def guide_loss(one):
        def loss(w, v):
            y, log_det = one(w, v)
            return jnp.mean(-0.5 * jnp.sum(v**2, -1) - log_det)
        return loss

    todo = {}
    for impl, state, one, many in (
        ("flowbridge-jax (IAF)", ours, lambda f, v: f.forward_with_log_det(v),
         lambda f, v: f.inverse(v)),
        ("native-numpyro (IAF)", weights, native_forward, native_inverse),
    ):  # fmt: skip
        one_j, many_j = jax.jit(one), jax.jit(many)
        grad = jax.jit(jax.value_and_grad(guide_loss(one)))

        @jax.jit
        def step(w, v, grad=grad):
            loss, g = grad(w, v)
            return jax.tree_util.tree_map(lambda p, q: p - 1e-6 * q, w, g), loss

        box = {"w": state}

        def train(box=box, step=step):
            box["w"], loss = step(box["w"], x())
            return loss.block_until_ready()

        todo[(impl, "one_pass")] = lambda f=one_j, s=state: f(s, x())[1].block_until_ready()
        todo[(impl, "d_pass")] = lambda f=many_j, s=state: f(s, x()).block_until_ready()
        todo[(impl, "train")] = train
    rows = timeit_many(todo, repeats, min_time)
    return rows, {"jax": jax.__version__, "checked": worst}


WORKERS = {"torch": torch_worker, "tf": tf_worker, "jax": jax_worker}
NATIVE = {"flowbridge-pyro (IAF)": "native-pyro (IAF)", "flowbridge-tfp (MAF)": "native-tfp (MAF)",
          "flowbridge-jax (IAF)": "native-numpyro (IAF)"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="where autoregressive.md goes")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--sizes", type=int, default=len(SIZES), help="how many of SIZES to run")
    args = parser.parse_args()
    if args.worker:
        rows, info = WORKERS[args.worker](SIZES[args.size], args.repeats, args.min_time)
        print(json.dumps({"rows": rows, "info": info}))
        return
    lines = []
    for k, cfg in enumerate(SIZES[: args.sizes]):
        results, infos = [], {}
        for worker in WORKERS:  # each framework in its own process
            out = subprocess.run([sys.executable, __file__, "--worker", worker, "--size", str(k),
                                  "--repeats", str(args.repeats), "--min-time",
                                  str(args.min_time)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            data = json.loads(out.stdout.strip().splitlines()[-1])
            results += data["rows"]
            infos[worker] = data["info"]
        table = {}
        for row in results:
            table.setdefault(row["impl"], {})[row["op"]] = row["seconds"] * 1e3
        checked = ", ".join(f"{w} {i['checked']:.1e}" for w, i in infos.items())
        lines += [f"D={cfg['dim']}, {cfg['layers']} layers, MADE hidden {cfg['hidden']}x2, "
                  f"batch {cfg['batch']}, float32, 2 threads; ms per call (flowbridge's ratio "
                  f"to the native with the same weights). Checked before timing (worst "
                  f"relative difference): {checked}. Peers: {infos['torch']['peers']}.", "",
                  "| impl | one_pass | d_pass | train |", "| --- | --- | --- | --- |"]  # fmt: skip
        for impl, ops in table.items():
            native = table.get(NATIVE.get(impl, ""), {})
            cells = [f"{ops[op]:.3g}" + (f" ({ops[op] / native[op]:.2f}x)" if op in native else "")
                     for op in ("one_pass", "d_pass", "train")]  # fmt: skip
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "autoregressive.md").write_text(text)


if __name__ == "__main__":
    main()
