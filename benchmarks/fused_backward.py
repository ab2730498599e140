"""How much a fused backward for the coupling's elementwise part could gain (issue 31, item 4).

    python benchmarks/fused_backward.py --sizes --out benchmarks/results  # full run
    python benchmarks/fused_backward.py --small --repeats 1 --min-time 0.01 --out DIR

Issue 31 asks for the affine coupling's elementwise part (split, scale map, ``x_b *
exp(s) + shift``, concat, the log-det's sum) to run as one fused op with a backward
derived from the neutral definition, kept "only where it measures faster". Before
deriving anything, this script measures the best such an op can do: the same part with
its backward written by hand, as short as it gets (the derivative a reverse pass over the
IR would give, and no shorter), as one ``torch.autograd.Function`` in flowbridge's
generated Pyro flow and as one ``tf.custom_gradient`` in flowbridge's generated TFP flow
(in ``tf.function``), against the same generated flows unchanged. If the hand-written op does
not gain, a derived one cannot: it would also have to keep double backward,
``torch.func`` and forward mode working, which only adds work.

Operations, each on the benchmark's target flow (D=64, 8 couplings, hidden 256 x 2,
batch 1024, float32; Pyro's clamp scale, TFP's exp scale, as in ``flowbridge bench``):
``log_prob`` (no gradient) and ``train`` (the gradient of ``-mean(log_prob)`` and an Adam
step). Outputs and gradients are checked equal before timing. Each framework runs in its
own process; both forms are timed interleaved (:func:`flowbridge.bench.core.timeit_many`).
``--sizes`` adds a small flow (D=8, hidden 32, batch 64), where op overhead matters most,
and a large batch (4096). ``--small``: D 8, 3 couplings, hidden 16, batch 32 (smoke run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

FRAMEWORKS = ("torch", "tf")
#: one entry per call (or trace) of a fused inverse: the check asserts it ran
USED: list = []
SIZES = {
    "target": {"dim": 64, "couplings": 8, "hidden": 256, "batch": 1024},
    "small": {"dim": 8, "couplings": 8, "hidden": 32, "batch": 64},
    "large batch": {"dim": 64, "couplings": 8, "hidden": 256, "batch": 4096},
    "smoke": {"dim": 8, "couplings": 3, "hidden": 16, "batch": 32},
}


def _torch_fused(torch, split: int, n: int, low: float, high: float):
    """``(y, out) -> (x, log_det)``: a Pyro coupling's inverse after its conditioner, one
    op: ``shift, s = out``; ``ls = clamp(s)`` (gradient straight through, as Pyro's);
    ``x = [y_a, (y_b - shift) exp(-ls)]``, ``log_det = -sum(ls)``."""

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(y, out):
            ls = out[..., n:].clamp(low, high)
            inv = torch.exp(-ls)
            x_b = (y[..., split:] - out[..., :n]) * inv
            return torch.cat([y[..., :split], x_b], -1), -ls.sum(-1), x_b, inv

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(output[2], output[3])
            ctx.mark_non_differentiable(output[2], output[3])

        @staticmethod
        def backward(ctx, g_x, g_log_det, _g_xb, _g_inv):
            x_b, inv = ctx.saved_tensors
            g_xb = g_x[..., split:]
            g_yb = g_xb * inv
            g_s = -(g_xb * x_b) - g_log_det.unsqueeze(-1)
            return torch.cat([g_x[..., :split], g_yb], -1), torch.cat([-g_yb, g_s], -1)

    def inverse(self, y):
        USED.append(type(self).__name__)
        x, log_det, _, _ = Fused.apply(y, self.conditioner(y[..., : self.split]))
        return x, log_det

    return inverse


def torch_worker(cfg: dict, repeats: int, min_time: float) -> dict:
    import pyro.distributions as dist
    import torch

    import flowbridge as fb
    from flowbridge.bench.core import flow_and_params, timeit_many

    torch.set_num_threads(2)
    torch.manual_seed(0)
    spec, params = flow_and_params(cfg, "clamp")
    dim, split = cfg["dim"], cfg["dim"] // 2
    flows = {"plain": fb.to_pyro(spec, params), "fused": fb.to_pyro(spec, params)}
    coupling = type(flows["fused"][0])
    fused_class = type("Fused" + coupling.__name__, (coupling,),
                       {"_inverse_with_log_det": _torch_fused(torch, split, dim - split, -5.0, 3.0)})  # fmt: skip
    for layer in flows["fused"]:
        if type(layer) is coupling:
            layer.__class__ = fused_class
    xs = [torch.randn(cfg["batch"], dim) for _ in range(2)]
    base = dist.Normal(torch.zeros(dim), 1.0).to_event(1)
    dists = {form: dist.TransformedDistribution(base, [flow]) for form, flow in flows.items()}
    grads = {}
    for form, d in dists.items():  # equal values and gradients (fresh input: no cache)
        loss = -d.log_prob(xs[0].clone()).mean()
        grads[form] = [loss.detach()] + list(
            torch.autograd.grad(loss, list(flows[form].parameters()))
        )
    for a, b in zip(grads["plain"], grads["fused"], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), "the forms differ"
    assert len(USED) == cfg["couplings"], "the fused op did not run"
    todo, counter = {}, iter(range(10**9))
    for form, d in dists.items():
        opt = torch.optim.Adam(flows[form].parameters(), lr=1e-5)

        def log_prob(d=d):
            with torch.no_grad():
                return d.log_prob(xs[next(counter) % 2])

        def train(d=d, opt=opt):
            opt.zero_grad(set_to_none=True)
            (-d.log_prob(xs[next(counter) % 2]).mean()).backward()
            opt.step()

        todo.update({(form, "log_prob"): log_prob, (form, "train"): train})
    return {"times": _times(timeit_many(todo, repeats, min_time)), "version": torch.__version__}


def _tf_fused(tf, split: int, n: int):
    """``(y, out) -> (x, log_det)``: a TFP coupling's inverse after its conditioner (exp
    scale), one op with its gradient written out."""

    @tf.custom_gradient
    def fused(y, out):
        inv = tf.exp(-out[..., n:])
        x_b = (y[..., split:] - out[..., :n]) * inv

        def grad(g_x, g_log_det):
            g_xb = g_x[..., split:]
            g_yb = g_xb * inv
            g_s = -(g_xb * x_b) - g_log_det[..., None]
            return tf.concat([g_x[..., :split], g_yb], -1), tf.concat([-g_yb, g_s], -1)

        return (tf.concat([y[..., :split], x_b], -1), -tf.reduce_sum(out[..., n:], -1)), grad

    def inverse(self, y):
        USED.append(type(self).__name__)
        return fused(y, self.conditioner(y[..., : self.split]))

    return inverse


def tf_worker(cfg: dict, repeats: int, min_time: float) -> dict:
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras

    import flowbridge as fb
    from flowbridge.bench.core import flow_and_params, timeit_many

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    spec, params = flow_and_params(cfg, "exp")
    dim, split = cfg["dim"], cfg["dim"] // 2
    flows = {"plain": fb.to_tfp(spec, params), "fused": fb.to_tfp(spec, params)}
    layers = flows["fused"].bijectors
    coupling = type(next(la for la in layers if "Coupling" in type(la).__name__))
    fused_class = type("Fused" + coupling.__name__, (coupling,),
                       {"_inverse_with_log_det": _tf_fused(tf, split, dim - split)})  # fmt: skip
    for layer in layers:
        if type(layer) is coupling:
            layer.__class__ = fused_class
    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.standard_normal((cfg["batch"], dim)), tf.float32) for _ in range(2)]
    base = tfp.distributions.MultivariateNormalDiag(loc=tf.zeros(dim))
    todo, checks, counter = {}, {}, iter(range(10**9))
    for form, flow in flows.items():
        log_prob, loss_and_grads, train = _tf_ops(tf, tfp, tf_keras, flow, base)
        checks[form] = [v.numpy() for v in [log_prob(xs[0]), *loss_and_grads(xs[0])[1]]]
        todo[(form, "log_prob")] = lambda f=log_prob: f(xs[next(counter) % 2]).numpy()
        todo[(form, "train")] = lambda f=train: f(xs[next(counter) % 2]).numpy()
    for a, b in zip(checks["plain"], checks["fused"], strict=True):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-5), "the forms differ"
    assert len(USED) >= cfg["couplings"], "the fused op did not run"
    return {"times": _times(timeit_many(todo, repeats, min_time)), "version": tf.__version__}


def _tf_ops(tf, tfp, tf_keras, flow, base):
    """log_prob, (loss, gradients) and an Adam step of one flow, each a tf.function."""
    d = tfp.distributions.TransformedDistribution(base, flow)
    variables = flow.trainable_variables
    opt = tf_keras.optimizers.Adam(1e-5)

    @tf.function
    def log_prob(x):
        return d.log_prob(x)

    @tf.function
    def loss_and_grads(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(d.log_prob(x))
        return loss, tape.gradient(loss, variables)

    @tf.function
    def train(x):
        loss, grads = loss_and_grads(x)
        opt.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return log_prob, loss_and_grads, train


def _times(rows: list[dict]) -> dict:
    times: dict = {}
    for row in rows:
        times.setdefault(row["impl"], {})[row["op"]] = row["seconds"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--small", action="store_true", help="a tiny flow (smoke run)")
    parser.add_argument("--sizes", action="store_true", help="also a small flow and a large batch")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--size", default="target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work = {"torch": torch_worker, "tf": tf_worker}[args.worker]
        print("FUSED " + json.dumps(work(SIZES[args.size], args.repeats, args.min_time)))
        return

    from flowbridge.bench.core import machine

    sizes = ["smoke"] if args.small else ["target"] + ["small", "large batch"] * args.sizes
    lines = [
        "# A fused elementwise op with a hand-written backward, against the generated flow "
        f"(`python benchmarks/fused_backward.py{' --sizes' if args.sizes else ''} "
        "--out benchmarks/results`)",
        "",
        f"float32, {machine().get('cpu', '?')}, 2 threads; each framework in its own process, "
        f"both forms timed interleaved (medians of {args.repeats} rounds, `--min-time "
        f"{args.min_time}`). Milliseconds per call, and the fused form's time over the plain one's.",
        "",
        "| framework | size | log_prob: fused / plain | train: fused / plain |",
        "| --- | --- | --- | --- |",
    ]
    runs = []
    for size in sizes:
        for framework in FRAMEWORKS:
            cmd = [sys.executable, __file__, "--worker", framework, "--size", size,
                   "--repeats", str(args.repeats), "--min-time", str(args.min_time)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            run = json.loads(next(ln for ln in out.splitlines() if ln.startswith("FUSED "))[6:])
            runs.append({"framework": framework, "size": SIZES[size], **run})
            cells = []
            for op in ("log_prob", "train"):
                a, b = run["times"]["fused"][op], run["times"]["plain"][op]
                cells.append(f"{1e3 * a:.2f} / {1e3 * b:.2f} ({a / b:.2f}x)")
            shape = SIZES[size]
            label = (f"D={shape['dim']}, {shape['couplings']} couplings, hidden {shape['hidden']}, "
                     f"batch {shape['batch']}")  # fmt: skip
            lines.append(f"| {framework} {run['version']} | {label} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fused_backward.md").write_text("\n".join(lines) + "\n")
    (args.out / "fused_backward.json").write_text(json.dumps({"runs": runs, "machine": machine()},
                                                             indent=1) + "\n")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
