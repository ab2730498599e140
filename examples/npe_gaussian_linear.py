"""Neural posterior estimation on a linear-Gaussian simulator, in Pyro, TFP and JAX.

    python examples/npe_gaussian_linear.py --out examples/results   # full run
    python examples/npe_gaussian_linear.py --fast                   # smoke test (CI)

The task: a parameter theta in R^5 with prior N(0, I), data x = A theta + sigma * noise
in R^8 (A a fixed random matrix, sigma 0.5). Its posterior is Gaussian and known in closed
form: Sigma = (I + A^T A / sigma^2)^-1, mu = Sigma A^T x / sigma^2, with strong
correlations between the entries of theta.

One conditional RealNVP q(theta | x) (flowbridge spec, ``context_dim=8``), from the same
initial parameters, is trained by maximum likelihood on the same simulated pairs
(theta, x) in Pyro (``ConditionalTransformedDistribution``) and in TFP
(``TransformedDistribution`` with ``bijector_kwargs={"conditional_input": x}``) and in JAX
(``fb.to_jax``: the flow is a pytree, trained by a jitted Adam step of
``jax.example_libraries.optimizers``), with the same minibatches and learning-rate
schedule (Adam with torch's epsilon in all three). For
held-out observations the script reports KL(p || q), the exact posterior against each
flow (Monte Carlo over exact posterior draws, with the exact log-density), and the same
for a Gaussian baseline: the amortized mean-field Gaussian
(the exact posterior mean, linear in x, with the exact marginal variances and no
correlation: the best any diagonal Gaussian q(theta | x) can do). It saves
``npe_gaussian_linear.png``: exact and learned posteriors of (theta_1, theta_2) for three
observations.
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

THETA, DATA, SIGMA = 5, 8, 0.5
SPEC = fb.realnvp(THETA, num_couplings=6, hidden=(64, 64), permutation="random",
                  context_dim=DATA, name="npe_gaussian_linear")  # fmt: skip
A = np.random.default_rng(42).standard_normal((DATA, THETA)) / np.sqrt(THETA)
LOG_2PI = float(np.log(2 * np.pi))


def simulate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    theta = rng.standard_normal((n, THETA))
    return theta, theta @ A.T + SIGMA * rng.standard_normal((n, DATA))


def posterior(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact posterior means (n, THETA) and the covariance (the same for every x)."""
    cov = np.linalg.inv(np.eye(THETA) + A.T @ A / SIGMA**2)
    return x @ A @ cov / SIGMA**2, cov


def gaussian_log_prob(theta, mean, cov) -> np.ndarray:
    diff = theta - mean
    inv, (_, logdet) = np.linalg.inv(cov), np.linalg.slogdet(cov)
    return -0.5 * (np.einsum("...i,ij,...j->...", diff, inv, diff) + logdet + THETA * LOG_2PI)


def batches(n_pairs: int, steps: int, size: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, n_pairs, (steps, size))


def learning_rate(lr: float, step: int, steps: int) -> float:
    """The schedule both frameworks follow: ``lr``, then a tenth of it for the last 30%
    of the steps (a late loss spike at the full rate would decide the result)."""
    return lr if step < 0.7 * steps else 0.1 * lr


