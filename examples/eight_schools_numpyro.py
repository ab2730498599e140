"""Eight schools (Rubin 1981), centred, in NumPyro: AutoNormal, AutoIAFNormal (NumPyro's own
flow guide) and a flowbridge RealNVP AutoNormalizingFlow, judged against NUTS.

    python examples/eight_schools_numpyro.py --out examples/results   # full run
    python examples/eight_schools_numpyro.py --fast                   # smoke test (CI)

The centred model (theta_j ~ N(mu, tau) sampled directly) has the funnel between tau and
the theta_j that mean-field guides cannot follow. The reference is NUTS on the same model
with the theta_j reparametrised non-centred (``LocScaleReparam``: the same posterior of
mu and tau, without the funnel's divergences). Each guide gets the same SVI budget
(Adam, 16 particles); the ELBO is estimated from 20000 particles. Prints the posterior
mean and sd of mu and tau per method, each guide's errors against NUTS, and saves
``eight_schools_numpyro.png`` (the tau marginals) in ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoIAFNormal, AutoNormal
from numpyro.infer.reparam import LocScaleReparam

import flowbridge as fb
from flowbridge.numpyro import AutoNormalizingFlow

Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def model(y=Y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", 8):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, SIGMA), obs=y)


def flow_spec(dim: int):
    """The flowbridge flow over the 10 unconstrained latents (mu, log tau, theta)."""
    return fb.realnvp(dim, num_couplings=6, hidden=(64, 64), scale={"kind": "clamp"},
                      permutation="random", seed=0, name="eight_schools")  # fmt: skip


def fit(guide, steps: int, lr: float, key):
    decay = lambda i: lr * 0.1 ** (i / steps)  # noqa: E731 (to a tenth over the run)
    svi = SVI(model, guide, numpyro.optim.Adam(decay), Trace_ELBO(num_particles=16))
    return svi.run(key, steps, progress_bar=False).params


def summary(draws: dict) -> dict:
    return {f"{k} {s}": float(getattr(np.asarray(draws[k]), s)()) for k in ("mu", "tau")
            for s in ("mean", "std")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=Path("."), help="where the PNG goes")
    args = parser.parse_args()
    steps, draws, warmup, particles = (300, 500, 300, 2000) if args.fast else (
        10000, 20000, 2000, 20000)  # fmt: skip
    t0 = time.time()
    key = jax.random.PRNGKey(0)
    results, taus = {}, {}
    guides = [("AutoNormal", lambda: AutoNormal(model), 0.02),
              ("AutoIAFNormal", lambda: AutoIAFNormal(model, num_flows=3), 0.005),
              ("flowbridge RealNVP", lambda: AutoNormalizingFlow(model, flow_spec), 0.005)]  # fmt: skip
    for label, make, lr in guides:
        guide = make()
        params = fit(guide, steps, lr, key)
        elbo = -Trace_ELBO(num_particles=particles).loss(jax.random.PRNGKey(1), params, model, guide)
        q = guide.sample_posterior(jax.random.PRNGKey(2), params, sample_shape=(particles,))
        results[label] = {"ELBO": float(elbo), **summary(q)}
        taus[label] = np.asarray(q["tau"])
        print(f"fitted {label} ({steps} steps)", flush=True)

    reparam = numpyro.handlers.reparam(model, config={"theta": LocScaleReparam(0)})
    mcmc = MCMC(NUTS(reparam, target_accept_prob=0.95), num_warmup=warmup, num_samples=draws,
                progress_bar=False)  # fmt: skip
    mcmc.run(jax.random.PRNGKey(3))
    nuts = mcmc.get_samples()
    results["NUTS (reference)"] = {"ELBO": float("nan"), **summary(nuts)}
    taus["NUTS (reference)"] = np.asarray(nuts["tau"])

    columns = ["ELBO", "mu mean", "mu std", "tau mean", "tau std"]
    print(f"\n{'guide':<20}" + "".join(f"{c:>10}" for c in columns))
    for label, row in results.items():
        print(f"{label:<20}" + "".join(f"{row[c]:>10.3f}" for c in columns))
    ref = results["NUTS (reference)"]
    print("\nerrors against NUTS:")
    print(f"{'guide':<20}" + "".join(f"{c:>10}" for c in columns[1:]) + f"{'sum':>10}")
    for label, *_ in guides:
        err = [abs(results[label][c] - ref[c]) for c in columns[1:]]
        print(f"{label:<20}" + "".join(f"{e:>10.3f}" for e in err) + f"{sum(err):>10.3f}")
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    plot(taus, args.out / "eight_schools_numpyro.png")


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
    ax.set_title("Eight schools (centred) in NumPyro: posterior of tau")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
