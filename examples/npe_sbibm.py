"""NPE on three sbibm tasks: flowbridge's RealNVP and NSF beside sbi's MAF and NSF, C2ST to
the published reference posteriors.

    python examples/npe_sbibm.py --sbibm DIR --out examples/results   # full run
    python examples/npe_sbibm.py --sbibm DIR --fast                   # smoke run

The tasks are sbibm's (Lueckmann et al. 2021) Gaussian linear (10-D), two moons and SLCP,
their simulators and priors written out here as sbibm defines them; the observation and
10,000 reference posterior samples of ``num_observation`` come from the sbibm 1.1.0 wheel,
whose ``sbibm/tasks/*/files/`` are read straight from the wheel in ``--sbibm`` (a folder
holding ``sbibm-1.1.0-py2.py3-none-any.whl``: ``pip download --no-deps sbibm==1.1.0 -d
DIR``; sbibm itself requires ``sbi<0.22`` and is not installed). Each estimator is trained
by sbi's ``NPE`` with sbi's defaults (z-scoring, early stopping, batch 200) on the same
``--simulations`` simulations per seed; 1,000 posterior draws are compared with 1,000
reference draws by sbi's ``c2st`` (0.5: indistinguishable). sbi's TensorBoard logs go to a
temporary folder. Prints one table row per task and estimator and writes
``npe_sbibm.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import bz2
import io
import math
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from sbi.inference import NPE
from sbi.neural_nets import posterior_nn as sbi_posterior_nn
from sbi.utils import BoxUniform
from sbi.utils.metrics import c2st
from sbi.utils.tracking import TensorBoardTracker
from torch.distributions import MultivariateNormal
from torch.utils.tensorboard import SummaryWriter

from flowbridge.sbi import posterior_nn


# ------------------------------------------------------------------ the tasks (sbibm's)
def gaussian_linear():
    prior = MultivariateNormal(torch.zeros(10), 0.1 * torch.eye(10))

    def simulate(theta):
        return theta + math.sqrt(0.1) * torch.randn_like(theta)

    return prior, simulate


def two_moons():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))

    def simulate(theta):
        n = theta.shape[0]
        a = (torch.rand(n) - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(n)
        p = torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], dim=1)
        shift = torch.stack([-(theta[:, 0] + theta[:, 1]).abs(), -theta[:, 0] + theta[:, 1]],
                            dim=1) / math.sqrt(2.0)  # fmt: skip
        return p + shift

    return prior, simulate


def slcp():
    prior = BoxUniform(-3 * torch.ones(5), 3 * torch.ones(5))

    def simulate(theta):
        m = theta[:, :2]
        s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, torch.tanh(theta[:, 4])
        cov = torch.stack([s1**2, rho * s1 * s2, rho * s1 * s2, s2**2], dim=1).reshape(-1, 2, 2)
        cov = cov + 1e-6 * torch.eye(2)
        draws = MultivariateNormal(m, cov).sample((4,))  # (4, n, 2)
        return draws.permute(1, 0, 2).reshape(-1, 8)

    return prior, simulate


TASKS = {"gaussian_linear": gaussian_linear, "two_moons": two_moons, "slcp": slcp}


def _csv(wheel: zipfile.ZipFile, name: str) -> torch.Tensor:
    data = wheel.read(name)
    if name.endswith(".bz2"):
        data = bz2.decompress(data)
    return torch.tensor(np.loadtxt(io.StringIO(data.decode()), delimiter=",", skiprows=1),
                        dtype=torch.float32)  # fmt: skip


def reference(folder: Path, task: str, number: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(observation, reference posterior samples) of sbibm's ``task`` observation."""
    (path,) = folder.glob("sbibm-1.1.0-*.whl")
    base = f"sbibm/tasks/{task}/files/num_observation_{number}/"
    with zipfile.ZipFile(path) as wheel:
        x_o = _csv(wheel, base + "observation.csv").reshape(1, -1)
        samples = _csv(wheel, base + "reference_posterior_samples.csv.bz2")
    return x_o, samples