def train_pyro(spec, theta, x, order, lr):
    """Maximum likelihood of theta given x, minibatches ``order``: (log_q, sample)."""
    import pyro.distributions as dist
    import torch

    torch.manual_seed(0)
    flow = fb.to_pyro(spec, fb.init_params(spec, seed=0))
    base = dist.Normal(torch.zeros(spec.dim), 1.0).to_event(1)
    q = dist.ConditionalTransformedDistribution(base, [flow])
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    theta_t, x_t = torch.tensor(theta, dtype=torch.float32), torch.tensor(x, dtype=torch.float32)
    bar = tqdm(order, desc="train in Pyro", mininterval=2.0)
    for step, rows in enumerate(bar):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, step, len(order))
        loss = -q.condition(x_t[rows]).log_prob(theta_t[rows]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 200 == 0:
            bar.set_postfix(nll=f"{loss.item():.3f}")

    def log_q(theta, x):
        with torch.no_grad():
            context = torch.tensor(x, dtype=torch.float32)
            return q.condition(context).log_prob(torch.tensor(theta, dtype=torch.float32)).numpy()

    def sample(x, n):
        with torch.no_grad():
            return q.condition(torch.tensor(x, dtype=torch.float32)).sample((n,)).numpy()

    return log_q, sample


def train_tfp(spec, theta, x, order, lr):
    """The same in TFP, from the same initial weights: (log_q, sample)."""
    bijector = fb.to_tfp(spec, fb.init_params(spec, seed=0))  # imports TensorFlow quietly
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras

    tfd = tfp.distributions
    q = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(spec.dim)), bijector)
    optimizer = tf_keras.optimizers.Adam(lr, epsilon=1e-8)  # torch's epsilon, as in Pyro
    theta_t, x_t = tf.constant(theta, tf.float32), tf.constant(x, tf.float32)

    @tf.function(jit_compile=True)
    def step(rows):
        with tf.GradientTape() as tape:
            context = tf.gather(x_t, rows)
            log_prob = q.log_prob(tf.gather(theta_t, rows),
                                  bijector_kwargs={"conditional_input": context})  # fmt: skip
            loss = -tf.reduce_mean(log_prob)
        grads = tape.gradient(loss, bijector.trainable_variables)
        optimizer.apply_gradients(zip(grads, bijector.trainable_variables, strict=True))
        return loss

    bar = tqdm(order, desc="train in TFP", mininterval=2.0)
    for i, rows in enumerate(bar):
        optimizer.learning_rate.assign(learning_rate(lr, i, len(order)))
        loss = step(tf.constant(rows))
        if i % 200 == 0:
            bar.set_postfix(nll=f"{float(loss):.3f}")

    def log_q(theta, x):
        kwargs = {"conditional_input": tf.constant(x, tf.float32)}
        return q.log_prob(tf.constant(theta, tf.float32), bijector_kwargs=kwargs).numpy()

    def sample(x, n):
        kwargs = {"conditional_input": tf.constant(x, tf.float32)}
        return q.sample(n, seed=(3, 4), bijector_kwargs=kwargs).numpy()

    return log_q, sample


def train_jax(spec, theta, x, order, lr):
    """The same in JAX, from the same initial weights: (log_q, sample). The flow is a
    pytree of its weights, so the optimizer's state is the flow's shape."""
    import jax
    import jax.numpy as jnp
    from jax.example_libraries import optimizers

    flow = fb.to_jax(spec, fb.init_params(spec, seed=0))
    half = 0.5 * spec.dim * LOG_2PI

    def log_prob(flow, theta, context):
        z, log_det = flow.inverse_with_log_det(theta, context)
        return -0.5 * jnp.sum(z**2, -1) - half + log_det

    schedule = lambda i: jnp.where(i < 0.7 * len(order), lr, 0.1 * lr)  # noqa: E731
    init, update, get = optimizers.adam(schedule, eps=1e-8)  # torch's epsilon, as in Pyro
    theta_j, x_j = jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32)

    @jax.jit
    def step(i, state, rows):
        loss, grads = jax.value_and_grad(
            lambda f: -jnp.mean(log_prob(f, theta_j[rows], x_j[rows])))(get(state))  # fmt: skip
        return update(i, grads, state), loss

    state = init(flow)
    bar = tqdm(order, desc="train in JAX", mininterval=2.0)
    for i, rows in enumerate(bar):
        state, loss = step(i, state, jnp.asarray(rows))
        if i % 200 == 0:
            bar.set_postfix(nll=f"{float(loss):.3f}")
    flow = get(state)

    def log_q(theta, x):
        return np.asarray(log_prob(flow, jnp.asarray(theta, jnp.float32), jnp.asarray(x, jnp.float32)))

    def sample(x, n):
        z = jax.random.normal(jax.random.PRNGKey(3), (n, spec.dim))
        return np.asarray(flow.forward(z, jnp.broadcast_to(jnp.asarray(x, jnp.float32), (n, DATA))))

    return log_q, sample


