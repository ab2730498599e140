"""Density estimation of real handwritten digits with one RealNVP image flow, in Pyro and TFP.

    python examples/digits_density.py --out examples/results   # full run
    python examples/digits_density.py --fast                   # smoke test (CI)

The data: scikit-learn's bundled 8x8 digits (1,797 images of 17 grey levels, no
download), split 1,297 / 200 / 300 for training, validation and test, dequantized
(``fb.dequantize``: ``x = (k + u) / 17``, fresh noise every step, one fixed draw for the
validation and test sets). The data set is small, so every trained model keeps the
parameters of its best validation bits/dim (checked every 100 steps: early stopping, the
same rule for every model).

The model: ``fb.realnvp_image((1, 8, 8), logit=0.05, ...)``, RealNVP's multi-scale image
architecture (checkerboard couplings, squeeze, channel couplings, factor-out, checkerboard
couplings) behind the logit preprocessing, with ResNet conditioners. The same flow, from
the same initial parameters, is trained by maximum likelihood on the same minibatches
with the same noise in Pyro (``TransformedDistribution(base, [flow.inv])``, images
``(N, 1, 8, 8)``) and in TFP (``TransformedDistribution(base, tfb.Invert(flow))``,
images ``(N, 8, 8, 1)``, channels last), Adam with torch's epsilon in both. It reports
test bits/dim (``fb.bits_per_dim``: the discrete likelihood bound of the dequantized
data) for each framework, the gap between them, a Glow (``fb.glow``: ActNorm, invertible
1x1 convolutions, sigmoid-scaled couplings) trained in Pyro and evaluated with the same
weights in Pyro, TFP and JAX, and two baselines on the same data and
preprocessing: a diagonal Gaussian per pixel in logit space (closed form:
``[Logit, ActNorm]`` on the flattened images, initialised from the training data by
``fb.actnorm_init``) and a vector RealNVP on the flattened images (trained in Pyro). It
saves ``digits_density.png``: samples from both flows, test images, and the training
curves.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import flowbridge as fb  # noqa: E402

LEVELS, SHAPE, TEST, VALID, EVERY = 17, (1, 8, 8), 300, 200, 100
DIMS = int(np.prod(SHAPE))
LOG_2PI = float(np.log(2 * np.pi))


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) integer images (N, 1, 8, 8), a fixed split."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.int64).reshape(-1, *SHAPE)
    order = np.random.default_rng(0).permutation(len(images))
    test, rest = images[order[:TEST]], images[order[TEST:]]
    return rest[VALID:], rest[:VALID], test


def batches(train: np.ndarray, steps: int, size: int) -> list[np.ndarray]:
    """The dequantized minibatches both frameworks train on, float32 (N, 1, 8, 8)."""
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(train), (steps, size))
    return [fb.dequantize(train[r], LEVELS, rng).astype(np.float32) for r in rows]


def learning_rate(lr: float, step: int, steps: int) -> float:
    """``lr``, then a tenth of it for the last 20% of the steps (both frameworks)."""
    return lr if step < 0.8 * steps else 0.1 * lr


def standard_normal_log_prob(z: np.ndarray) -> np.ndarray:
    flat = z.reshape(len(z), -1)
    return -0.5 * np.sum(flat**2, axis=1) - 0.5 * flat.shape[1] * LOG_2PI


class Best:
    """Early stopping: the parameters (neutral, float64) of the best validation bits/dim
    seen at the checks so far, and the curve of those checks."""

    def __init__(self, valid_x: np.ndarray):
        self.valid_x, self.bits, self.params, self.curve = valid_x, np.inf, None, []

    def check(self, step: int, log_prob, export) -> None:
        bits = float(np.mean(fb.bits_per_dim(log_prob(self.valid_x), DIMS, LEVELS)))
        self.curve.append((step, bits))
        if bits < self.bits:
            self.bits, self.params = bits, export()


def train_pyro(spec, params, data: list[np.ndarray], lr: float, valid_x: np.ndarray,
               event: tuple = SHAPE, desc: str = "train in Pyro"):  # fmt: skip
    """Maximum likelihood in Pyro, the best validation parameters kept:
    (log_prob, sample, losses, validation curve)."""
    import pyro.distributions as dist
    import torch

    torch.manual_seed(0)
    flow = fb.to_pyro(spec, params)  # forward: image -> latent, as RealNVP's f
    base = dist.Normal(torch.zeros(spec.output_shape), 1.0).to_event(len(spec.output_shape))
    q = dist.TransformedDistribution(base, [flow.inv])
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)

    def log_prob(x):
        with torch.no_grad():
            batch = torch.tensor(x.reshape(len(x), *event), dtype=torch.float32)
            return q.log_prob(batch).double().numpy()

    losses, best = [], Best(valid_x)
    bar = tqdm(data, desc=desc, mininterval=2.0)
    for step, x in enumerate(bar):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, step, len(data))
        loss = -q.log_prob(torch.from_numpy(x.reshape(len(x), *event))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % EVERY == 0 or step + 1 == len(data):
            best.check(step + 1, log_prob, lambda: fb.params_from_pyro(flow))
            bar.set_postfix(valid_bits=f"{best.curve[-1][1]:.3f}")
    fb.module_for(spec, "pyro").load_neutral_params(flow, best.params)

    def sample(n):
        with torch.no_grad():
            return q.sample((n,)).numpy()

    return log_prob, sample, np.array(losses), best.curve, best.params


def tfp_density(spec, params):
    """The flow in TFP (channels last) and its density, ``TransformedDistribution(base,
    tfb.Invert(flow))`` over a standard normal on the flow's output shape."""
    flow = fb.to_tfp(spec, params)  # channels last; imports TensorFlow quietly
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    c, h, w = spec.output_shape
    base = tfd.Sample(tfd.Normal(tf.constant(0.0), 1.0), [h, w, c])
    return flow, tfd.TransformedDistribution(base, tfp.bijectors.Invert(flow))


