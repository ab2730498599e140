"""The ``flowbridge`` command line: generate, check, schema, params, validate."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .errors import BackendUnavailable, ParamError, SpecError

BACKEND = click.Choice(["pyro", "tfp", "numpy"])


def _friendly(fn):
    """Bad input ends with one line naming the field, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SpecError, ParamError, BackendUnavailable) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(package_name="flowbridge")
def main():
    """Normalizing flows written once, generated into Pyro, TFP and NumPy."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--backend", "-b", type=BACKEND, required=True, help="Which framework to emit.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@_friendly
def generate(spec, backend, output):
    """Write the standalone module for SPEC (a .json/.yaml spec file)."""
    from .build import generate as gen
    from .spec import load_spec

    code = gen(load_spec(spec), backend)
    if output:
        Path(output).write_text(code)
        click.echo(f"wrote {output} ({len(code.splitlines())} lines)", err=True)
    else:
        click.echo(code, nl=False)


@main.command()
@click.argument("specs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--backend", "-b", "backends", type=BACKEND, multiple=True,
              help="Backends to check (repeatable; default: every installed one).")  # fmt: skip
@click.option("--dtype", "dtypes", type=click.Choice(["float32", "float64"]), multiple=True,
              help="Dtypes to check (repeatable; default: both).")  # fmt: skip
@click.option("--device", "devices", type=click.Choice(["cpu", "cuda"]), multiple=True,
              help="Devices to check (repeatable; default: cpu, and cuda when seen).")  # fmt: skip
@click.option("--params", type=click.Path(exists=True, dir_okay=False),
              help="A safetensors parameter file (default: random, non-identity).")  # fmt: skip
@click.option("--batch", default=64, show_default=True, help="Number of test inputs.")
@click.option("--seed", default=0, show_default=True, help="Seed of params and inputs.")
@click.option("--save-bundle", type=click.Path(dir_okay=False),
              help="Save spec, params, inputs, reference and this machine's outputs.")  # fmt: skip
@click.option("--bundle", type=click.Path(exists=True, dir_okay=False),
              help="Check against a bundle saved on another machine (no SPEC then).")  # fmt: skip
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Also write the figures as JSON.")  # fmt: skip
@_friendly
def check(specs, backends, dtypes, devices, params, batch, seed, save_bundle, bundle, json_out):
    """Check every backend against the float64 reference for each SPEC; exit 1 if a
    figure is over its tolerance. With several SPECs, end with the worst figures."""
    from .check import check as run
    from .check import summary_json, worst_table
    from .params import load_params
    from .spec import load_spec

    if bool(specs) == bool(bundle):
        raise click.UsageError("give either SPEC(s) or --bundle")
    if len(specs) > 1 and (params or save_bundle):
        raise click.UsageError("--params and --save-bundle take a single SPEC")
    reports = []
    for path in specs or [None]:
        loaded = load_spec(path) if path else None
        report = run(
            loaded,
            params=load_params(params, loaded) if params and loaded else None,
            backends=tuple(backends) or None,
            dtypes=tuple(dtypes) or ("float32", "float64"),
            devices=tuple(devices) or None,
            batch=batch,
            seed=seed,
            bundle=bundle,
            save_bundle=save_bundle,
        )
        click.echo(report.table() + "\n")
        reports.append(report)
    if len(reports) > 1:
        click.echo(worst_table(reports))
    if json_out:
        Path(json_out).write_text(summary_json(reports))
    sys.exit(0 if all(r.ok for r in reports) else 1)


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
def schema(output):
    """Print the JSON Schema of the spec format."""
    from .spec import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@_friendly
def validate(spec):
    """Validate SPEC and print its hash and neutral parameter layout."""
    from .layers import param_shapes
    from .spec import load_spec

    loaded = load_spec(spec)
    click.echo(f"ok: {loaded.name!r} sha256:{loaded.hash}")
    for name, shape in param_shapes(loaded).items():
        click.echo(f"  {name}: {shape}")


@main.command("init-params")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--random", "random_", is_flag=True, help="Non-identity weights (for checks).")
@_friendly
def init_params(spec, output, seed, random_):
    """Write fresh neutral parameters for SPEC to a safetensors file."""
    from .params import init_params as init
    from .params import save_params
    from .spec import load_spec

    loaded = load_spec(spec)
    save_params(init(loaded, seed, init="random" if random_ else "identity"), output, loaded)
    click.echo(f"wrote {output}", err=True)


@main.command()
@click.option("--preset", type=click.Choice(["quick", "axes", "grid"]), default="quick",
              show_default=True, help="quick: the target size; axes: one axis at a time; "
              "grid: every combination (hours).")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results",
              show_default=True, help="Where the JSON, Markdown and PNG go.")  # fmt: skip
@click.option("--threads", default=2, show_default=True, help="Threads per framework process.")
@click.option("--repeats", default=7, show_default=True, help="Timed runs per measurement.")
@click.option("--min-time", default=0.5, show_default=True, help="Seconds per measurement.")
@click.option("--compile", "compile_at", type=click.Choice(["target", "all", "none"]),
              default="target", show_default=True,
              help="Sizes that also time torch.compile and XLA (compiles are slow on CPU).")  # fmt: skip
def bench(preset, out, threads, repeats, min_time, compile_at):
    """Time flowbridge against native Pyro and TFP (each framework in its own process)."""
    from .bench import markdown, run

    results = run(preset, threads=threads, repeats=repeats, min_time=min_time, out=Path(out),
                  compile_at=compile_at)  # fmt: skip
    click.echo(markdown(results))


if __name__ == "__main__":
    main()