def kl_to_exact(log_q, x_obs, draws: int, rng) -> np.ndarray:
    """KL(p(theta | x) || q(theta | x)) per observation, Monte Carlo over exact draws."""
    means, cov = posterior(x_obs)
    chol = np.linalg.cholesky(cov)
    out = []
    for mean, x in zip(means, x_obs, strict=True):
        theta = mean + rng.standard_normal((draws, THETA)) @ chol.T
        context = np.broadcast_to(x, (draws, DATA))
        out.append(np.mean(gaussian_log_prob(theta, mean, cov) - log_q(theta, context)))
    return np.array(out)


def mean_field_log_q(theta, x):
    means, cov = posterior(np.asarray(x))
    return gaussian_log_prob(theta, means, np.diag(np.diag(cov)))


def plot(x_obs, samplers, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means, cov = posterior(x_obs)
    circle = np.stack([np.cos(np.linspace(0, 2 * np.pi, 200)),
                       np.sin(np.linspace(0, 2 * np.pi, 200))])  # fmt: skip

    def ellipse(ax, mean, c, **style):
        """The 1- and 2-sd ellipses of a 2-D Gaussian (mean, covariance c)."""
        root, width = np.linalg.cholesky(c), style.pop("lw")
        for k, scale in ((1, 1.0), (2, 0.6)):
            pts = mean[:, None] + k * root @ circle
            ax.plot(pts[0], pts[1], lw=width * scale, **style)

    fig, axes = plt.subplots(1, len(x_obs), figsize=(4.4 * len(x_obs), 4.2))
    styles = [("C0", "-"), ("C3", "--"), ("C2", ":")]
    for k, ax in enumerate(np.atleast_1d(axes)):
        ellipse(ax, means[k][:2], cov[:2, :2], color="black", lw=3.0, alpha=0.35)
        ax.plot([], [], color="black", lw=3.0, alpha=0.35, label="exact")
        for (name, sample), (color, line) in zip(samplers.items(), styles, strict=True):
            s = np.asarray(sample(x_obs[k], 4000))[:, :2]
            ellipse(ax, s.mean(0), np.cov(s.T), color=color, ls=line, lw=1.6)
            ax.plot(*s.mean(0), marker="+", color=color, ms=10)
            ax.plot([], [], color=color, ls=line, lw=1.6, label=name)
        ax.set_title(f"observation {k + 1}: p(theta_1, theta_2 | x)")
        ax.set_xlabel("theta_1")
        ax.set_ylabel("theta_2")
    np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8,
                                  title="1 and 2 sd ellipses, + means")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=Path("."), help="where files go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(2)
    t0 = time.time()
    n_pairs, steps, observations, draws = (2000, 150, 4, 500) if args.fast else (
        50_000, 6000, 20, 4000)  # fmt: skip
    theta, x = simulate(n_pairs, np.random.default_rng(0))
    order = batches(n_pairs, steps, 256)
    models = {"flowbridge Pyro": train_pyro(SPEC, theta, x, order, 1e-3),
              "flowbridge TFP": train_tfp(SPEC, theta, x, order, 1e-3),
              "flowbridge JAX": train_jax(SPEC, theta, x, order, 1e-3)}  # fmt: skip
    _, x_obs = simulate(observations, np.random.default_rng(1))
    rows = {name: kl_to_exact(log_q, x_obs, draws, np.random.default_rng(2))
            for name, (log_q, _) in models.items()}  # fmt: skip
    rows["mean-field Gaussian"] = kl_to_exact(mean_field_log_q, x_obs, draws,
                                              np.random.default_rng(2))  # fmt: skip
    print(f"{n_pairs} simulated pairs, {steps} Adam steps of 256, {observations} held-out "
          f"observations, {draws} exact posterior draws each")  # fmt: skip
    print(f"{'q(theta | x)':<22} {'KL mean':>9} {'KL max':>9}")
    for name, kl in rows.items():
        print(f"{name:<22} {kl.mean():9.4f} {kl.max():9.4f}")
    pyro_kl, tfp_kl = rows["flowbridge Pyro"].mean(), rows["flowbridge TFP"].mean()
    jax_kl = rows["flowbridge JAX"].mean()
    print(f"|Pyro - TFP| mean KL: {abs(pyro_kl - tfp_kl):.4f}; |Pyro - JAX| mean KL: "
          f"{abs(pyro_kl - jax_kl):.4f}")
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    path = args.out / "npe_gaussian_linear.png"
    plot(x_obs[:3], {name: sample for name, (_, sample) in models.items()}, path)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
