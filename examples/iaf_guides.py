"""One IAF spec as a variational guide in Pyro and in NumPyro, against each framework's own
AutoIAFNormal, on two posteriors: the centred eight schools (judged against NUTS) and a
Bayesian linear regression whose posterior is known exactly.

    python examples/iaf_guides.py --out examples/results   # full run, a few minutes on 2 cores
    python examples/iaf_guides.py --fast                   # smoke test (CI)

The flowbridge guide is ``fb.maf(D, direction="iaf")``: 3 IAF layers, MADEs of two hidden
layers of ``2D`` units with ELU, Pyro's clamped log-scale and hidden degrees, the orders
alternating (as NumPyro's ``AutoIAFNormal(num_flows=3)``, which reverses between its
layers). The same spec function makes the Pyro guide (Pyro's ``AutoNormalizingFlow`` over
``fb.to_pyro``) and the NumPyro one (``flowbridge.numpyro.AutoNormalizingFlow``). Pyro's
``AutoIAFNormal`` gets ``num_transforms=3`` and the same hidden widths, NumPyro's
``num_flows=3`` and ``hidden_dims`` the same. Every guide gets the same SVI budget (Adam,
the learning rate decaying to a tenth, 8 particles); ELBOs from 20000 particles. Prints a
table per framework and problem: the ELBO, and the sum over the reported posterior means
and standard deviations of the absolute errors against the reference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as dist
import torch
from numpyro.infer import MCMC, NUTS
from numpyro.infer import SVI as NSVI
from numpyro.infer import Trace_ELBO as NTrace_ELBO
from numpyro.infer.autoguide import AutoIAFNormal as NAutoIAFNormal
from numpyro.infer.reparam import LocScaleReparam
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoNormalizingFlow

import flowbridge as fb
from flowbridge.numpyro import AutoNormalizingFlow as FlowbridgeGuide

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
# the regression: 3 weights, 20 points, known noise; its posterior is Gaussian, exactly
RNG = np.random.default_rng(0)
X = RNG.standard_normal((20, 3))
W_TRUE = np.array([1.0, -2.0, 0.5])
NOISE = 0.5
T = X @ W_TRUE + NOISE * RNG.standard_normal(20)


def iaf_spec(dim: int):
    """The one spec both frameworks' guides are built from."""
    return fb.maf(dim, num_layers=3, hidden=(2 * dim, 2 * dim), activation="elu",
                  direction="iaf", scale={"kind": "clamp"}, degrees="pyro", name="iaf_guide")  # fmt: skip


def exact_regression() -> dict:
    """The regression's posterior: prior N(0, I), so precision I + X^T X / noise^2."""
    cov = np.linalg.inv(np.eye(3) + X.T @ X / NOISE**2)
    mean = cov @ X.T @ T / NOISE**2
    return {**{f"w{i} mean": mean[i] for i in range(3)},
            **{f"w{i} std": np.sqrt(cov[i, i]) for i in range(3)}}  # fmt: skip


# ----------------------------------------------------------------------------- Pyro
def pyro_schools():
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, torch.tensor(SIGMA, dtype=torch.float32)),
                    obs=torch.tensor(Y, dtype=torch.float32))  # fmt: skip


def pyro_regression():
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    loc = w @ torch.tensor(X.T, dtype=torch.float32)  # the 20 points as one event
    pyro.sample("t", dist.Normal(loc, NOISE).to_event(1), obs=torch.tensor(T, dtype=torch.float32))


def pyro_fit(model, guide, steps, lr, particles):
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)}),
              Trace_ELBO(num_particles=8, vectorize_particles=True))  # fmt: skip
    for _ in range(steps):
        svi.step()
    with torch.no_grad():
        elbo = -Trace_ELBO(num_particles=particles, vectorize_particles=True).loss(model, guide)
        draws = Predictive(model, guide=guide, num_samples=particles, parallel=True)()
    return elbo, {k: v.numpy() for k, v in draws.items()}


def run_pyro(name, model, dim, steps, particles):
    out = {}
    for label, make in (
        ("Pyro AutoIAFNormal", lambda: AutoIAFNormal(model, hidden_dim=[2 * dim, 2 * dim],
                                                     num_transforms=3)),
        ("flowbridge IAF (Pyro)", lambda: AutoNormalizingFlow(
            model, lambda d: fb.to_pyro(iaf_spec(d)))),
    ):  # fmt: skip
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        out[label] = pyro_fit(model, make(), steps, 5e-3, particles)
        print(f"fitted {label} on {name}", flush=True)
    return out