def train_tfp(spec, params, data: list[np.ndarray], lr: float, valid_x: np.ndarray):
    """The same in TFP, channels last, from the same initial weights."""
    flow, q = tfp_density(spec, params)
    import tensorflow as tf
    import tf_keras

    optimizer = tf_keras.optimizers.Adam(lr, epsilon=1e-8)  # torch's epsilon, as in Pyro

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(q.log_prob(x))
        grads = tape.gradient(loss, flow.trainable_variables)
        optimizer.apply_gradients(zip(grads, flow.trainable_variables, strict=True))
        return loss

    def log_prob(x):
        return q.log_prob(tf.constant(x.transpose(0, 2, 3, 1), tf.float32)).numpy()

    losses, best = [], Best(valid_x)
    bar = tqdm(data, desc="train in TFP", mininterval=2.0)
    for i, x in enumerate(bar):
        optimizer.learning_rate.assign(learning_rate(lr, i, len(data)))
        losses.append(float(step(tf.constant(x.transpose(0, 2, 3, 1)))))
        if (i + 1) % EVERY == 0 or i + 1 == len(data):
            best.check(i + 1, log_prob, lambda: fb.params_from_tfp(flow))
            bar.set_postfix(valid_bits=f"{best.curve[-1][1]:.3f}")
    fb.module_for(spec, "tfp").load_neutral_params(flow, best.params)

    def sample(n):
        return q.sample(n, seed=(3, 4)).numpy().transpose(0, 3, 1, 2)

    return log_prob, sample, np.array(losses, dtype=np.float64), best.curve


