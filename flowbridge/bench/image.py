"""The image benchmark: flowbridge's RealNVP image flow against the same flow written by
hand in each framework, on identical weights (``flowbridge bench --preset image``).

Neither Pyro nor TFP has image coupling layers, so the comparison is the fastest plain
version a user would write: torch with ``F.conv2d`` on ``(N, C, H, W)`` and
``F.pixel_unshuffle`` (whose element order is flowbridge's squeeze); TensorFlow channels
last (``tf.nn.conv2d``'s own layout on the CPU, no transposes), the squeeze as a reshape
and transpose to the same element order, in ``tf.function``. Both read the neutral
parameters of the same spec and compute the data-to-latent map ``f`` with its log-det
(``forward``), the density of data under a standard-normal latent (``log_prob``) and one
Adam step on it (``train``). Their outputs are checked equal to flowbridge's before
anything is timed. Timing as in :mod:`flowbridge.bench.core` (each framework in its own
process, median of interleaved runs).
"""

from __future__ import annotations

import itertools
import math

from .core import memory_lines, tf_peak_bytes, timeit_many, torch_peak_bytes, train_peaks

#: The image preset: RealNVP's multi-scale structure on 3 x 16 x 16 images.
IMAGE = {"image": [3, 16, 16], "scales": 2, "blocks": 2, "channels": 32, "batch": 32}
OPS = ("forward", "log_prob", "train")
TORCH_IMPLS = ("flowbridge-pyro", "handwritten-torch")
TF_IMPLS = ("flowbridge-tfp", "flowbridge-tfp-xla", "handwritten-tf", "handwritten-tf-xla")
LOG_2PI = math.log(2 * math.pi)


def spec_and_params(cfg: dict):
    """The preset's spec (``fb.realnvp_image``, soft-clamped scales) and random
    non-identity float32 weights, the last convolutions drawn 10x smaller so that
    log-densities stay finite."""
    import numpy as np

    import flowbridge as fb

    spec = fb.realnvp_image(tuple(cfg["image"]), num_scales=cfg["scales"], blocks=cfg["blocks"],
                            channels=cfg["channels"], scale={"kind": "soft_clamp"},
                            name="bench_image")  # fmt: skip
    params = fb.init_params(spec, 0, init="random")
    last = 2 * cfg["blocks"] + 1
    for name in params:
        if f".conditioner.{last}." in name:
            params[name] = params[name] * 0.1
    return spec, {k: v.astype(np.float32) for k, v in params.items()}


def _plan(spec) -> list[tuple]:
    """The flow as steps a hand-written version runs: ``("coupling", i, mask, parity or
    part, active channels)``, ``("squeeze",)``, ``("factor_out",)``."""
    from ..spec import layer_shapes

    steps = []
    for i, (layer, shape) in enumerate(zip(spec.layers, layer_shapes(spec), strict=True)):
        if layer.type == "affine_coupling":
            which = layer.mask.parity if layer.mask.kind == "checkerboard" else layer.mask.part
            steps.append(("coupling", i, layer.mask.kind, which, shape[0]))
        else:
            steps.append((layer.type,))
    return steps


