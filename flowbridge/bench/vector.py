"""The vector benchmark: flowbridge against native Pyro and native TFP on identical flows and weights.

For each size the parent process (no framework imported) starts one worker process per
framework, with its thread count set: a torch worker times flowbridge-Pyro (eager and
``torch.compile``), native Pyro (``AffineCoupling`` + ``DenseNN`` + ``Permute``) and the
floor (the conditioner MLPs alone, and for training their forward, backward with the
inputs' gradients, and Adam step); a TensorFlow worker times flowbridge-TFP
(``tf.function``, and ``jit_compile=True``), native TFP (``RealNVP`` with
``real_nvp_default_template`` + ``Permute`` in a ``Chain``, in ``tf.function``) and the
floor; a JAX worker times flowbridge-JAX (``jax.jit``), flowjax's ``coupling_flow`` (where
flowjax is installed) and the floor. flowbridge's flows come from the native ones through
``from_pyro_native`` / ``from_tfp_native``, so architecture and weights are identical
within each framework; flowjax's is loaded with the same weights and checked equal. At
unconditional sizes the torch and TF workers also time the same flow written by hand in
plain torch and plain TF (``handwritten-torch``, ``handwritten-tf``: forward and training
step), checked equal to flowbridge's first.

Operations: ``forward`` (forward and log-det), ``log_prob`` (inverse and log-det through
``TransformedDistribution``), ``sample``, ``train`` (log_prob, backward, Adam step); the
floor runs the MLPs of every coupling once and returns every output (so no framework may
prune one), and for ``train`` also their backward (weights and inputs) and Adam step.
Timing as in :mod:`flowbridge.bench.core`; Pyro inputs alternate between two tensors so
its single-entry caches never answer. Each worker also measures the peak memory of every
training step (:func:`~flowbridge.bench.core.train_peaks`).

The ``quick``, ``axes``, ``grid`` and ``conditional`` presets run these workers; this
module also reads their rows back (:func:`markdown`, :func:`plot`).
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import os
from pathlib import Path

import numpy as np

from .core import (
    flow_and_params,
    interleaved,
    memory_lines,
    tf_peak_bytes,
    timeit_many,
    torch_peak_bytes,
    train_peaks,
    xla_temp_bytes,
)

#: The target size: ``quick`` times it alone, :func:`targets` checks the ratios there.
TARGET = {"dim": 64, "couplings": 8, "hidden": 256, "batch": 1024}
#: The conditional benchmark: the target size, every coupling also reading a context of 16
#: (Pyro's ConditionalAffineCoupling + ConditionalDenseNN; TFP's RealNVP with a
#: shift_and_log_scale_fn that reads conditional_input).
CONDITIONAL = {**TARGET, "context": 16}
AXES = {"dim": [2, 16, 64, 256, 784], "couplings": [4, 8, 16], "hidden": [64, 256, 1024],
        "batch": [1, 64, 1024, 8192]}  # fmt: skip
OPS = ("forward", "log_prob", "sample", "train")
TORCH_IMPLS = ("flowbridge-pyro", "flowbridge-pyro-compile", "native-pyro", "handwritten-torch",
               "floor-torch")  # fmt: skip
TF_IMPLS = ("flowbridge-tfp", "flowbridge-tfp-xla", "native-tfp", "handwritten-tf", "floor-tf")
#: NumPyro has no coupling flow; flowjax's ``coupling_flow`` is JAX's peer (where it is
#: installed). The floor: the conditioner MLPs alone, jitted too.
JAX_IMPLS = ("flowbridge-jax", "flowjax", "floor-jax")
#: What each implementation's ratios are against: the same framework's native flow.
AGAINST = {**dict.fromkeys(TORCH_IMPLS, "native-pyro"), **dict.fromkeys(TF_IMPLS, "native-tfp"),
           **dict.fromkeys(JAX_IMPLS, "flowjax")}  # fmt: skip


# ------------------------------------------------------------------------ torch side
def native_pyro(spec, params: dict, hidden: int):
    """Native Pyro for :func:`flow_and_params`' spec: ``AffineCoupling`` + ``DenseNN``
    (weights copied in, ``nn.Linear`` layout) + ``Permute``, in a ComposeTransformModule;
    for a conditional spec ``ConditionalAffineCoupling`` + ``ConditionalDenseNN`` (which
    reads ``[context | x_a]``: the first kernel's rows are reordered) in a
    ConditionalComposeTransformModule."""
    import numpy as np
    import torch
    from pyro.distributions.conditional import ConditionalComposeTransformModule
    from pyro.distributions.torch_transform import ComposeTransformModule
    from pyro.distributions.transforms import AffineCoupling, ConditionalAffineCoupling, Permute
    from pyro.nn import ConditionalDenseNN, DenseNN

    dim, context = spec.dim, spec.context_dim
    split = dim // 2
    parts = []
    for i, layer in enumerate(spec.layers):
        if layer.type == "permutation":
            parts.append(Permute(torch.tensor(layer.indices)))
            continue
        if context:
            net = ConditionalDenseNN(split, context, [hidden, hidden], [dim - split, dim - split])
        else:
            net = DenseNN(split, [hidden, hidden], [dim - split, dim - split])
        with torch.no_grad():
            for j, lin in enumerate(net.layers):
                kernel = params[f"layers.{i}.conditioner.{j}.kernel"]
                if j == 0 and context:
                    kernel = np.concatenate([kernel[split:], kernel[:split]])
                lin.weight.copy_(torch.tensor(kernel.T))
                lin.bias.copy_(torch.tensor(params[f"layers.{i}.conditioner.{j}.bias"]))
        parts.append(ConditionalAffineCoupling(split, net) if context else AffineCoupling(split, net))
    return ConditionalComposeTransformModule(parts) if context else ComposeTransformModule(parts)


def torch_worker(cfg: dict, threads: int, repeats: int, min_time: float, compile_: bool):
    import pyro.distributions as dist
    import torch
    from pyro.distributions.transforms import AffineCoupling, ConditionalAffineCoupling, Permute

    import flowbridge as fb

    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    dim, b, context = cfg["dim"], cfg["batch"], cfg.get("context", 0)
    spec, params = flow_and_params(cfg, "clamp")
    split = dim // 2
    native = native_pyro(spec, params, cfg["hidden"]).to(device)
    # a conditional compose wraps each unconditional part (Permute) in a transform of its own
    parts = [getattr(p, "transform", p) for p in (native.transforms if context else native.parts)]
    nets = [p.nn for p in parts if isinstance(p, (AffineCoupling, ConditionalAffineCoupling))]
    for p in parts:  # Permute's index tensor is not a buffer: move it by hand
        if isinstance(p, Permute):
            p.permutation = p.permutation.to(device)
    flows = {"flowbridge-pyro": fb.to_pyro(spec, params, device=device), "native-pyro": native}
    xs = [torch.randn(b, dim, device=device) for _ in range(2)]
    cs = [torch.randn(b, context, device=device) for _ in range(2)]
    counter = itertools.count()

    def at(flow, k):  # the flow itself, or a conditional flow at the k-th context
        return flow.condition(cs[k]) if context else flow

    with torch.no_grad():  # same architecture, same weights: prove it before timing
        y_fb, y_nat = at(flows["flowbridge-pyro"], 0)(xs[0].clone()), at(native, 0)(xs[0].clone())
        assert torch.allclose(y_fb, y_nat, rtol=1e-4, atol=1e-4), "flows differ"
        assert torch.isfinite(y_fb).all()

    def step():
        return next(counter) % 2

    def sync(t):
        if device == "cuda":
            torch.cuda.synchronize()
        return t

    todo: dict = {}
    info = {"device": device, "torch": torch.__version__, "threads": threads}
    if compile_:  # its own process: inductor changes the process's threading for all after
        flow = flows["flowbridge-pyro"]
        d = dist.TransformedDistribution(dist.Normal(torch.zeros(dim, device=device), 1.0).to_event(1), [flow])
        return _torch_compiled(flow, d, lambda: xs[step()], sync, b, repeats, min_time), info
    for impl, flow in flows.items():
        base = dist.Normal(torch.zeros(dim, device=device), 1.0).to_event(1)
        if context:
            conditional = dist.ConditionalTransformedDistribution(base, [flow])

            def dist_at(k, conditional=conditional):
                return conditional.condition(cs[k])
        else:
            plain = dist.TransformedDistribution(base, [flow])

            def dist_at(k, plain=plain):
                return plain
        opt = torch.optim.Adam(flow.parameters(), lr=1e-5)

        def forward(flow=flow):
            with torch.no_grad():
                k = step()
                f, xi = at(flow, k), xs[k]
                y = f(xi)
                return sync(f.log_abs_det_jacobian(xi, y))

        def log_prob(dist_at=dist_at):
            with torch.no_grad():
                k = step()
                return sync(dist_at(k).log_prob(xs[k]))

        def sample(dist_at=dist_at):
            with torch.no_grad():
                return sync(dist_at(step()).sample((b,)))

        def train(dist_at=dist_at, opt=opt):
            opt.zero_grad(set_to_none=True)
            k = step()
            (-dist_at(k).log_prob(xs[k]).mean()).backward()
            opt.step()
            return sync(None)

        fns = {"forward": forward, "log_prob": log_prob, "sample": sample, "train": train}
        todo.update({(impl, op): fn for op, fn in fns.items()})

    nets = [copy.deepcopy(net) for net in nets]  # the floor's own: its Adam moves them
    floor_opt = torch.optim.Adam([p for net in nets for p in net.parameters()], lr=1e-5)

    def floor():
        k = step()
        with torch.no_grad():
            return sync(_floor_torch(nets, xs[k], split, cs[k] if context else None))

    def floor_train():
        floor_opt.zero_grad(set_to_none=True)
        k = step()
        x = xs[k].detach().requires_grad_()  # the couplings' inputs carry gradients too
        outs = _floor_torch(nets, x, split, cs[k] if context else None)
        torch.autograd.backward(outs, [torch.ones_like(out) for out in outs])
        floor_opt.step()
        return sync(None)

    todo[("floor-torch", "forward")] = floor
    todo[("floor-torch", "train")] = floor_train
    if not context:  # the same flow written by hand in plain torch, checked equal first
        hand = _HandwrittenTorch([copy.deepcopy(net) for net in nets],
                                 [p.permutation for p in parts if isinstance(p, Permute)], split)  # fmt: skip
        with torch.no_grad():
            y_hand, ld_hand = hand.forward(xs[0])
            y_fb = flows["flowbridge-pyro"](xs[0].clone())
            assert torch.allclose(y_hand, y_fb, rtol=1e-4, atol=1e-4), "handwritten-torch differs"
        hand_opt = torch.optim.Adam(hand.parameters(), lr=1e-5)

        def hand_forward():
            with torch.no_grad():
                return sync(hand.forward(xs[step()])[1])

        def hand_train():
            hand_opt.zero_grad(set_to_none=True)
            z, ld = hand.inverse(xs[step()])
            (-(ld - 0.5 * (z**2).sum(-1)).mean()).backward()  # the constant dropped
            hand_opt.step()
            return sync(None)

        todo[("handwritten-torch", "forward")] = hand_forward
        todo[("handwritten-torch", "train")] = hand_train
    info["train_peak_bytes"] = train_peaks(todo, torch_peak_bytes)
    rows = timeit_many(todo, repeats, min_time)
    return rows, info


class _HandwrittenTorch:
    """The benchmark's flow as a user writes it in plain torch: for each coupling
    ``shift, s = net(x_a)``, ``s`` clamped to Pyro's [-5, 3], ``y_b = x_b * exp(s) +
    shift``; a permutation (``x[..., p]``) between couplings."""

    def __init__(self, nets, perms, split):
        self.nets, self.perms, self.split = nets, perms, split
        self.inverse_perms = [p.argsort() for p in perms]

    def parameters(self):
        return [w for net in self.nets for w in net.parameters()]

    def forward(self, x):
        import torch

        log_det = x.new_zeros(x.shape[:-1])
        for i, net in enumerate(self.nets):
            x_a, x_b = x[..., : self.split], x[..., self.split :]
            shift, s = net(x_a)
            s = s.clamp(-5.0, 3.0)
            x = torch.cat([x_a, x_b * torch.exp(s) + shift], -1)
            log_det = log_det + s.sum(-1)
            if i < len(self.perms):
                x = x[..., self.perms[i]]
        return x, log_det

    def inverse(self, y):
        import torch

        log_det = y.new_zeros(y.shape[:-1])
        for i in reversed(range(len(self.nets))):
            if i < len(self.perms):
                y = y[..., self.inverse_perms[i]]
            y_a, y_b = y[..., : self.split], y[..., self.split :]
            shift, s = self.nets[i](y_a)
            s = s.clamp(-5.0, 3.0)
            y = torch.cat([y_a, (y_b - shift) * torch.exp(-s)], -1)
            log_det = log_det - s.sum(-1)
        return y, log_det


def _floor_torch(nets, xi, split, context=None) -> list:
    """Every conditioner once on the input's first ``split`` entries: their outputs."""
    outs = []
    for net in nets:
        outs += net(xi[..., :split]) if context is None else net(xi[..., :split], context)
    return outs


def _torch_compiled(flow, d, x, sync, b, repeats, min_time):
    import torch

    def fwd(xi):
        y = flow(xi)
        return flow.log_abs_det_jacobian(xi, y)

    c_fwd, c_lp = torch.compile(fwd), torch.compile(d.log_prob)
    c_sample = torch.compile(lambda: d.rsample((b,)))
    c_loss = torch.compile(lambda xi: -d.log_prob(xi).mean())
    opt = torch.optim.Adam(flow.parameters(), lr=1e-5)

    def train():
        opt.zero_grad(set_to_none=True)
        c_loss(x()).backward()
        opt.step()
        return sync(None)

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return sync(fn())

        return run

    fns = {"forward": no_grad(lambda: c_fwd(x())), "log_prob": no_grad(lambda: c_lp(x())),
           "sample": no_grad(c_sample), "train": train}  # fmt: skip
    return timeit_many({("flowbridge-pyro-compile", op): fn for op, fn in fns.items()},
                        repeats, min_time)  # fmt: skip


# --------------------------------------------------------------------------- TF side
def tf_worker(cfg: dict, threads: int, repeats: int, min_time: float, compile_: bool):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")  # allocator statistics (tf_peak_bytes)
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import tensorflow_probability as tfp
    import tf_keras

    import flowbridge as fb

    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.config.experimental.enable_tensor_float_32_execution(False)
    device = "cuda" if tf.config.list_physical_devices("GPU") else "cpu"
    dim, c, b, context = cfg["dim"], cfg["couplings"], cfg["batch"], cfg.get("context", 0)
    spec, params = flow_and_params(cfg, "exp")

    class Conditioner(tf.Module):
        """A tracked MLP for RealNVP's shift_and_log_scale_fn (the default template's
        variables are not tracked, so a Chain of it cannot train); with a context it reads
        ``[x_a | conditional_input]``, as flowbridge's couplings do."""

        def __init__(self, i):
            super().__init__()
            self.kernels = [tf.Variable(params[f"layers.{i}.conditioner.{j}.kernel"]) for j in range(3)]
            self.biases = [tf.Variable(params[f"layers.{i}.conditioner.{j}.bias"]) for j in range(3)]

        def __call__(self, x, output_units, conditional_input=None):
            if conditional_input is not None:
                x = tf.concat([x, conditional_input], axis=-1)
            for j in range(3):
                x = tf.linalg.matmul(x, self.kernels[j]) + self.biases[j]
                if j < 2:
                    x = tf.nn.relu(x)
            return x[..., :output_units], x[..., output_units:]

    layers = []
    for i, layer in enumerate(spec.layers):
        if layer.type == "permutation":
            layers.append(tfb.Permute(list(layer.indices)))
        else:
            layers.append(tfb.RealNVP(num_masked=dim // 2, shift_and_log_scale_fn=Conditioner(i),
                                      name=f"coupling_{i}"))  # fmt: skip
    native = tfb.Chain(list(reversed(layers)))
    assert len(native.trainable_variables) == len(params)
    flows = {"flowbridge-tfp": fb.to_tfp(spec, params), "native-tfp": native}
    names = [la.name for la in layers if isinstance(la, tfb.RealNVP)]
    routes = {  # bijector_kwargs: flowbridge's chain routes conditional_input itself
        "flowbridge-tfp": lambda ci: {"conditional_input": ci} if context else {},
        "native-tfp": lambda ci: {n: {"conditional_input": ci} for n in names} if context else {},
    }
    xs = [tf.random.normal([b, dim], seed=i) for i in range(2)]
    cs = [tf.random.normal([b, max(context, 1)], seed=10 + i) for i in range(2)]
    y_fb = flows["flowbridge-tfp"].forward(xs[0], **routes["flowbridge-tfp"](cs[0]))
    y_nat = native.forward(xs[0], **routes["native-tfp"](cs[0]))
    assert np.allclose(y_fb.numpy(), y_nat.numpy(), rtol=1e-4, atol=1e-4), "flows differ"
    assert np.isfinite(y_fb.numpy()).all()
    counter = itertools.count()
    todo: dict = {}
    info = {"device": device, "tensorflow": tf.__version__, "tfp": tfp.__version__,
            "threads": threads}  # fmt: skip
    for impl, flow in flows.items():
        d = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc=tf.zeros(dim)), flow)
        if compile_ and impl != "flowbridge-tfp":
            continue
        variants = [("flowbridge-tfp-xla", True)] if compile_ else [(impl, False)]
        for name, xla in variants:
            fns = _tf_ops(tf, tf_keras, flow, d, b, xla, routes[impl])
            for op, fn in fns.items():
                def run(fn=fn):
                    k = next(counter) % 2
                    return fn(xs[k], cs[k]).numpy()

                todo[(name, op)] = run
    if compile_:  # the XLA worker times only flowbridge-tfp-xla, in its own process
        return _tf_rows(todo, repeats, min_time, info)
    kernels = [[params[f"layers.{i}.conditioner.{j}.kernel"] for j in range(3)] for i in range(0, 2 * c - 1, 2)]
    biases = [[params[f"layers.{i}.conditioner.{j}.bias"] for j in range(3)] for i in range(0, 2 * c - 1, 2)]
    weights = [[(tf.Variable(k), tf.Variable(bb)) for k, bb in zip(ks, bs, strict=True)]
               for ks, bs in zip(kernels, biases, strict=True)]  # fmt: skip
    floor_variables = [v for layer in weights for pair in layer for v in pair]
    floor_opt = tf_keras.optimizers.Adam(1e-5)

    def floor_outputs(xi, ci):
        """Every conditioner once on the input's first D // 2 entries: all their outputs
        (a floor that used one would let graph pruning drop the others)."""
        outs = []
        for layer in weights:
            hid = xi[..., : dim // 2]
            if context:
                hid = tf.concat([hid, ci], axis=-1)
            for j, (k, bias) in enumerate(layer):
                hid = tf.linalg.matmul(hid, k) + bias
                if j < 2:
                    hid = tf.nn.relu(hid)
            outs.append(hid)
        return outs

    @tf.function
    def floor(xi, ci):
        return floor_outputs(xi, ci)

    @tf.function
    def floor_train(xi, ci):
        with tf.GradientTape() as tape:
            tape.watch(xi)  # the couplings' inputs carry gradients too
            outs = floor_outputs(xi, ci)
        grads = tape.gradient(outs, [*floor_variables, xi])  # upstream ones, as torch's
        floor_opt.apply_gradients(zip(grads[:-1], floor_variables, strict=True))
        return grads[-1]

    timed = {("floor-tf", "forward"): floor, ("floor-tf", "train"): floor_train}
    if not context:  # the same flow written by hand in plain TF, checked equal first
        perms = [tf.constant(layer.indices) for layer in spec.layers if layer.type == "permutation"]
        hand_opt = tf_keras.optimizers.Adam(1e-5)

        def hand_pass(v, forward):
            """The flow (forward) or its inverse: for each coupling ``shift, s = net(x_a)``,
            ``y_b = x_b * exp(s) + shift``; permutations between couplings."""
            log_det = tf.zeros(tf.shape(v)[:-1])
            order = range(c) if forward else reversed(range(c))
            for i in order:
                if not forward and i < c - 1:
                    v = tf.gather(v, tf.math.invert_permutation(perms[i]), axis=-1)
                v_a, v_b = v[..., : dim // 2], v[..., dim // 2 :]
                h = v_a
                for j, (k, bias) in enumerate(weights[i]):
                    h = tf.linalg.matmul(h, k) + bias
                    if j < 2:
                        h = tf.nn.relu(h)
                shift, s = h[..., : dim - dim // 2], h[..., dim - dim // 2 :]
                moved = v_b * tf.exp(s) + shift if forward else (v_b - shift) * tf.exp(-s)
                v = tf.concat([v_a, moved], -1)
                log_det += tf.reduce_sum(s, -1) if forward else -tf.reduce_sum(s, -1)
                if forward and i < c - 1:
                    v = tf.gather(v, perms[i], axis=-1)
            return v, log_det

        @tf.function
        def hand_forward(xi, ci):
            return hand_pass(xi, True)[1]

        @tf.function
        def hand_train(xi, ci):
            with tf.GradientTape() as tape:
                z, log_det = hand_pass(xi, False)
                loss = -tf.reduce_mean(log_det - 0.5 * tf.reduce_sum(z**2, -1))
            grads = tape.gradient(loss, floor_variables)
            hand_opt.apply_gradients(zip(grads, floor_variables, strict=True))
            return loss

        y_hand = hand_pass(xs[0], True)[0]
        assert np.allclose(y_hand.numpy(), y_fb.numpy(), rtol=1e-4, atol=1e-4), "handwritten-tf differs"
        timed.update({("handwritten-tf", "forward"): hand_forward, ("handwritten-tf", "train"): hand_train})
    for key, fn in timed.items():
        def run(fn=fn):  # every output is the function's; one entry read back syncs a GPU
            k = next(counter) % 2
            return tf.reshape(tf.nest.flatten(fn(xs[k], cs[k]))[-1], [-1])[0].numpy()

        todo[key] = run
    return _tf_rows(todo, repeats, min_time, info)


def _tf_rows(todo: dict, repeats: int, min_time: float, info: dict):
    """The peak memory of each training step (into ``info``), then the timed rows."""
    info["train_peak_bytes"] = train_peaks(todo, tf_peak_bytes)
    rows = timeit_many(todo, repeats, min_time)
    return rows, info


def _tf_ops(tf, tf_keras, flow, d, b, xla, route):
    """The timed operations, each ``fn(x, c)``; ``route(c)`` gives the flow's keyword
    arguments at context ``c`` (nothing for an unconditional flow)."""
    opt = tf_keras.optimizers.Adam(1e-5)
    variables = flow.trainable_variables
    fn = tf.function(jit_compile=xla)

    @fn
    def forward(x, c):
        flow.forward(x, **route(c))
        return flow.forward_log_det_jacobian(x, event_ndims=1, **route(c))

    @fn
    def log_prob(x, c):
        return d.log_prob(x, bijector_kwargs=route(c))

    @fn
    def sample(x, c):
        return d.sample(b, seed=tf.constant([1, 2]), bijector_kwargs=route(c))[0]

    @fn
    def train(x, c):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(d.log_prob(x, bijector_kwargs=route(c)))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    return {"forward": forward, "log_prob": log_prob, "sample": sample, "train": train}


# ------------------------------------------------------------------------- reporting
def jax_worker(cfg: dict, threads: int, repeats: int, min_time: float, compile_: bool):
    """flowbridge-JAX under ``jax.jit`` (the same spec and weights as the other workers,
    its forward checked against the float64 reference before timing) and the floor: the
    conditioner MLPs alone, jitted. ``train`` is one Adam step of ``-mean(log_prob)``
    (``jax.example_libraries.optimizers``). JAX keeps its own CPU thread pool."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.example_libraries import optimizers

    import flowbridge as fb

    dim, c, b, context = cfg["dim"], cfg["couplings"], cfg["batch"], cfg.get("context", 0)
    spec, params = flow_and_params(cfg, "exp")
    flow = fb.to_jax(spec, params)
    device = "cuda" if fb.backends.get("jax").runtime().devices()[-1] == "cuda" else "cpu"
    rng = np.random.default_rng(0)
    xs = [jnp.asarray(rng.standard_normal((b, dim)), jnp.float32) for _ in range(2)]
    cs = [jnp.asarray(rng.standard_normal((b, max(context, 1))), jnp.float32) for _ in range(2)]
    given = (lambda ci: (ci,)) if context else (lambda ci: ())
    ref = fb.to_numpy(spec, params).forward(np.asarray(xs[0]), *map(np.asarray, given(cs[0])))
    y = np.asarray(flow.forward(xs[0], *given(cs[0])))
    assert np.allclose(y, ref, rtol=1e-4, atol=1e-4), "flowbridge-jax differs from the reference"
    half = 0.5 * dim * np.log(2 * np.pi)

    def log_prob(flow, x, ci):
        z, ld = flow.inverse_with_log_det(x, *given(ci))
        return -0.5 * jnp.sum(z**2, -1) - half + ld

    init, update, get = optimizers.adam(1e-5)
    state = [init(flow)]

    @jax.jit
    def step(opt, x, ci):
        loss, grads = jax.value_and_grad(lambda f: -jnp.mean(log_prob(f, x, ci)))(get(opt))
        return update(0, grads, opt), loss

    def train(x, ci):
        state[0], loss = step(state[0], x, ci)
        return loss

    fns = {"forward": jax.jit(lambda f, x, ci: f.forward_with_log_det(x, *given(ci))),
           "log_prob": jax.jit(log_prob),
           "sample": jax.jit(lambda f, x, ci: f.forward(jax.random.normal(jax.random.PRNGKey(1),
                                                                         x.shape), *given(ci)))}  # fmt: skip
    counter = itertools.count()
    todo: dict = {}
    for op, fn in fns.items():
        def run(fn=fn):
            k = next(counter) % 2
            return jax.block_until_ready(fn(flow, xs[k], cs[k]))

        todo[("flowbridge-jax", op)] = run

    def run_train():
        k = next(counter) % 2
        return jax.block_until_ready(train(xs[k], cs[k]))

    todo[("flowbridge-jax", "train")] = run_train
    memory = {"flowbridge-jax": xla_temp_bytes(step, state[0], xs[0], cs[0])}
    floor_fns, memory["floor-jax"] = _jax_floor(params, c, dim // 2, context, optimizers, xs[0], cs[0])
    for op, fn in floor_fns.items():
        def run_floor(fn=fn):
            k = next(counter) % 2
            return jax.block_until_ready(fn(xs[k], cs[k]))

        todo[("floor-jax", op)] = run_floor
    if importlib.util.find_spec("flowjax") is not None:
        peer = flowjax_flow(spec, params, cfg)
        check_flowjax(peer, flow, xs[0], cs[0] if context else None)
        peer_fns, memory["flowjax"] = _flowjax_ops(peer, optimizers, xs[0], cs[0] if context else None)
        for op, fn in peer_fns.items():
            def run_peer(fn=fn):
                k = next(counter) % 2
                return jax.block_until_ready(fn(xs[k], cs[k] if context else None))

            todo[("flowjax", op)] = run_peer
    info = {"device": device, "jax": jax.__version__, "threads": "jax's own pool",
            "train_peak_bytes": memory}  # XLA's temporary memory of each training step
    return timeit_many(todo, repeats, min_time), info


def _jax_floor(params: dict, couplings: int, split: int, context: int, optimizers, x, c):
    """The JAX floor: every conditioner MLP once on the input's first ``split`` entries
    (with the context), as one ``lax.scan`` over their stacked weights, as flowbridge-JAX
    and flowjax run repeated layers; ``forward`` returns every output, ``train`` is their
    backward (weights and input, upstream ones, as torch's floor) and an Adam step.
    Returns the two calls and the training step's XLA temporary memory at ``x``, ``c``."""
    import jax
    import jax.numpy as jnp

    stacked = [(jnp.asarray(np.stack([params[f"layers.{i}.conditioner.{j}.kernel"]
                                      for i in range(0, 2 * couplings - 1, 2)])),
                jnp.asarray(np.stack([params[f"layers.{i}.conditioner.{j}.bias"]
                                      for i in range(0, 2 * couplings - 1, 2)])))
               for j in range(3)]  # fmt: skip

    def outputs(weights, xi, ci):
        def one(_, layer):
            hid = xi[..., :split]
            if context:
                hid = jnp.concatenate([hid, ci], axis=-1)
            for j, (k, bias) in enumerate(layer):
                hid = jnp.matmul(hid, k, precision=jax.lax.Precision.HIGHEST) + bias
                if j < 2:
                    hid = jax.nn.relu(hid)
            return None, hid

        return jax.lax.scan(one, None, weights)[1]

    init, update, get = optimizers.adam(1e-5)
    state = [init(stacked)]

    @jax.jit
    def step(opt, xi, ci):
        total = lambda w, v: jnp.sum(outputs(w, v, ci))  # noqa: E731
        grads, x_grad = jax.grad(total, argnums=(0, 1))(get(opt), xi)
        return update(0, grads, opt), x_grad

    def train(xi, ci):
        state[0], x_grad = step(state[0], xi, ci)
        return x_grad

    fns = {"forward": jax.jit(lambda xi, ci: outputs(stacked, xi, ci)), "train": train}
    return fns, xla_temp_bytes(step, state[0], x, c)


def flowjax_flow(spec, params: dict, cfg: dict):
    """flowjax's ``coupling_flow`` (flowjax >= 17) with :func:`flow_and_params`' exp-scale
    spec and weights: its ``Affine`` transformer with ``scale = exp(s)`` (its default is
    ``softplus(s) + 1e-2``), conditioners ``D//2 (+ context) -> hidden -> hidden``
    (``nn_depth=2``), ``invert=False`` (its transform is flowbridge's forward, noise to
    data), and the spec's permutations; flowjax permutes after every coupling, so the
    last permutation is the identity. Its conditioner's output is ``[shift_0, s_0, ...]``:
    the last layer's columns are reordered from flowbridge's ``[shift | s]``."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import paramax
    from flowjax.bijections import Affine
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow

    dim, c = cfg["dim"], cfg["couplings"]
    affine = eqx.tree_at(lambda a: a.scale, Affine(),
                         replace=paramax.Parameterize(jnp.exp, jnp.zeros(())))  # fmt: skip
    flow = coupling_flow(jax.random.key(0), base_dist=paramax.non_trainable(Normal(jnp.zeros(dim))),
                         transformer=affine, cond_dim=cfg.get("context") or None, flow_layers=c,
                         nn_width=cfg["hidden"], nn_depth=2, invert=False)  # fmt: skip
    couplings = range(0, 2 * c - 1, 2)
    cols = interleaved(dim - dim // 2)

    def stack(j, what):
        out = []
        for i in couplings:
            value = params[f"layers.{i}.conditioner.{j}.{what}"]
            value = value[..., cols] if j == 2 else value
            out.append(value.T if what == "kernel" else value)
        return jnp.asarray(np.stack(out))

    perms = np.stack([np.asarray(spec.layers[i].indices) for i in range(1, 2 * c - 1, 2)]
                     + [np.arange(dim)])  # fmt: skip
    parts = lambda f: f.bijection.bijection.bijections  # noqa: E731  (coupling, permute)
    return eqx.tree_at(
        lambda f: [*(parts(f)[0].conditioner.layers[j].weight for j in range(3)),
                   *(parts(f)[0].conditioner.layers[j].bias for j in range(3)),
                   parts(f)[1].permutation, parts(f)[1].inverse_permutation],
        flow,
        [*(stack(j, "kernel") for j in range(3)), *(stack(j, "bias") for j in range(3)),
         (jnp.asarray(perms),), (jnp.asarray(np.argsort(perms, -1)),)],
    )  # fmt: skip


def check_flowjax(peer, flow, x, context=None) -> None:
    """Assert that flowjax's flow is flowbridge-JAX's: forward, log-det and log-density
    (relative to their size, float32)."""
    import jax
    import jax.numpy as jnp

    given = () if context is None else (context,)
    y, ld = jax.vmap(peer.bijection.transform_and_log_det)(x, *given)
    y_fb, ld_fb = flow.forward_with_log_det(x, *given)
    z, ild = flow.inverse_with_log_det(x, *given)
    lp_fb = -0.5 * jnp.sum(z**2, -1) - 0.5 * x.shape[-1] * np.log(2 * np.pi) + ild
    lp = peer.log_prob(x, *given)
    for name, a, b in [("forward", y, y_fb), ("log-det", ld, ld_fb), ("log_prob", lp, lp_fb)]:
        a, b = np.asarray(a), np.asarray(b)
        worst = np.abs(a - b).max() / (1 + np.abs(b).max())
        assert worst < 1e-5, f"flowjax differs from flowbridge-jax: {name} by {worst:.2e}"


def _flowjax_ops(peer, optimizers, x, c):
    """flowjax's timed calls, each ``fn(x, context)`` jitted: forward (transform and
    log-det, vmapped over the batch as its ``Transformed`` does), ``log_prob``, ``sample``
    (``Transformed.sample``) and a training step, one Adam step of
    ``jax.example_libraries.optimizers`` as flowbridge-JAX's (over its trainable arrays:
    ``paramax.unwrap`` inside the step, as flowjax's own training does). Returns them and
    the training step's XLA temporary memory at ``x``, ``c``."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import paramax

    params, static = eqx.partition(peer, eqx.is_inexact_array)

    def log_prob(p, x, ci):
        return paramax.unwrap(eqx.combine(p, static)).log_prob(x, ci)

    init, update, get = optimizers.adam(1e-5)
    state = [init(params)]

    @jax.jit
    def step(opt, x, ci):
        loss, grads = jax.value_and_grad(lambda p: -jnp.mean(log_prob(p, x, ci)))(get(opt))
        return update(0, grads, opt), loss

    def train(x, ci):
        state[0], loss = step(state[0], x, ci)
        return loss

    @jax.jit
    def forward(p, x, ci):
        bijection = paramax.unwrap(eqx.combine(p, static)).bijection
        given = () if ci is None else (ci,)
        return jax.vmap(bijection.transform_and_log_det)(x, *given)

    @jax.jit
    def sample(p, x, ci):
        flow = paramax.unwrap(eqx.combine(p, static))  # a context's batch is the samples'
        return flow.sample(jax.random.key(1), (x.shape[0],) if ci is None else (), ci)

    fns = {"forward": lambda x, ci: forward(params, x, ci),
           "log_prob": jax.jit(lambda x, ci: log_prob(params, x, ci)),
           "sample": lambda x, ci: sample(params, x, ci), "train": train}  # fmt: skip
    return fns, xla_temp_bytes(step, state[0], x, c)


def _key(cfg: dict) -> tuple:
    """A size's key in the tables: (D, couplings, hidden, batch[, context])."""
    key = tuple(cfg[k] for k in ("dim", "couplings", "hidden", "batch"))
    return key + ((cfg["context"],) if cfg.get("context") else ())


def _table(results: dict) -> dict:
    """{config key: {impl: {op: seconds}}} of this module's runs (empty without them)."""
    out: dict = {}
    for r in results["runs"]:
        if r["group"] == "torch-peers":  # their own table (peers.py)
            continue
        key = _key(r["config"])
        for row in r["rows"]:
            out.setdefault(key, {}).setdefault(row["impl"], {})[row["op"]] = row["seconds"]
    return out


#: The ratio targets at the target size: (numerator, denominator, limit, ops). Against
#: the natives (issue 10), then issue 31's: each framework against its floor in the same
#: run, and flowbridge-JAX against flowjax.
TARGETS = (
    ("flowbridge-pyro", "native-pyro", 0.9, ("forward", "log_prob", "sample", "train")),
    ("flowbridge-tfp", "native-tfp", 0.9, ("forward", "log_prob", "train")),
    ("flowbridge-pyro", "floor-torch", 1.05, ("forward", "train")),
    ("flowbridge-tfp", "floor-tf", 1.1, ("forward",)),
    ("flowbridge-jax", "floor-jax", 1.05, ("train",)),
    ("flowbridge-jax", "flowjax", 1.0, ("train",)),
)


def targets(results: dict) -> list[dict]:
    """The ratio targets (:data:`TARGETS`) at the target size, each met or missed; a
    target whose implementations did not run (flowjax not installed) is left out."""
    t = _table(results).get(tuple(TARGET.values()))
    if not t:
        return []
    checks = []
    for ours, other, limit, ops in TARGETS:
        for op in ops:
            if op in t.get(ours, {}) and op in t.get(other, {}):
                ratio = t[ours][op] / t[other][op]
                checks.append({"what": f"{ours} / {other} {op}", "limit": limit, "ratio": ratio,
                               "met": ratio <= limit})  # fmt: skip
    return checks


def markdown(results: dict) -> list[str]:
    """The report's title, machine and versions, the targets, and a table per size."""
    m = results["machine"]
    lines = [f"# flowbridge benchmarks ({results['preset']})", "",
             f"Machine: {m.get('cpu', m['processor'])}, {m['cpus']} CPUs, {m['platform']}; "
             f"{results['threads']} threads per framework process; float32; median of "
             f"{results['repeats']} runs. Times in milliseconds per call; ratios are against "
             "the native flow of the same framework (JAX: flowjax), from the same run.",
             ""]  # fmt: skip
    infos = {r["group"]: {k: v for k, v in r["info"].items() if k != "train_peak_bytes"}
             for r in results["runs"] if r["group"] != "torch-peers"}  # fmt: skip
    lines.append("Versions: " + "; ".join(f"{g}: {i}" for g, i in infos.items()))
    if targets(results):
        lines += ["", "## Targets (D=64, 8 couplings, hidden 256, batch 1024)", "",
                  "| ratio | target | measured | |", "| --- | --- | --- | --- |"]  # fmt: skip
    for c in targets(results):
        lines.append(f"| {c['what']} | <= {c['limit']} | {c['ratio']:.2f} | "
                     f"{'met' if c['met'] else 'missed'} |")  # fmt: skip
    for key, impls in _table(results).items():
        dim, c, h, b, *context = key
        given = f", context={context[0]} (conditional)" if context else ""
        lines += ["", f"## D={dim}, couplings={c}, hidden={h}, batch={b}{given}", "",
                  "| impl | " + " | ".join(OPS) + " |", "| --- |" + " --- |" * len(OPS)]  # fmt: skip
        for impl in (*TORCH_IMPLS, *TF_IMPLS, *JAX_IMPLS):
            if impl not in impls:
                continue
            against = AGAINST[impl]  # the same framework's native flow; JAX's: flowjax
            native = impls.get(against, {})
            cells = []
            for op in OPS:
                if op not in impls[impl]:
                    cells.append("")
                    continue
                ms = impls[impl][op] * 1e3
                ratio = impls[impl][op] / native[op] if op in native else None
                own = impl.startswith("native") or impl == against
                cells.append(f"{ms:.3g}" + (f" ({ratio:.2f}x)" if ratio and not own else ""))
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
        runs = [r for r in results["runs"] if r["group"] != "torch-peers" and _key(r["config"]) == key]
        lines += memory_lines(runs, AGAINST)
    return lines


def plot(results: dict, path: Path) -> None:
    """Forward time against batch and against D (the others at the target size); a
    single size: bars of every operation there. Nothing without this module's runs."""
    table = _table(results)
    if not table:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, axis, index in [(axes[0], "batch", 3), (axes[1], "dim", 0)]:
        others = [i for i in range(4) if i != index]
        fixed = [k for k in table if all(k[i] == tuple(TARGET.values())[i] for i in others)]
        fixed.sort(key=lambda k: k[index])
        for impl in (*TORCH_IMPLS, *TF_IMPLS, *JAX_IMPLS):
            pts = [(k[index], table[k][impl]["forward"] * 1e3) for k in fixed
                   if impl in table[k] and "forward" in table[k][impl]]  # fmt: skip
            if len(pts) > 1:
                ax.plot(*zip(*pts, strict=True), marker="o", label=impl)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("forward + log-det, ms")
        ax.set_title(f"time against {axis} (others at the target size)")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=7)
    else:  # a single size draws no lines: bars of every op at that size instead
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(12, 5))
        key, impls = next(iter(table.items()))
        names = [i for i in (*TORCH_IMPLS, *TF_IMPLS, *JAX_IMPLS) if i in impls]
        for k, op in enumerate(OPS):
            ms = [impls[i].get(op, float("nan")) * 1e3 for i in names]
            ax.bar([j + 0.2 * k for j in range(len(names))], ms, width=0.2, label=op)
            for j, value in enumerate(ms):  # a floor times only what it has: say so
                if value != value:
                    ax.text(j + 0.2 * k, 0, "n/a", ha="center", va="bottom", fontsize=7,
                            rotation=90, color="0.4")  # fmt: skip
        ax.set_xticks([j + 0.3 for j in range(len(names))], names, rotation=25, ha="right",
                      fontsize=10)  # fmt: skip
        ax.tick_params(axis="y", labelsize=10)
        ax.set_ylabel("ms per call (lower is faster)", fontsize=11)
        ax.set_xlabel("implementation (n/a: not timed; a floor times the bare conditioners' "
                      "forward, and the torch floor a training step)", fontsize=11)  # fmt: skip
        ax.set_title("D={}, couplings={}, hidden={}, batch={}".format(*key[:4])
                     + (f", context={key[4]}" if len(key) > 4 else ""), fontsize=12)  # fmt: skip
        ax.legend(fontsize=10, title="operation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
