"""Eight schools (Rubin 1981), non-centred, in Pyro: AutoNormal against a flowbridge RealNVP
AutoNormalizingFlow, both judged against a NUTS reference.

    python examples/eight_schools_pyro.py            # full run, a few minutes on 2 cores
    python examples/eight_schools_pyro.py --fast     # smoke test (CI)

Prints the ELBO of each guide and the posterior mean and sd of mu and tau, and saves
``eight_schools_pyro.png`` (the tau marginals) in ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal, AutoNormalizingFlow
from tqdm import tqdm

import flowbridge as fb

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def model(y=Y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * theta_tilde, SIGMA), obs=y)


def flow_transform(dim: int):
    """The flowbridge flow over the 10 unconstrained latents (mu, log tau, theta_tilde)."""
    spec = fb.realnvp(dim, num_couplings=6, hidden=(64, 64), scale={"kind": "clamp"},
                      permutation="random", seed=0, name="eight_schools")  # fmt: skip
    return fb.to_pyro(spec)


def fit(guide, steps: int, lr: float, label: str) -> None:
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)}),
              Trace_ELBO(num_particles=16, vectorize_particles=True))  # fmt: skip
    bar = tqdm(range(steps), desc=f"fit {label}", mininterval=1.0)
    for step in bar:
        loss = svi.step()
        if step % 100 == 0:
            bar.set_postfix(elbo=f"{-loss:.2f}")


def elbo(guide, particles: int) -> float:
    torch.manual_seed(123)
    with torch.no_grad():
        loss = Trace_ELBO(num_particles=particles, vectorize_particles=True).loss(model, guide)
    return -loss


def summary(samples: dict) -> dict:
    return {f"{k} {s}": float(getattr(samples[k], s)()) for k in ("mu", "tau") for s in ("mean", "std")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=Path("."), help="where the PNG goes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps, draws, warmup = (300, 200, 200) if args.fast else (5000, 2000, 1000)
    torch.set_num_threads(2)
    pyro.set_rng_seed(args.seed)
    t0 = time.time()

    results, taus = {}, {}
    for label, make, lr in [
        ("AutoNormal", lambda: AutoNormal(model), 0.02),
        ("flowbridge RealNVP", lambda: AutoNormalizingFlow(model, flow_transform), 0.005),
    ]:
        pyro.clear_param_store()
        guide = make()
        fit(guide, steps, lr, label)
        draws_q = Predictive(model, guide=guide, num_samples=20000, parallel=True,
                             return_sites=["mu", "tau"])()
        results[label] = {"ELBO": elbo(guide, 20000 if not args.fast else 2000),
                          **summary(draws_q)}  # fmt: skip
        taus[label] = draws_q["tau"].numpy()

    mcmc = MCMC(NUTS(model, target_accept_prob=0.9), num_samples=draws, warmup_steps=warmup)
    mcmc.run()
    nuts = {k: v for k, v in mcmc.get_samples().items() if k in ("mu", "tau")}
    results["NUTS (reference)"] = {"ELBO": float("nan"), **summary(nuts)}
    taus["NUTS (reference)"] = nuts["tau"].numpy()

    columns = ["ELBO", "mu mean", "mu std", "tau mean", "tau std"]
    print(f"\n{'guide':<20}" + "".join(f"{c:>10}" for c in columns))
    for label, row in results.items():
        print(f"{label:<20}" + "".join(f"{row[c]:>10.3f}" for c in columns))
    ref = results["NUTS (reference)"]
    for label in ("AutoNormal", "flowbridge RealNVP"):
        err = {c: abs(results[label][c] - ref[c]) for c in ("tau mean", "tau std")}
        print(f"|{label} - NUTS|: tau mean {err['tau mean']:.3f}, tau sd {err['tau std']:.3f}")
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    plot(taus, args.out / "eight_schools_pyro.png")


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
    ax.set_title("Eight schools in Pyro: posterior of tau")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