# -------------------------------------------------------------------------- NumPyro
def numpyro_schools():
    mu = numpyro.sample("mu", ndist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", ndist.HalfCauchy(5.0))
    with numpyro.plate("schools", 8):
        theta = numpyro.sample("theta", ndist.Normal(mu, tau))
        numpyro.sample("obs", ndist.Normal(theta, jnp.asarray(SIGMA)), obs=jnp.asarray(Y))


def numpyro_regression():
    w = numpyro.sample("w", ndist.Normal(jnp.zeros(3), 1.0).to_event(1))
    loc = w @ jnp.asarray(X.T)  # the 20 points as one event
    numpyro.sample("t", ndist.Normal(loc, NOISE).to_event(1), obs=jnp.asarray(T))


def run_numpyro(name, model, dim, steps, particles):
    out = {}
    for label, make in (
        ("NumPyro AutoIAFNormal", lambda: NAutoIAFNormal(model, num_flows=3,
                                                         hidden_dims=[2 * dim, 2 * dim])),
        ("flowbridge IAF (NumPyro)", lambda: FlowbridgeGuide(model, iaf_spec)),
    ):  # fmt: skip
        guide = make()
        decay = lambda i: 5e-3 * 0.1 ** (i / steps)  # noqa: E731
        svi = NSVI(model, guide, numpyro.optim.Adam(decay), NTrace_ELBO(num_particles=8))
        params = svi.run(jax.random.PRNGKey(0), steps, progress_bar=False).params
        elbo = -NTrace_ELBO(num_particles=particles).loss(jax.random.PRNGKey(1), params, model,
                                                          guide)  # fmt: skip
        draws = guide.sample_posterior(jax.random.PRNGKey(2), params, sample_shape=(particles,))
        out[label] = (float(elbo), {k: np.asarray(v) for k, v in draws.items()})
        print(f"fitted {label} on {name}", flush=True)
    return out


def nuts_schools(warmup, draws) -> dict:
    """The centred model's reference: NUTS on it reparametrised non-centred."""
    reparam = numpyro.handlers.reparam(numpyro_schools, config={"theta": LocScaleReparam(0)})
    mcmc = MCMC(NUTS(reparam, target_accept_prob=0.95), num_warmup=warmup, num_samples=draws,
                progress_bar=False)  # fmt: skip
    mcmc.run(jax.random.PRNGKey(3))
    return summary_schools({k: np.asarray(v) for k, v in mcmc.get_samples().items()})


def summary_schools(draws: dict) -> dict:
    return {f"{k} {s}": float(getattr(draws[k], s)()) for k in ("mu", "tau")
            for s in ("mean", "std")}  # fmt: skip


def summary_regression(draws: dict) -> dict:
    w = draws["w"].reshape(-1, 3)
    return {**{f"w{i} mean": float(w[:, i].mean()) for i in range(3)},
            **{f"w{i} std": float(w[:, i].std()) for i in range(3)}}  # fmt: skip


def report(title: str, fits: dict, reference: dict, summarise) -> list[str]:
    columns = list(reference)
    lines = [f"{title}", f"{'guide':<26}{'ELBO':>10}" + "".join(f"{c:>10}" for c in columns)
             + f"{'sum |err|':>11}"]  # fmt: skip
    for label, (elbo, draws) in fits.items():
        row = summarise(draws)
        err = sum(abs(row[c] - reference[c]) for c in columns)
        lines.append(f"{label:<26}{elbo:>10.3f}" + "".join(f"{row[c]:>10.3f}" for c in columns)
                     + f"{err:>11.3f}")  # fmt: skip
    lines.append(f"{'reference':<26}{'':>10}" + "".join(f"{reference[c]:>10.3f}" for c in columns))
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=None, help="where iaf_guides.txt goes")
    args = parser.parse_args()
    steps, particles, warmup, draws = (60, 500, 200, 300) if args.fast else (
        4000, 20000, 2000, 20000)  # fmt: skip
    torch.set_num_threads(2)
    t0 = time.time()
    lines = [f"IAF guides, one flowbridge spec in Pyro and NumPyro against each framework's "
             f"AutoIAFNormal: {steps} SVI steps, ELBO from {particles} particles.", ""]  # fmt: skip
    schools_ref = nuts_schools(warmup, draws)
    regression_ref = exact_regression()
    for framework, run in (("Pyro", run_pyro), ("NumPyro", run_numpyro)):
        schools_model = pyro_schools if framework == "Pyro" else numpyro_schools
        regression_model = pyro_regression if framework == "Pyro" else numpyro_regression
        fits = run("eight schools (centred)", schools_model, 10, steps, particles)
        lines += report(f"{framework}: eight schools, centred (reference: NUTS, non-centred)",
                        fits, schools_ref, summary_schools)  # fmt: skip
        fits = run("linear regression", regression_model, 3, steps, particles)
        lines += report(f"{framework}: Bayesian linear regression (reference: the exact "
                        f"posterior)", fits, regression_ref, summary_regression)  # fmt: skip
    lines.append(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s, 2 cores)")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "iaf_guides.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