def estimators() -> dict:
    """The estimators, by name: sbi's defaults for each, and flowbridge variants
    (``--only`` picks some) for the search of what SLCP needs."""
    return {
        "flowbridge realnvp": lambda: posterior_nn("realnvp"),
        "flowbridge nsf": lambda: posterior_nn("nsf"),
        "sbi maf": lambda: sbi_posterior_nn("maf"),
        "sbi nsf": lambda: sbi_posterior_nn("nsf"),
        "flowbridge realnvp, random permutations": lambda: posterior_nn(
            "realnvp", permutation="random"),
        "flowbridge realnvp, 10 couplings": lambda: posterior_nn(
            "realnvp", num_transforms=10, permutation="random"),
        "flowbridge realnvp, soft clamp": lambda: posterior_nn(
            "realnvp", permutation="random", scale={"kind": "soft_clamp", "bound": 3.0}),
        "flowbridge realnvp, 10 couplings, soft clamp": lambda: posterior_nn(
            "realnvp", num_transforms=10, permutation="random",
            scale={"kind": "soft_clamp", "bound": 3.0}),
        "flowbridge realnvp, hidden 128": lambda: posterior_nn(
            "realnvp", hidden_features=128, permutation="random"),
    }  # fmt: skip


DEFAULT = ["flowbridge realnvp", "flowbridge nsf", "sbi maf", "sbi nsf"]


def run(args: argparse.Namespace) -> list[tuple]:
    rows = []
    logs = tempfile.TemporaryDirectory()
    for task in args.tasks:
        prior, simulate = TASKS[task]()
        x_o, truth = reference(args.sbibm, task, args.observation)
        for seed in args.seeds:
            torch.manual_seed(seed)
            theta = prior.sample((args.simulations,))
            x = simulate(theta)
            for name, make in estimators().items():
                if name not in args.only:
                    continue
                torch.manual_seed(seed)
                build = make()
                writer = SummaryWriter(str(Path(logs.name) / f"{task}-{seed}-{name}"))
                npe = NPE(prior, density_estimator=build, tracker=TensorBoardTracker(writer),
                          show_progress_bars=False)  # fmt: skip
                start = time.perf_counter()
                npe.append_simulations(theta, x).train(
                    max_num_epochs=args.max_epochs, show_train_summary=False)  # fmt: skip
                took = time.perf_counter() - start
                summary = npe._summary
                train, valid = summary["training_loss"][-1], summary["best_validation_loss"][-1]
                draws = npe.build_posterior().sample((args.draws,), x=x_o,
                                                     show_progress_bars=False)  # fmt: skip
                score = float(c2st(draws, truth[: args.draws], seed=seed))
                row = (task, seed, name, score, train, valid, len(summary["epochs_trained"])
                       and summary["epochs_trained"][-1], took)  # fmt: skip
                print("{:16s} seed {} {:20s} c2st {:.3f}  train {:.2f}  valid {:.2f}  "
                      "epochs {}  {:.0f} s".format(*row), flush=True)
                rows.append(row)
                writer.close()
    logs.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sbibm", type=Path, required=True,
                        help="folder with sbibm-1.1.0-py2.py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=None, help="where npe_sbibm.md goes")
    parser.add_argument("--fast", action="store_true", help="a short smoke run")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--only", nargs="+", default=DEFAULT, choices=list(estimators()),
                        help="estimators to run (default: %(default)s)")
    parser.add_argument("--simulations", type=int, default=5000)
    parser.add_argument("--observation", type=int, default=1)
    args = parser.parse_args()
    args.draws, args.max_epochs = (200, 3) if args.fast else (1000, 2**31 - 1)
    if args.fast:
        args.simulations, args.seeds = 500, args.seeds[:1]
    torch.set_num_threads(1)
    rows = run(args)
    if args.out is not None:
        lines = ["| task | seed | estimator | C2ST | train loss | best validation loss | epochs |",
                 "|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += ["| {} | {} | {} | {:.3f} | {:.2f} | {:.2f} | {} |".format(*r[:7]) for r in rows]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "npe_sbibm.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
