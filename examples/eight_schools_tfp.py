"""Eight schools (Rubin 1981), non-centred, in TensorFlow Probability: a mean-field normal
surrogate against a flowbridge RealNVP bijector, both fitted with
``tfp.vi.fit_surrogate_posterior`` and judged against TFP's own NUTS.

    python examples/eight_schools_tfp.py            # full run, a few minutes on 2 cores
    python examples/eight_schools_tfp.py --fast     # smoke test (CI)

Prints the ELBO of each surrogate and the posterior mean and sd of mu and tau, and saves
``eight_schools_tfp.png`` (the tau marginals) in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402
from tqdm import tqdm  # noqa: E402

import flowbridge as fb  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(2)  # before any op runs
tfd = tfp.distributions
Y = tf.constant([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = tf.constant([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
DIM = 10  # unconstrained latents: mu, log tau, theta_tilde[8]


def target_log_prob(z):
    """Joint log density of (mu, log tau, theta_tilde) and the data, z of shape (..., 10)."""
    mu, log_tau, theta_tilde = z[..., 0], z[..., 1], z[..., 2:]
    tau = tf.exp(log_tau)
    lp = tfd.Normal(0.0, 5.0).log_prob(mu)
    lp += tfd.HalfCauchy(0.0, 5.0).log_prob(tau) + log_tau  # + log |d tau / d log tau|
    lp += tf.reduce_sum(tfd.Normal(0.0, 1.0).log_prob(theta_tilde), -1)
    theta = mu[..., None] + tau[..., None] * theta_tilde
    return lp + tf.reduce_sum(tfd.Normal(theta, SIGMA).log_prob(Y), -1)


def mean_field():
    loc = tf.Variable(tf.zeros(DIM), name="loc")
    scale = tfp.util.TransformedVariable(0.1 * tf.ones(DIM), tfp.bijectors.Softplus())
    return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)


def flowbridge_flow():
    spec = fb.realnvp(DIM, num_couplings=6, hidden=(64, 64), scale={"kind": "clamp"},
                      permutation="random", seed=0, name="eight_schools")  # fmt: skip
    base = tfd.MultivariateNormalDiag(loc=tf.zeros(DIM))
    return tfd.TransformedDistribution(base, fb.to_tfp(spec))


def fit(q, steps: int, lr: float, label: str) -> None:
    """One fit_surrogate_posterior call (traced once); progress from inside the loop."""
    bar = tqdm(total=steps, desc=f"fit {label}", mininterval=1.0)

    def tick(loss):
        bar.update()
        if bar.n % 100 == 0:
            bar.set_postfix(elbo=f"{-float(loss):.2f}")
        return loss

    def trace_fn(traced):
        return tf.py_function(tick, [traced.loss], Tout=tf.float32)

    tfp.vi.fit_surrogate_posterior(
        target_log_prob, q, optimizer=tf_keras.optimizers.Adam(lr), num_steps=steps,
        sample_size=16, trace_fn=trace_fn, seed=(0, 17),
    )  # fmt: skip
    bar.close()


def elbo(q, n: int) -> float:
    z = q.sample(n, seed=(123, 0))
    return float(tf.reduce_mean(target_log_prob(z) - q.log_prob(z)))


def summary(z) -> dict:
    mu, tau = z[:, 0].numpy(), np.exp(z[:, 1].numpy())
    return {"mu mean": mu.mean(), "mu std": mu.std(), "tau mean": tau.mean(), "tau std": tau.std()}


def nuts(draws: int, warmup: int, chains: int = 4):
    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        tfp.mcmc.NoUTurnSampler(target_log_prob, step_size=0.3),
        num_adaptation_steps=int(0.8 * warmup), target_accept_prob=0.9,
    )  # fmt: skip

    @tf.function(jit_compile=True)
    def run(init):
        return tfp.mcmc.sample_chain(draws, init, kernel=kernel, num_burnin_steps=warmup,
                                     trace_fn=None, seed=(42, 7))  # fmt: skip

    with tqdm(total=1, desc=f"NUTS {chains} chains x {warmup}+{draws}") as bar:
        samples = run(tf.zeros([chains, DIM]))
        bar.update()
    return tf.reshape(samples, [-1, DIM])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=Path("."), help="where the PNG goes")
    args = parser.parse_args()
    steps, draws, warmup = (300, 100, 100) if args.fast else (5000, 1000, 1000)
    tf.random.set_seed(0)
    t0 = time.time()

    results, taus = {}, {}
    for label, make, lr in [("mean-field normal", mean_field, 0.02),
                            ("flowbridge RealNVP", flowbridge_flow, 0.005)]:  # fmt: skip
        q = make()
        fit(q, steps, lr, label)
        z = q.sample(20000, seed=(5, 5))
        results[label] = {"ELBO": elbo(q, 20000), **summary(z)}
        taus[label] = np.exp(z[:, 1].numpy())

    z = nuts(draws, warmup)
    results["NUTS (reference)"] = {"ELBO": float("nan"), **summary(z)}
    taus["NUTS (reference)"] = np.exp(z[:, 1].numpy())

    columns = ["ELBO", "mu mean", "mu std", "tau mean", "tau std"]
    print(f"\n{'surrogate':<20}" + "".join(f"{c:>10}" for c in columns))
    for label, row in results.items():
        print(f"{label:<20}" + "".join(f"{row[c]:>10.3f}" for c in columns))
    ref = results["NUTS (reference)"]
    for label in ("mean-field normal", "flowbridge RealNVP"):
        err = {c: abs(results[label][c] - ref[c]) for c in ("tau mean", "tau std")}
        print(f"|{label} - NUTS|: tau mean {err['tau mean']:.3f}, tau sd {err['tau std']:.3f}")
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    plot(taus, args.out / "eight_schools_tfp.png")


def plot(taus: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 25, 60)
    for label, tau in taus.items():
        ax.hist(tau, bins=bins, density=True, histtype="step", label=label, linewidth=1.5)
    ax.set_xlabel("tau")
    ax.set_ylabel("density")
    ax.set_title("Eight schools in TFP: posterior of tau")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