def gaussian_baseline(train_x: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Test log-densities of the per-pixel diagonal Gaussian in logit space, fitted in
    closed form: ``[Logit, ActNorm]`` on flattened images, ActNorm set from the training
    data (its output is then standard normal per pixel over the training set)."""
    spec = fb.FlowSpec(name="diagonal_gaussian", event_shape=(DIMS,),
                       layers=[fb.Logit(alpha=0.05), fb.ActNorm()])  # fmt: skip
    params = fb.actnorm_init(spec, fb.init_params(spec), train_x.reshape(len(train_x), -1))
    z, log_det = fb.to_numpy(spec, params).forward_with_log_det(test_x.reshape(len(test_x), -1))
    return standard_normal_log_prob(z) + log_det


def vector_realnvp_baseline(data: list[np.ndarray], valid_x: np.ndarray, test_x: np.ndarray,
                            lr: float, fast: bool) -> np.ndarray:  # fmt: skip
    """Test log-densities of a vector RealNVP on the flattened images (Pyro, the same
    minibatches and early stopping)."""
    vector = fb.realnvp(DIMS, num_couplings=4 if fast else 8, hidden=(256, 256),
                        permutation="random", scale={"kind": "soft_clamp"})  # fmt: skip
    spec = fb.FlowSpec(name="vector_realnvp", event_shape=(DIMS,),
                       layers=[fb.Logit(alpha=0.05), *vector.layers])  # fmt: skip
    log_prob, *_ = train_pyro(spec, fb.init_params(spec), data, lr, valid_x, (DIMS,),
                              "train the vector RealNVP")  # fmt: skip
    return log_prob(test_x)


def glow_rows(train: np.ndarray, data: list[np.ndarray], valid_x: np.ndarray,
              test_x: np.ndarray, lr: float, fast: bool) -> tuple[dict[str, np.ndarray], int]:  # fmt: skip
    """Test log-densities of a Glow (``fb.glow``: squeeze, ActNorm, 1x1 convolution and
    sigmoid-scaled channel couplings, two levels) trained in Pyro from ActNorms set on
    512 training images, then the same trained weights evaluated in TFP (channels last)
    and in JAX (float32 each); and the step of its best validation."""
    spec = fb.glow(SHAPE, num_scales=2, steps=1 if fast else 4, blocks=1,
                   channels=8 if fast else 32, logit=0.05, name="digits_glow")  # fmt: skip
    start = fb.dequantize(train[:512], LEVELS, np.random.default_rng(5))
    params = fb.actnorm_init(spec, fb.init_params(spec, seed=0), start)
    pyro_lp, _, _, curve, trained = train_pyro(spec, params, data, lr, valid_x,
                                               desc="train Glow in Pyro")  # fmt: skip
    import jax.numpy as jnp
    import tensorflow as tf

    _, q = tfp_density(spec, trained)
    z, log_det = fb.to_jax(spec, trained).forward_with_log_det(jnp.asarray(test_x, jnp.float32))
    jax_lp = standard_normal_log_prob(np.asarray(z, np.float64).reshape(len(test_x), -1))
    rows = {"flowbridge Glow, Pyro": pyro_lp(test_x),
            "flowbridge Glow, TFP (same weights)": q.log_prob(
                tf.constant(test_x.transpose(0, 2, 3, 1), tf.float32)).numpy().astype(np.float64),
            "flowbridge Glow, JAX (same weights)": jax_lp + np.asarray(log_det, np.float64)}  # fmt: skip
    return rows, min(curve, key=lambda c: c[1])[0]


def plot(samples: dict[str, np.ndarray], test_x: np.ndarray, curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def grid(images: np.ndarray) -> np.ndarray:
        """6 x 6 images, a blank pixel between neighbours."""
        images = np.pad(np.clip(images[:36, 0], 0.0, 1.0), ((0, 0), (0, 1), (0, 1)))
        rows = [np.concatenate(list(images[r * 6 : r * 6 + 6]), axis=1) for r in range(6)]
        return np.concatenate(rows, axis=0)[:-1, :-1]

    panels = {**{f"samples, {k}": v for k, v in samples.items()}, "test images": test_x}
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.0 * (len(panels) + 1), 4.0))
    for ax, (title, images) in zip(axes, panels.items(), strict=False):
        ax.imshow(grid(images), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    ax = axes[-1]
    for (name, (losses, valid)), color in zip(curves.items(), ("C0", "C3"), strict=True):
        window = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        bits = fb.bits_per_dim(-smooth, DIMS, LEVELS)
        ax.plot(np.arange(len(smooth)) + window, bits, color=color, label=f"{name}, training")
        steps, valid_bits = zip(*valid, strict=True)
        ax.plot(steps, valid_bits, color=color, linestyle="--", label=f"{name}, validation")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("bits/dim (training: moving average)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=Path("."), help="where files go")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps (default 2000)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(2)
    t0 = time.time()
    steps = args.steps or (40 if args.fast else 2000)
    spec = fb.realnvp_image(SHAPE, num_scales=2, blocks=1 if args.fast else 2,
                            channels=8 if args.fast else 32, logit=0.05,
                            scale={"kind": "soft_clamp", "bound": 3.0},
                            name="digits_realnvp")  # fmt: skip
    train, valid, test = digits()
    data = batches(train, steps, 64)
    valid_x = fb.dequantize(valid, LEVELS, np.random.default_rng(2))
    test_x = fb.dequantize(test, LEVELS, np.random.default_rng(3))
    params = fb.init_params(spec, seed=0)  # the couplings start as the identity
    lr = 1e-3
    pyro_lp, pyro_sample, pyro_losses, pyro_valid, _ = train_pyro(spec, params, data, lr,
                                                                  valid_x)  # fmt: skip
    tfp_lp, tfp_sample, tfp_losses, tfp_valid = train_tfp(spec, params, data, lr, valid_x)
    rows = {
        "flowbridge RealNVP, Pyro": pyro_lp(test_x),
        "flowbridge RealNVP, TFP": tfp_lp(test_x),
        "diagonal Gaussian (logit space)": gaussian_baseline(
            fb.dequantize(train, LEVELS, np.random.default_rng(4)), test_x),
        "vector RealNVP (flattened, Pyro)": vector_realnvp_baseline(data, valid_x, test_x, lr,
                                                                    args.fast),
    }  # fmt: skip
    glow, glow_step = glow_rows(train, data, valid_x, test_x, lr, args.fast)
    rows.update(glow)
    print(f"8x8 digits: {len(train)} training, {len(valid)} validation and {len(test)} test "
          f"images, {LEVELS} levels; image flow of {fb.param_count(spec)} weights "
          f"({len(spec.layers)} layers), {steps} Adam steps of 64, best validation kept "
          f"(Pyro at step {min(pyro_valid, key=lambda c: c[1])[0]}, TFP at step "
          f"{min(tfp_valid, key=lambda c: c[1])[0]}, Glow at step {glow_step})")  # fmt: skip
    print(f"{'model':<36} {'test bits/dim':>14}")
    bits = {}
    for name, log_prob in rows.items():
        bits[name] = float(np.mean(fb.bits_per_dim(log_prob, DIMS, LEVELS)))
        print(f"{name:<36} {bits[name]:14.4f}")
    a, b = bits["flowbridge RealNVP, Pyro"], bits["flowbridge RealNVP, TFP"]
    print(f"Pyro - TFP gap: {abs(a - b):.4f} bits/dim ({100 * abs(a - b) / min(a, b):.2f}%)")
    spread = [bits[name] for name in glow]
    print(f"Glow, the same weights in Pyro, TFP and JAX: largest gap "
          f"{max(spread) - min(spread):.1e} bits/dim")
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    path = args.out / "digits_density.png"
    samples = {"Pyro": pyro_sample(36), "TFP": tfp_sample(36)}
    plot(samples, test_x, {"Pyro": (pyro_losses, pyro_valid), "TFP": (tfp_losses, tfp_valid)},
         path)  # fmt: skip
    print(f"saved {path}")


if __name__ == "__main__":
    main()