# ------------------------------------------------------------------------ torch side
def torch_worker(cfg: dict, threads: int, repeats: int, min_time: float):
    import numpy as np
    import pyro.distributions as dist
    import torch
    import torch.nn.functional as F  # noqa: N812

    import flowbridge as fb

    torch.set_num_threads(threads)
    spec, params = spec_and_params(cfg)
    steps, blocks, b = _plan(spec), cfg["blocks"], cfg["batch"]
    bound = spec.layers[0].scale.bound

    class Handwritten(torch.nn.Module):
        """The flow in plain torch: NCHW, F.conv2d, F.pixel_unshuffle."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.ParameterDict({
                k.replace(".", "_"): torch.nn.Parameter(torch.tensor(
                    v.transpose(3, 2, 0, 1) if v.ndim == 4 else v))  # (out, in, k, k)
                for k, v in params.items()})  # fmt: skip

        def net(self, i, h):
            w = self.w
            h = F.conv2d(h, w[f"layers_{i}_conditioner_0_kernel"], w[f"layers_{i}_conditioner_0_bias"],
                         padding="same")  # fmt: skip
            for block in range(blocks):
                r = h
                for j in (2 * block + 1, 2 * block + 2):
                    r = F.conv2d(F.relu(r), w[f"layers_{i}_conditioner_{j}_kernel"],
                                 w[f"layers_{i}_conditioner_{j}_bias"], padding="same")  # fmt: skip
                h = h + r
            last = 2 * blocks + 1
            return F.conv2d(F.relu(h), w[f"layers_{i}_conditioner_{last}_kernel"],
                            w[f"layers_{i}_conditioner_{last}_bias"], padding="same")  # fmt: skip

        def forward(self, x):
            log_det = x.new_zeros(x.shape[0])
            active = x.shape[1]
            for step in steps:
                if step[0] == "squeeze":
                    x, active = F.pixel_unshuffle(x, 2), 4 * active
                    continue
                if step[0] == "factor_out":
                    active //= 2
                    continue
                _, i, kind, which, _ = step
                a, rest = x[:, :active], x[:, active:]
                if kind == "checkerboard":
                    hh, ww = torch.meshgrid(torch.arange(a.shape[2]), torch.arange(a.shape[3]),
                                            indexing="ij")  # fmt: skip
                    mask = ((hh + ww) % 2 == (0 if which == "even" else 1)).to(a.dtype)
                    out = self.net(i, a * mask)
                    c = a.shape[1]
                    shift, s = out[:, :c], out[:, c:]
                    log_scale = bound * torch.tanh(s / bound) * (1 - mask)
                    a = a * torch.exp(log_scale) + shift * (1 - mask)
                else:
                    k = a.shape[1] // 2
                    passed, moved = (a[:, :k], a[:, k:]) if which == "first" else (a[:, -k:], a[:, :-k])
                    out = self.net(i, passed)
                    c = moved.shape[1]
                    log_scale = bound * torch.tanh(out[:, c:] / bound)
                    moved = moved * torch.exp(log_scale) + out[:, :c]
                    a = torch.cat([passed, moved] if which == "first" else [moved, passed], dim=1)
                log_det = log_det + log_scale.sum(dim=(1, 2, 3))
                x = torch.cat([a, rest], dim=1)
            return x, log_det

    x = [torch.randn(b, *cfg["image"]) for _ in range(2)]
    handwritten = Handwritten()
    flowbridge = fb.to_pyro(spec, params)
    base = dist.Normal(torch.zeros(spec.output_shape), 1.0).to_event(3)
    q = dist.TransformedDistribution(base, [flowbridge.inv])
    with torch.no_grad():  # the same flow and weights: proven before timing
        z_fb = flowbridge(x[0].clone())
        ld_fb = flowbridge.log_abs_det_jacobian(x[0], z_fb)
        z_hw, ld_hw = handwritten(x[0].clone())
        assert torch.allclose(z_fb, z_hw, rtol=1e-4, atol=1e-4), "flows differ"
        assert torch.allclose(ld_fb, ld_hw, rtol=1e-4, atol=1e-3), "log-dets differ"
        lp = q.log_prob(x[0])
        lp_hw = -0.5 * (z_hw**2).flatten(1).sum(1) - 0.5 * z_hw[0].numel() * LOG_2PI + ld_hw
        assert torch.allclose(lp, lp_hw, rtol=1e-4, atol=1e-2), "log_probs differ"
    counter = itertools.count()

    def nxt():
        """A fresh copy of one of the inputs: every call (of every implementation, the
        hand-written one too, so the copy is timed alike) misses Pyro's caches, which
        other operations on the same tensor object would otherwise have filled."""
        return x[next(counter) % 2].clone()

    def hw_log_prob(xi):
        z, ld = handwritten(xi)
        return -0.5 * (z**2).flatten(1).sum(1) - 0.5 * z[0].numel() * LOG_2PI + ld

    def fb_forward():
        with torch.no_grad():
            xi = nxt()
            return flowbridge.log_abs_det_jacobian(xi, flowbridge(xi))

    opts = {"flowbridge-pyro": torch.optim.Adam(flowbridge.parameters(), lr=1e-5),
            "handwritten-torch": torch.optim.Adam(handwritten.parameters(), lr=1e-5)}  # fmt: skip

    def train(impl, log_prob):
        def run():
            opts[impl].zero_grad(set_to_none=True)
            (-log_prob(nxt()).mean()).backward()
            opts[impl].step()

        return run

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn(nxt())

        return run

    todo = {
        ("flowbridge-pyro", "forward"): fb_forward,
        ("flowbridge-pyro", "log_prob"): no_grad(q.log_prob),
        ("flowbridge-pyro", "train"): train("flowbridge-pyro", q.log_prob),
        ("handwritten-torch", "forward"): no_grad(handwritten),
        ("handwritten-torch", "log_prob"): no_grad(hw_log_prob),
        ("handwritten-torch", "train"): train("handwritten-torch", hw_log_prob),
    }
    info = {"device": "cpu", "torch": torch.__version__, "threads": threads,
            "params": int(sum(np.prod(v.shape) for v in params.values()))}  # fmt: skip
    info["train_peak_bytes"] = train_peaks(todo, torch_peak_bytes)
    rows = timeit_many(todo, repeats, min_time)
    return rows, info


# --------------------------------------------------------------------------- TF side
def tf_worker(cfg: dict, threads: int, repeats: int, min_time: float):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")  # allocator statistics (tf_peak_bytes)
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import tensorflow_probability as tfp
    import tf_keras

    import flowbridge as fb

    spec, params = spec_and_params(cfg)
    steps, blocks, b = _plan(spec), cfg["blocks"], cfg["batch"]
    bound = spec.layers[0].scale.bound
    c0, h0, w0 = cfg["image"]

    class Handwritten(tf.Module):
        """The flow in plain TensorFlow, channels last: tf.nn.conv2d in its own layout."""

        def __init__(self):
            super().__init__()
            self.w = {k: tf.Variable(v) for k, v in params.items()}  # (k, k, in, out)

        def net(self, i, h):
            w = self.w

            def conv(v, j):
                kernel, bias = w[f"layers.{i}.conditioner.{j}.kernel"], w[f"layers.{i}.conditioner.{j}.bias"]
                return tf.nn.conv2d(v, kernel, 1, "SAME") + bias

            h = conv(h, 0)
            for block in range(blocks):
                r = h
                for j in (2 * block + 1, 2 * block + 2):
                    r = conv(tf.nn.relu(r), j)
                h = h + r
            return conv(tf.nn.relu(h), 2 * blocks + 1)

        def __call__(self, x):
            log_det = tf.zeros(tf.shape(x)[:1])
            active = x.shape[-1]
            for step in steps:
                if step[0] == "squeeze":  # flowbridge's order: channel 4c + 2i + j
                    n, hh, ww, c = tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
                    x = tf.reshape(x, [n, hh // 2, 2, ww // 2, 2, c])
                    x = tf.reshape(tf.transpose(x, [0, 1, 3, 5, 2, 4]), [n, hh // 2, ww // 2, 4 * c])
                    active *= 4
                    continue
                if step[0] == "factor_out":
                    active //= 2
                    continue
                _, i, kind, which, _ = step
                a, rest = x[..., :active], x[..., active:]
                if kind == "checkerboard":
                    hh, ww = np.indices((a.shape[1], a.shape[2]))
                    mask = tf.constant(((hh + ww) % 2 == (0 if which == "even" else 1))[..., None],
                                       tf.float32)  # fmt: skip
                    out = self.net(i, a * mask)
                    c = a.shape[-1]
                    log_scale = bound * tf.tanh(out[..., c:] / bound) * (1 - mask)
                    a = a * tf.exp(log_scale) + out[..., :c] * (1 - mask)
                else:
                    k = a.shape[-1] // 2
                    passed, moved = (a[..., :k], a[..., k:]) if which == "first" else (a[..., -k:], a[..., :-k])
                    out = self.net(i, passed)
                    c = moved.shape[-1]
                    log_scale = bound * tf.tanh(out[..., c:] / bound)
                    moved = moved * tf.exp(log_scale) + out[..., :c]
                    a = tf.concat([passed, moved] if which == "first" else [moved, passed], -1)
                log_det += tf.reduce_sum(log_scale, axis=[1, 2, 3])
                x = tf.concat([a, rest], -1)
            return x, log_det

    handwritten = Handwritten()
    flowbridge = fb.to_tfp(spec, params)  # channels last
    tfd = tfp.distributions
    c, h, w = spec.output_shape
    q = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0.0, 1.0), [h, w, c]),
                                    tfp.bijectors.Invert(flowbridge))  # fmt: skip
    xs = [tf.random.normal([b, h0, w0, c0], seed=i) for i in range(2)]

    def hw_log_prob(x):
        z, ld = handwritten(x)
        return -0.5 * tf.reduce_sum(z**2, axis=[1, 2, 3]) - 0.5 * c * h * w * LOG_2PI + ld

    z_fb = flowbridge.forward(xs[0]).numpy()
    z_hw, _ = handwritten(xs[0])
    # the same latent up to the layout: flowbridge's channels-last output is its (C, H, W)
    # latent transposed, the hand-written one is computed channels last throughout
    assert np.allclose(z_fb, z_hw.numpy(), rtol=1e-4, atol=1e-4), "flows differ"
    assert np.allclose(q.log_prob(xs[0]).numpy(), hw_log_prob(xs[0]).numpy(), rtol=1e-4,
                       atol=1e-2), "log_probs differ"  # fmt: skip

    def ops(impl, variables, forward, log_prob, xla):
        opt = tf_keras.optimizers.Adam(1e-5)
        fn = tf.function(jit_compile=xla)

        @fn
        def fwd(x):
            return forward(x)

        @fn
        def lp(x):
            return log_prob(x)

        @fn
        def train(x):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(log_prob(x))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss

        return {"forward": fwd, "log_prob": lp, "train": train}

    def fb_forward(x):
        flowbridge.forward(x)
        return flowbridge.forward_log_det_jacobian(x, event_ndims=3)

    counter = itertools.count()
    todo = {}
    impls = {"flowbridge-tfp": (flowbridge.trainable_variables, fb_forward, q.log_prob),
             "handwritten-tf": (handwritten.trainable_variables, lambda x: handwritten(x)[1],
                                hw_log_prob)}  # fmt: skip
    for name, (variables, forward, log_prob) in impls.items():
        for suffix, xla in (("", False), ("-xla", True)):
            for op, fn in ops(name, variables, forward, log_prob, xla).items():
                def run(fn=fn):
                    return fn(xs[next(counter) % 2]).numpy()

                todo[(name + suffix, op)] = run
    info = {"device": "cpu", "tensorflow": tf.__version__, "tfp": tfp.__version__,
            "threads": threads}  # fmt: skip
    info["train_peak_bytes"] = train_peaks(todo, tf_peak_bytes)
    rows = timeit_many(todo, repeats, min_time)
    return rows, info


# ------------------------------------------------------------------------- reporting
def markdown(results: dict) -> str:
    """The image preset's table: ms per call, each ratio against the hand-written flow
    of the same framework (and execution mode), from the same run."""
    m = results["machine"]
    table: dict = {}
    for r in results["runs"]:
        for row in r["rows"]:
            table.setdefault(row["impl"], {})[row["op"]] = row["seconds"]
    cfg = results["runs"][0]["config"]
    lines = [f"# flowbridge benchmarks ({results['preset']})", "",
             f"Machine: {m.get('cpu', m['processor'])}, {m['cpus']} CPUs, {m['platform']}; "
             f"{results['threads']} threads per framework process; float32; median of "
             f"{results['repeats']} runs. Times in milliseconds per call; ratios are against "
             "the hand-written flow of the same framework and mode, from the same run.", "",
             f"## RealNVP image flow: images {tuple(cfg['image'])}, {cfg['scales']} scales, "
             f"ResNet conditioners of {cfg['blocks']} blocks x {cfg['channels']} channels, "
             f"batch {cfg['batch']}", "",
             "| impl | " + " | ".join(OPS) + " |", "| --- |" + " --- |" * len(OPS)]  # fmt: skip
    against = {"flowbridge-pyro": "handwritten-torch", "flowbridge-tfp": "handwritten-tf",
               "flowbridge-tfp-xla": "handwritten-tf-xla"}  # fmt: skip
    for impl in (*TORCH_IMPLS, *TF_IMPLS):
        if impl not in table:
            continue
        cells = []
        for op in OPS:
            ms = table[impl][op] * 1e3
            ref = table.get(against.get(impl, ""), {}).get(op)
            cells.append(f"{ms:.3g}" + (f" ({table[impl][op] / ref:.2f}x)" if ref else ""))
        lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    lines += memory_lines(results["runs"], against)
    return "\n".join(lines) + "\n"


def plot(results: dict, path) -> None:
    """Bars of milliseconds per call, one group per implementation and one bar per
    operation, from the same run as the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table: dict = {}
    for r in results["runs"]:
        for row in r["rows"]:
            table.setdefault(row["impl"], {})[row["op"]] = row["seconds"] * 1e3
    names = [i for i in (*TORCH_IMPLS, *TF_IMPLS) if i in table]
    cfg = results["runs"][0]["config"]
    fig, ax = plt.subplots(figsize=(11, 4))
    for k, op in enumerate(OPS):
        ms = [table[i].get(op, float("nan")) for i in names]
        ax.bar([j + 0.25 * k for j in range(len(names))], ms, width=0.25, label=op)
    ax.set_xticks([j + 0.25 for j in range(len(names))], names, rotation=15, fontsize=8)
    ax.set_ylabel("ms per call")
    ax.set_title(f"RealNVP image flow {tuple(cfg['image'])}, {cfg['scales']} scales, "
                 f"{cfg['blocks']} blocks x {cfg['channels']} channels, batch {cfg['batch']}")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
