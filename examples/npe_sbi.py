"""sbi's NPE with a flowbridge flow, beside sbi's own MAF and NSF: C2ST to the exact posterior.

    python examples/npe_sbi.py --out examples/results   # full run
    python examples/npe_sbi.py --fast                   # smoke test (CI)
    python examples/npe_sbi.py --log-dir runs/npe_sbi   # keep sbi's TensorBoard logs

The task is sbi's linear Gaussian (``sbi.simulators.linear_gaussian``): theta in R^5
with prior N(0, I), x = theta + shift + noise (shift -1, noise covariance 0.3 I), whose
posterior is known (``true_posterior_linear_gaussian_mvn_prior``). Each estimator is
trained by sbi's ``NPE`` on the same 5000 simulations with sbi's defaults (z-scoring,
early stopping): a flowbridge conditional RealNVP (6 couplings, hidden 64x64, exp scale, through
``flowbridge.sbi.posterior_nn``), and sbi's ``posterior_nn("maf")`` and
``posterior_nn("nsf")``. For each of a few observations, 1000 posterior samples are
compared with 1000 exact ones by sbi's classifier two-sample test (``c2st``: 0.5 means
indistinguishable). Saves ``npe_sbi.png`` (the first two coordinates for the first
observation) in ``--out``. sbi's TensorBoard logs (one folder per estimator) go to
``--log-dir``, or to a temporary folder removed at the end (sbi's own default,
``./sbi-logs``, would write into the working directory).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sbi.inference import NPE
from sbi.neural_nets import posterior_nn as sbi_posterior_nn
from sbi.simulators.linear_gaussian import (
    linear_gaussian,
    true_posterior_linear_gaussian_mvn_prior,
)
from sbi.utils.metrics import c2st
from sbi.utils.tracking import TensorBoardTracker
from torch.distributions import MultivariateNormal
from torch.utils.tensorboard import SummaryWriter

from flowbridge.sbi import posterior_nn

DIM = 5
SHIFT = -1.0 * torch.ones(DIM)
COV = 0.3 * torch.eye(DIM)
PRIOR = MultivariateNormal(torch.zeros(DIM), torch.eye(DIM))


def estimators() -> dict:
    return {
        # the configuration of the published run (the builder's default scale is now a
        # soft clamp, and its default 10 couplings: examples/npe_sbibm.py)
        "flowbridge RealNVP": posterior_nn("realnvp", num_transforms=6, hidden_features=64,
                                           scale={"kind": "exp"}),  # fmt: skip
        "sbi maf": sbi_posterior_nn("maf"),
        "sbi nsf": sbi_posterior_nn("nsf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=Path("."), help="where the PNG goes")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where sbi's TensorBoard logs go (default: a temporary folder, removed)")  # fmt: skip
    args = parser.parse_args()
    if args.log_dir is None:
        with tempfile.TemporaryDirectory(prefix="npe_sbi-logs-") as logs:
            run(args, Path(logs))
    else:
        run(args, args.log_dir)
        print(f"sbi's TensorBoard logs in {args.log_dir}")


def run(args: argparse.Namespace, log_dir: Path) -> None:
    sims, observations, draws, epochs, folds = (500, 1, 200, 3, 2) if args.fast else (
        5000, 3, 1000, None, 5)  # fmt: skip
    torch.set_num_threads(2)
    t0 = time.time()
    torch.manual_seed(0)
    theta = PRIOR.sample((sims,))
    x = linear_gaussian(theta, SHIFT, COV)
    x_obs = linear_gaussian(PRIOR.sample((observations,)), SHIFT, COV)
    exact = [true_posterior_linear_gaussian_mvn_prior(x_o, SHIFT, COV, torch.zeros(DIM), torch.eye(DIM))
             for x_o in x_obs]  # fmt: skip
    scores, shown = {}, {}
    for name, builder in estimators().items():
        torch.manual_seed(1)
        writer = SummaryWriter(str(log_dir / re.sub(r"\W+", "_", name)))
        npe = NPE(PRIOR, density_estimator=builder, tracker=TensorBoardTracker(writer),
                  show_progress_bars=False)  # fmt: skip
        kwargs = {"max_num_epochs": epochs} if epochs else {}
        npe.append_simulations(theta, x).train(**kwargs)
        posterior = npe.build_posterior()
        scores[name] = []
        for k, (x_o, truth) in enumerate(zip(x_obs, exact, strict=True)):
            torch.manual_seed(2 + k)
            got = posterior.sample((draws,), x=x_o, show_progress_bars=False)
            want = truth.sample((draws,))
            scores[name].append(float(c2st(got, want, n_folds=folds)))
            if k == 0:
                shown[name] = got.numpy()
        writer.close()
        epochs_run = npe._summary["epochs_trained"][-1]
        print(f"trained {name}: {epochs_run} epochs", flush=True)
    print(f"\n{sims} simulations, {observations} observations, {draws} posterior and exact "
          f"samples each; C2ST (0.5: indistinguishable from the exact posterior)")  # fmt: skip
    print(f"{'estimator':<20}{'C2ST mean':>10}{'per observation':>30}")
    for name, row in scores.items():
        print(f"{name:<20}{np.mean(row):>10.3f}{'  '.join(f'{v:.3f}' for v in row):>30}")
    print(f"({'fast' if args.fast else 'full'} run, {time.time() - t0:.0f} s)")
    truth = exact[0].sample((draws,)).numpy()
    plot(truth, shown, args.out / "npe_sbi.png")


def plot(truth: np.ndarray, shown: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.8), sharex=True, sharey=True)
    for ax, (name, got) in zip(axes, shown.items(), strict=True):
        ax.scatter(truth[:, 0], truth[:, 1], s=3, alpha=0.3, color="0.5", label="exact")
        ax.scatter(got[:, 0], got[:, 1], s=3, alpha=0.4, color="C0", label=name)
        ax.set_title(name)
        ax.set_xlabel("theta_1")
        ax.legend(markerscale=4, loc="upper left", fontsize=8)
    axes[0].set_ylabel("theta_2")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
