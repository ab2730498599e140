"""Neural posterior estimation on the two-moons simulator, in Pyro and in TFP.

    python examples/npe_two_moons.py --out examples/results   # full run
    python examples/npe_two_moons.py --fast                   # smoke test (CI)

The two-moons task of the simulation-based-inference benchmark (Lueckmann et al. 2021,
arXiv:2101.04653): theta uniform on [-1, 1]^2; a ~ U(-pi/2, pi/2), r ~ N(0.1, 0.01^2),
x = (r cos a + 0.25, r sin a) + (-|theta_1 + theta_2| / sqrt(2), (-theta_1 + theta_2) /
sqrt(2)). Its posteriors are crescents, two of them for most x: far from Gaussian.

The same conditional RealNVP (``context_dim=2``), from the same initial weights, is
trained on the same simulated pairs and minibatches in Pyro and in TFP (the training code
is ``npe_gaussian_linear.py``'s). The likelihood has a closed form (polar coordinates of
x minus the offset), so the exact posterior density is known up to a constant on a grid:
the script prints, for a few observations, the exact log posterior (less its maximum)
averaged over each flow's samples, next to the same average over the exact posterior
(computed on a 300x300 grid): a sampler that puts mass where the posterior has none scores
lower. It also prints the share of samples inside the prior box, and saves
``npe_two_moons.png``: the exact posterior's contours under each backend's samples.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from npe_gaussian_linear import batches, train_pyro, train_tfp  # noqa: E402

import flowbridge as fb  # noqa: E402

SPEC = fb.realnvp(2, num_couplings=8, hidden=(128, 128), permutation="reverse",
                  scale={"kind": "soft_clamp", "bound": 3.0}, context_dim=2,
                  name="npe_two_moons")  # fmt: skip
OBSERVATIONS = np.array([[0.0, 0.0], [0.2, -0.3], [-0.4, 0.1]])


def offset(theta: np.ndarray) -> np.ndarray:
    t1, t2 = theta[..., 0], theta[..., 1]
    return np.stack([-np.abs(t1 + t2) / np.sqrt(2), (-t1 + t2) / np.sqrt(2)], -1)


def simulate(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    theta = rng.uniform(-1, 1, (n, 2))
    a, r = rng.uniform(-np.pi / 2, np.pi / 2, n), 0.1 + 0.01 * rng.standard_normal(n)
    return theta, np.stack([r * np.cos(a) + 0.25, r * np.sin(a)], -1) + offset(theta)


def log_likelihood(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log p(x | theta): p = x - offset - (0.25, 0) in polar coordinates (r, a), a in
    (-pi/2, pi/2) uniform, r normal; the Jacobian of (r, a) -> p is r."""
    p = x - offset(theta) - np.array([0.25, 0.0])
    r, a = np.hypot(p[..., 0], p[..., 1]), np.arctan2(p[..., 1], p[..., 0])
    log_r = -0.5 * ((r - 0.1) / 0.01) ** 2 - np.log(0.01 * np.sqrt(2 * np.pi))
    inside = np.abs(a) < np.pi / 2
    return np.where(inside, log_r - np.log(np.pi) - np.log(np.maximum(r, 1e-12)), -np.inf)


def grid(x: np.ndarray, n: int = 300):
    """The exact log posterior (up to a constant) on [-1, 1]^2."""
    t = np.linspace(-1, 1, n)
    mesh = np.stack(np.meshgrid(t, t, indexing="xy"), -1)
    return t, log_likelihood(mesh, x)


FLOOR = -50.0  # log densities below the maximum by more than this count as this


def score(samples: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """(mean exact log posterior, less its maximum, at the samples inside the box; the
    share of samples inside the box)."""
    inside = np.all(np.abs(samples) <= 1, -1)
    _, dens = grid(x)
    values = np.maximum(log_likelihood(samples[inside], x) - dens.max(), FLOOR)
    return float(np.mean(values)), float(inside.mean())


def exact_score(x: np.ndarray) -> float:
    """The same average over the exact posterior (its grid)."""
    _, dens = grid(x)
    rel = np.maximum(dens - dens.max(), FLOOR)
    weights = np.exp(rel)
    return float(np.sum(weights * rel) / np.sum(weights))


def plot(models, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), len(OBSERVATIONS), figsize=(12, 8))
    for row, (name, (_, sample)) in enumerate(models.items()):
        for col, x in enumerate(OBSERVATIONS):
            ax = axes[row, col]
            t, dens = grid(x)
            ax.contourf(t, t, np.exp(dens - dens.max()), levels=8, cmap="Greys")
            s = sample(x, 2000)
            ax.scatter(s[:, 0], s[:, 1], s=1.5, alpha=0.4, color="C0" if row == 0 else "C3")
            ax.set_xlim(-1, 1)
            ax.set_ylim(-1, 1)
            ax.set_title(f"{name}, x = ({x[0]:g}, {x[1]:g})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=Path("."), help="where files go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(2)
    t0 = time.time()
    n_pairs, steps = (2000, 150) if args.fast else (100_000, 10_000)
    theta, x = simulate(n_pairs, np.random.default_rng(0))
    order = batches(n_pairs, steps, 256)
    models = {"flowbridge Pyro": train_pyro(SPEC, theta, x, order, 1e-3),
              "flowbridge TFP": train_tfp(SPEC, theta, x, order, 1e-3)}  # fmt: skip
    theta_h, x_h = simulate(5000, np.random.default_rng(9))
    print(f"{n_pairs} simulated pairs, {steps} Adam steps of 256")
    print("held-out NLL -log q(theta | x) over 5000 fresh pairs: " + ", ".join(
        f"{name} {-log_q(theta_h, x_h).mean():.3f}" for name, (log_q, _) in models.items()))  # fmt: skip
    print("per observation: mean exact log posterior (less its maximum) at 4000 samples, "
          "share inside the prior box")  # fmt: skip
    print(f"{'x':<14}{'exact':>8}" + "".join(f"{name:>30}" for name in models))
    for x_o in OBSERVATIONS:
        cells = []
        for _, sample in models.values():
            gap, inside = score(sample(x_o, 4000), x_o)
            cells.append(f"{gap:8.3f} ({100 * inside:5.1f}% in box)")
        print(f"({x_o[0]:g}, {x_o[1]:g})".ljust(14) + f"{exact_score(x_o):8.3f}"
              + "".join(f"{c:>30}" for c in cells))  # fmt: skip
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    path = args.out / "npe_two_moons.png"
    plot(models, path)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
