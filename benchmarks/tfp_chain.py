"""flowbridge-TFP's one-pass chain against a plain ``tfb.Chain`` of the same layers.

    python benchmarks/tfp_chain.py --out benchmarks/results
    python benchmarks/tfp_chain.py --small --repeats 1 --min-time 0.01 --out DIR   # smoke

The generated flow (``FlowChain``) runs its layers in one pass: the input checked once,
every layer's traced body called in one loop, the log-det kept in TFP's cache beside the
output, so ``log_prob`` (the inverse, then its log-det) and a forward followed by its
log-det run the flow once. A plain ``tfb.Chain(flow.bijectors)`` (what the generated
flow was before) calls each layer through TFP's machinery and walks the layers again
for the log-det; a layer reuses the log-det traced with its output inside
``tf.function`` only, so eagerly it runs every conditioner twice.

Operations on the benchmark's target flow (D=64, 8 couplings, hidden 256 x 2, batch
1024, float32, exp scale): ``forward`` (forward and its log-det), ``log_prob`` (a
``TransformedDistribution`` over a standard normal) and ``train`` (the gradient of
``-mean(log_prob)`` and an Adam step), each eagerly and in ``tf.function``; and the number
of operations in the traced graph of ``log_prob``. Values are
checked equal before timing; both forms are timed interleaved in one process
(:func:`flowbridge.bench.core.timeit_many`). ``--small``: D 8, 3 couplings, hidden 16,
batch 32.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OPS = ("forward", "log_prob", "train")
MODES = ("eager", "tf.function")


def run(small: bool, repeats: int, min_time: float) -> dict:
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras

    import flowbridge as fb
    from flowbridge.bench.core import flow_and_params, timeit_many

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    cfg = {"dim": 8, "couplings": 3, "hidden": 16, "batch": 32} if small else {
        "dim": 64, "couplings": 8, "hidden": 256, "batch": 1024}  # fmt: skip
    spec, params = flow_and_params(cfg, "exp")
    flow = fb.to_tfp(spec, params)
    forms = {"one pass": flow, "plain Chain": tfp.bijectors.Chain(list(flow.bijectors))}
    rng = np.random.default_rng(0)
    xs = [
        tf.constant(rng.standard_normal((cfg["batch"], cfg["dim"])), tf.float32) for _ in range(2)
    ]
    base = tfp.distributions.MultivariateNormalDiag(loc=tf.zeros(cfg["dim"]))
    todo, checks, ops, counter = {}, {}, {}, iter(range(10**9))
    for form, chain in forms.items():
        fns = _ops(tf, tfp, tf_keras, chain, base, flow.trainable_variables)
        graph = tf.function(fns["log_prob"]).get_concrete_function(xs[0]).graph
        ops[form] = len(graph.get_operations())
        checks[form] = [
            t.numpy() for t in tf.nest.flatten([fns["forward"](xs[0]), fns["log_prob"](xs[1])])
        ]
        for mode in MODES:
            for op, fn in fns.items():
                call = tf.function(fn) if mode == "tf.function" else fn

                def timed(call=call):
                    return tf.nest.map_structure(
                        lambda out: out.numpy(), call(xs[next(counter) % 2])
                    )

                todo[(form, f"{op} ({mode})")] = timed
    for a, b in zip(checks["one pass"], checks["plain Chain"], strict=True):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4), "the forms differ"
    times: dict = {}
    for row in timeit_many(todo, repeats, min_time):
        times.setdefault(row["impl"], {})[row["op"]] = row["seconds"]
    return {
        "times": times,
        "graph_ops": ops,
        "tensorflow": tf.__version__,
        "tfp": tfp.__version__,
        "cfg": cfg,
    }


def _ops(tf, tfp, tf_keras, chain, base, variables) -> dict:
    """forward (and its log-det), log_prob and an Adam step of one chain, as closures
    (a tf.function must not take the chain as an argument)."""
    d = tfp.distributions.TransformedDistribution(base, chain)
    opt = tf_keras.optimizers.Adam(1e-6)

    def forward(x):
        return chain.forward(x), chain.forward_log_det_jacobian(x, event_ndims=1)

    def train(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(d.log_prob(x))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    return {"forward": forward, "log_prob": d.log_prob, "train": train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--small", action="store_true", help="a tiny flow (smoke run)")
    args = parser.parse_args()

    from flowbridge.bench.core import machine

    result = run(args.small, args.repeats, args.min_time)
    cfg = result["cfg"]
    lines = [
        "# flowbridge-TFP: the one-pass chain against a plain tfb.Chain of the same layers "
        "(`python benchmarks/tfp_chain.py --out benchmarks/results`)",
        "",
        f"D={cfg['dim']}, {cfg['couplings']} couplings, hidden {cfg['hidden']} x 2, batch "
        f"{cfg['batch']}, float32; {machine().get('cpu', '?')}, 2 threads, TensorFlow "
        f"{result['tensorflow']}, TFP {result['tfp']}; both forms interleaved in one process "
        f"(medians of {args.repeats} rounds, `--min-time {args.min_time}`). Milliseconds per "
        "call, and the one-pass chain's time over the plain Chain's.",
        "",
        "| operation | one pass | plain Chain | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for mode in MODES:
        for op in OPS:
            key = f"{op} ({mode})"
            a, b = result["times"]["one pass"][key], result["times"]["plain Chain"][key]
            lines.append(f"| {key} | {1e3 * a:.2f} | {1e3 * b:.2f} | {a / b:.2f}x |")
    graph_ops = result["graph_ops"]
    lines += ["", f"Operations in the traced graph of `log_prob`: one pass {graph_ops['one pass']}, "
              f"plain Chain {graph_ops['plain Chain']}."]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tfp_chain.md").write_text("\n".join(lines) + "\n")
    (args.out / "tfp_chain.json").write_text(
        json.dumps({**result, "machine": machine()}, indent=1) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
