"""An amortized conditional-flow guide over many local latents, in Pyro's SVI.

    python examples/amortized_guide_pyro.py --out examples/results   # full run
    python examples/amortized_guide_pyro.py --fast                   # smoke test (CI)

The model: G groups, each with its own mean ``z_1`` and log standard deviation ``z_2``
(prior N(0, I)) and 8 observations ``y ~ N(z_1, exp(z_2))``. Each group's posterior is
non-Gaussian: skewed in ``z_2``, with the spread of ``z_1`` tied to ``z_2``.

Three posteriors over all 2G local latents:

- the amortized guide: ONE flowbridge conditional RealNVP ``q(z | c)``, conditioned on
  each group's data summary ``c = (mean y, log std y)``: its size does not grow with G;
- the per-group mean-field guide (``AutoNormal``: 4G parameters);
- NUTS, the reference.

The script prints each guide's ELBO and the error of its posterior means and standard
deviations against NUTS (averaged over groups and both latents), and saves
``amortized_guide_pyro.png`` (the three posteriors of four groups).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from tqdm import tqdm

import flowbridge as fb

N_OBS = 8
SPEC = fb.realnvp(2, num_couplings=6, hidden=(64, 64), scale={"kind": "soft_clamp", "bound": 3.0},
                  context_dim=2, name="amortized_guide")  # fmt: skip


def model(y):
    groups = y.shape[0]
    with pyro.plate("groups", groups):
        z = pyro.sample("z", dist.Normal(torch.zeros(groups, 2), 1.0).to_event(1))
        scale = torch.exp(z[:, 1:])
        pyro.sample("y", dist.Normal(z[:, :1], scale).expand([groups, N_OBS]).to_event(1), obs=y)


def summary(y):
    """Each group's data as the flow's context: (mean, log standard deviation)."""
    return torch.stack([y.mean(-1), torch.log(y.std(-1))], -1)


class FlowGuide:
    """q(z_g | c_g) for every group from one conditional flow."""

    def __init__(self):
        self.flow = fb.to_pyro(SPEC, fb.init_params(SPEC, seed=0))

    def distribution(self, y):
        base = dist.Normal(torch.zeros(y.shape[0], 2), 1.0).to_event(1)
        return dist.ConditionalTransformedDistribution(base, [self.flow]).condition(summary(y))

    def __call__(self, y):
        pyro.module("flow", self.flow)
        with pyro.plate("groups", y.shape[0]):
            pyro.sample("z", self.distribution(y))


def fit(guide, y, steps: int, lr: float, label: str) -> None:
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO(num_particles=4))
    bar = tqdm(range(steps), desc=label, mininterval=2.0)
    for step in bar:
        loss = svi.step(y)
        if step % 200 == 0:
            bar.set_postfix(elbo=f"{-loss:.1f}")


def elbo(guide, y, particles: int) -> float:
    torch.manual_seed(1)
    with torch.no_grad():
        losses = [Trace_ELBO(num_particles=50).loss(model, guide, y) for _ in range(particles // 50)]
    return -float(np.mean(losses))


def moments(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return draws.mean(0), draws.std(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=Path("."), help="where files go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    t0 = time.time()
    groups, steps, warmup, samples, particles = (
        (12, 150, 100, 100, 100) if args.fast else (60, 4000, 600, 1500, 2000))  # fmt: skip
    rng = np.random.default_rng(0)
    z_true = rng.standard_normal((groups, 2))
    y = torch.tensor(z_true[:, :1] + np.exp(z_true[:, 1:]) * rng.standard_normal((groups, N_OBS)),
                     dtype=torch.float32)  # fmt: skip

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    flow_guide = FlowGuide()
    fit(flow_guide, y, steps, 3e-3, "amortized flow guide")
    flow_elbo = elbo(flow_guide, y, particles)
    with torch.no_grad():
        flow_draws = flow_guide.distribution(y).sample((4000,)).numpy()

    pyro.set_rng_seed(0)
    normal_guide = AutoNormal(model)
    fit(normal_guide, y, steps, 3e-2, "mean-field guide")
    normal_elbo = elbo(normal_guide, y, particles)
    with torch.no_grad():
        loc, scale = normal_guide.locs.z.numpy(), normal_guide.scales.z.numpy()
    normal_draws = loc + scale * np.random.default_rng(3).standard_normal((4000, *loc.shape))

    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(model), num_samples=samples, warmup_steps=warmup, disable_progbar=False)
    mcmc.run(y)
    nuts_draws = mcmc.get_samples()["z"].numpy()

    ref_mean, ref_sd = moments(nuts_draws)
    n_flow = sum(p.numel() for p in flow_guide.flow.parameters())
    print(f"{groups} groups x {N_OBS} observations, {steps} SVI steps per guide, NUTS "
          f"{warmup} warmup + {samples} draws; ELBO from {particles} particles")  # fmt: skip
    print(f"{'posterior':<28} {'params':>7} {'ELBO':>9} {'|mean err|':>10} {'|sd err|':>9}")
    rows = [("amortized flow (flowbridge)", n_flow, flow_elbo, flow_draws),
            ("mean-field (AutoNormal)", 4 * groups, normal_elbo, normal_draws),
            ("NUTS (reference)", 0, float("nan"), nuts_draws)]  # fmt: skip
    for name, count, value, draws in rows:
        mean, sd = moments(draws)
        print(f"{name:<28} {count:>7} {value:9.2f} {np.abs(mean - ref_mean).mean():10.4f} "
              f"{np.abs(sd - ref_sd).mean():9.4f}")  # fmt: skip
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    path = args.out / "amortized_guide_pyro.png"
    plot(rows, path)
    print(f"saved {path}")


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    colors = {"amortized flow (flowbridge)": "C0", "mean-field (AutoNormal)": "C2",
              "NUTS (reference)": "0.4"}  # fmt: skip
    for g, ax in enumerate(axes):
        for name, _, _, draws in reversed(rows):
            d = draws[:1500, g]
            ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.3, color=colors[name], label=name)
        ax.set_title(f"group {g + 1}: p(z_1, z_2 | y)")
        ax.set_xlabel("z_1 (mean)")
        ax.set_ylabel("z_2 (log sd)")
    axes[0].legend(markerscale=6, loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
