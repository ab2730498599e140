"""Train a RealNVP on a 2-D density in Pyro, export the weights, run the same flow in TFP.

    python examples/train_in_pyro_run_in_tfp.py            # full run, about a minute
    python examples/train_in_pyro_run_in_tfp.py --fast     # smoke test (CI)

The weights travel through a safetensors file in flowbridge's neutral layout. The script
prints how far TFP's log_prob is from Pyro's on a grid and saves
``train_in_pyro_run_in_tfp.png`` (data, Pyro density, TFP density) in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import flowbridge as fb  # noqa: E402

SPEC = fb.realnvp(2, num_couplings=8, hidden=(64, 64), scale={"kind": "soft_clamp", "bound": 3.0},
                  name="two_moons")  # fmt: skip


def two_moons(n: int, rng: np.random.Generator) -> np.ndarray:
    """The two interleaved half circles, with a little noise."""
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return np.stack([x, y], 1) + 0.08 * rng.standard_normal((n, 2))


def train_pyro(data: np.ndarray, steps: int):
    import pyro.distributions as dist

    torch.manual_seed(0)
    flow = fb.to_pyro(SPEC, fb.init_params(SPEC, seed=0))
    model = dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1), [flow])
    optimizer = torch.optim.Adam(flow.parameters(), lr=2e-3)
    x = torch.tensor(data, dtype=torch.float32)
    bar = tqdm(range(steps), desc="train in Pyro", mininterval=1.0)
    for step in bar:
        batch = x[torch.randint(len(x), (256,))]
        loss = -model.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            bar.set_postfix(nll=f"{loss.item():.3f}")
    return flow, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=Path("."), help="where files go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    t0 = time.time()
    data = two_moons(4000, np.random.default_rng(0))
    flow, pyro_model = train_pyro(data, 200 if args.fast else 3000)

    weights = args.out / "two_moons.safetensors"
    fb.save_params(fb.params_from_pyro(flow), weights, SPEC)
    print(f"exported {len(fb.param_shapes(SPEC))} arrays to {weights}")

    import tensorflow as tf
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    bijector = fb.to_tfp(SPEC, fb.load_params(weights, SPEC))
    tfp_model = tfd.TransformedDistribution(tfd.MultivariateNormalDiag(loc=tf.zeros(2)), bijector)

    xs, ys = np.meshgrid(np.linspace(-1.5, 2.5, 200), np.linspace(-1.0, 1.5, 160))
    grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    with torch.no_grad():
        lp_pyro = pyro_model.log_prob(torch.tensor(grid)).numpy()
    lp_tfp = tfp_model.log_prob(grid).numpy()
    # far from the data log_prob reaches -1e10, where float32 keeps ~7 digits: compare
    # relatively, and absolutely where the density is visible
    rel = np.abs(lp_pyro - lp_tfp) / (1 + np.abs(lp_pyro))
    visible = np.exp(lp_pyro) > 1e-3
    print(f"log_prob on a {xs.shape[1]}x{xs.shape[0]} grid (float32): max |Pyro - TFP| / "
          f"(1 + |Pyro|) = {rel.max():.1e}; where the density > 1e-3 max |Pyro - TFP| = "
          f"{np.abs(lp_pyro - lp_tfp)[visible].max():.1e}")  # fmt: skip
    with torch.no_grad():
        nll_pyro = -pyro_model.log_prob(torch.tensor(data, dtype=torch.float32)).mean().item()
    nll_tfp = -float(tf.reduce_mean(tfp_model.log_prob(data.astype(np.float32))))
    print(f"mean NLL of the data: Pyro {nll_pyro:.4f}, TFP {nll_tfp:.4f}")
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    plot(data, xs, ys, lp_pyro, lp_tfp, args.out / "train_in_pyro_run_in_tfp.png")


def plot(data, xs, ys, lp_pyro, lp_tfp, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharex=True, sharey=True,
                             layout="constrained")  # fmt: skip
    axes[0].scatter(data[:, 0], data[:, 1], s=1, alpha=0.4)
    axes[0].set_title("data (two moons, 4000 points)")
    top = float(np.exp(max(lp_pyro.max(), lp_tfp.max())))
    for ax, lp, title in [(axes[1], lp_pyro, "trained in Pyro"), (axes[2], lp_tfp, "run in TFP")]:
        mesh = ax.pcolormesh(xs, ys, np.exp(lp).reshape(xs.shape), shading="auto", vmin=0,
                             vmax=top)  # fmt: skip
        ax.set_title(f"density, {title}")
    fig.colorbar(mesh, ax=axes[1:], label="density p(x1, x2)", shrink=0.9)
    for ax in axes:
        ax.set_xlim(xs.min(), xs.max())
        ax.set_ylim(ys.min(), ys.max())
        ax.set_xticks([-1, 0, 1, 2])
        ax.set_yticks([-1, -0.5, 0, 0.5, 1, 1.5])
        ax.set_xlabel("x1")
    axes[0].set_ylabel("x2")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
