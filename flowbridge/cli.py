"""The ``flowbridge`` command line: generate, check, schema, params, validate.

Every failure ends with one line on stderr, ``error: <what was wrong, and where>``, and
a nonzero exit code; ``--debug`` (or ``FLOWBRIDGE_DEBUG=1``) shows the traceback too.

Exit codes:

- 0: success;
- 1: ``check`` ran and a figure is over its tolerance;
- 2: bad input: the spec, a params file or bundle, a command-line option, a file that
  cannot be read or written (standard output included: closed, full, a broken pipe),
  an output that is one of the command's inputs;
- 3: ``check`` could run no backend on the devices asked for (nothing was checked);
- 4: a framework the command needs is not installed (the message names the extra);
- 70: an internal error (a bug: please report it with the ``--debug`` output).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

# TensorFlow's C++ logging is configured from the environment when it loads: set the
# level before any command can import it (a level the user chose is kept).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .backends import DEVICES, DTYPES, NAMES  # noqa: E402
from .errors import BackendUnavailable, ParamError, SpecError  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_NOTHING, EXIT_BACKEND, EXIT_INTERNAL = 0, 1, 2, 3, 4, 70
BACKEND = click.Choice(NAMES)


class _Main(click.Group):
    """A group whose every failure is one ``error:`` line and a documented exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv or os.environ.get("FLOWBRIDGE_DEBUG") == "1"
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            return _fail(exc.format_message(), exc.exit_code if exc.exit_code else EXIT_INPUT)
        except click.Abort:
            return _fail("aborted", 130)
        except (SpecError, ParamError) as exc:
            return _fail(str(exc), EXIT_INPUT, debug)
        except BackendUnavailable as exc:
            return _fail(str(exc), EXIT_BACKEND, debug)
        except _OutputError as exc:  # before click's own EPIPE handling could exit 1
            return _fail(str(exc), EXIT_INPUT, debug)
        except OSError as exc:
            name = f"{exc.filename}: " if exc.filename else ""
            return _fail(f"{name}{exc.strerror or exc}", EXIT_INPUT, debug)
        except Exception as exc:  # noqa: BLE001 - a bug: one line, unless --debug
            if debug:
                raise
            return _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug "
                         "for the traceback, and please report it)", EXIT_INTERNAL)  # fmt: skip
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def _fail(message: str, code: int, debug: bool = False):
    """Print ``message`` as one line (a multi-line message's lines joined by "; ")."""
    if debug:
        import traceback

        traceback.print_exc()
    lines = [line.strip() for line in str(message).splitlines() if line.strip()] or ["failed"]
    text = lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")
    click.echo(f"error: {text}", err=True)
    sys.exit(code)


class _OutputError(Exception):
    """Standard output closed or failing: a command's output could not be written."""


def _stdout():
    """``sys.stdout``, or an _OutputError when it is closed (Python then sets it to
    None, and click.echo would write nothing without a word)."""
    if sys.stdout is None:
        raise _OutputError("standard output is closed; nothing was written")
    return sys.stdout


def _print(text: str = "", nl: bool = True) -> None:
    """Write ``text`` to standard output and flush it there and then, so that a closed,
    full or broken standard output is an _OutputError (exit 2), not a silent success
    or click's exit 1 on a broken pipe."""
    out = _stdout()
    try:
        click.echo(text, nl=nl, file=out)
        out.flush()
    except OSError as exc:
        _discard_stdout()
        raise _OutputError(f"standard output: {exc.strerror or exc}") from exc


def _discard_stdout() -> None:
    """Point file descriptor 1 at the null device after a failed write, so the
    interpreter's last flush of what is left cannot fail again (it would print a
    traceback and turn the exit code into 120)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (click's test runner): nothing is flushed at exit
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _write(path: str, text: str | bytes, *inputs: str | None) -> None:
    """Write ``text`` to ``path`` atomically, refusing to overwrite one of ``inputs``."""
    from .files import write_atomic

    _refuse_clash(path, list(inputs))
    write_atomic(path, text)


def _limits_option(name: str, field: str, what: str):
    return click.option(f"--max-{name}", field, type=click.IntRange(min=1), default=None,
                        help=f"Raise the ceiling on {what} (see flowbridge.limits).")  # fmt: skip


@click.group(cls=_Main)
@click.version_option(package_name="flowbridge")
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
@_limits_option("event-size", "event_size", "the event size")
@_limits_option("width", "width", "hidden-layer width")
@_limits_option("depth", "depth", "hidden layers per conditioner")
@_limits_option("layers", "layers", "layers per flow")
@_limits_option("params", "params", "the total parameter count")
@click.pass_context
def main(ctx, debug, **ceilings):
    """Normalizing flows written once, generated into Pyro, TFP, JAX and NumPy.

    Exit codes: 0 success, 1 a conformance figure over its tolerance, 2 bad input,
    3 nothing could be checked, 4 a framework is missing, 70 internal error.
    """
    from .limits import limits

    raised = {k: v for k, v in ceilings.items() if v is not None}
    if raised:
        ctx.with_resource(limits(**raised))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--backend", "-b", type=BACKEND, required=True, help="Which framework to emit.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
def generate(spec, backend, output):
    """Write the standalone module for SPEC (a .json/.yaml spec file)."""
    from .build import generate as gen
    from .spec import load_spec

    code = gen(load_spec(spec), backend)
    if output:
        _write(output, code, spec)
        click.echo(f"wrote {output} ({len(code.splitlines())} lines)", err=True)
    else:
        _print(code, nl=False)


@main.command()
@click.argument("specs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--backend", "-b", "backends", type=BACKEND, multiple=True,
              help="Backends to check (repeatable; default: every installed one).")  # fmt: skip
@click.option("--dtype", "dtypes", type=click.Choice(DTYPES), multiple=True,
              help="Dtypes to check (repeatable; default: both).")  # fmt: skip
@click.option("--device", "devices", type=click.Choice(DEVICES), multiple=True,
              help="Devices to check (repeatable; default: cpu, and cuda when seen).")  # fmt: skip
@click.option("--params", type=click.Path(dir_okay=False),
              help="A safetensors parameter file (default: random, non-identity).")  # fmt: skip
@click.option("--allow-other-spec", is_flag=True,
              help="Load --params saved for another spec when every shape fits.")  # fmt: skip
@click.option("--batch", default=64, show_default=True, type=click.IntRange(1, 100_000),
              help="Number of test inputs.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 2),
              help="Seed of params and inputs.")  # fmt: skip
@click.option("--save-bundle", type=click.Path(dir_okay=False),
              help="Save spec, params, inputs, reference and this machine's outputs.")  # fmt: skip
@click.option("--bundle", type=click.Path(dir_okay=False),
              help="Check against a bundle saved on another machine (no SPEC then).")  # fmt: skip
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Also write the figures as JSON.")  # fmt: skip
def check(specs, backends, dtypes, devices, params, allow_other_spec, batch, seed, save_bundle,
          bundle, json_out):  # fmt: skip
    """Check every backend against the float64 reference for each SPEC; exit 1 if a
    figure is over its tolerance, 3 if no backend could run. With several SPECs, end
    with the worst figures."""
    from .check import check as run
    from .check import summary_json, worst_table
    from .params import load_params
    from .spec import load_spec

    if bool(specs) == bool(bundle):
        raise click.UsageError("give either SPEC(s) or --bundle")
    _stdout()  # the report goes there: refused before anything runs when it is closed
    if len(specs) > 1 and (params or save_bundle):
        raise click.UsageError("--params and --save-bundle take a single SPEC")
    if params and bundle:
        raise click.UsageError("--params does not go with --bundle (a bundle holds its params)")
    inputs = [*specs, params, bundle]
    if save_bundle and json_out and Path(save_bundle).resolve() == Path(json_out).resolve():
        raise click.UsageError("--save-bundle and --json name the same file")
    for out in (save_bundle, json_out):
        if out:
            _refuse_clash(out, inputs)
    loaded_specs = [load_spec(path) for path in specs]  # every spec is checked before any runs
    weights = load_params(params, loaded_specs[0], allow_other_spec=allow_other_spec) if params else None
    reports = []
    for loaded in loaded_specs or [None]:
        report = run(
            loaded,
            params=weights,
            backends=tuple(backends) or None,
            dtypes=tuple(dtypes) or DTYPES,
            devices=tuple(devices) or None,
            batch=batch,
            seed=seed,
            bundle=bundle,
            save_bundle=save_bundle,
        )
        _print(report.table() + "\n")
        reports.append(report)
    if len(reports) > 1:
        _print(worst_table(reports))
    if json_out:
        _write(json_out, summary_json(reports), *inputs)
    if not any(r.rows for r in reports):
        asked = ", ".join(devices) if devices else "any device"
        click.echo(f"error: no backend could run on {asked}; nothing was checked", err=True)
        sys.exit(EXIT_NOTHING)
    sys.exit(EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED)


def _refuse_clash(output: str, inputs: list) -> None:
    from .files import clashes

    clash = clashes(output, inputs)
    if clash is not None:
        raise click.UsageError(f"output {output!r} is the input {clash!r}; choose another file")


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
def schema(output):
    """Print the JSON Schema of the spec format."""
    from .spec import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output:
        _write(output, text)
    else:
        _print(text, nl=False)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
def validate(spec):
    """Validate SPEC and print its hash and neutral parameter layout."""
    from .layers import param_shapes
    from .spec import load_spec

    loaded = load_spec(spec)
    lines = [f"ok: {loaded.name!r} sha256:{loaded.hash}"]
    lines += [f"  {name}: {shape}" for name, shape in param_shapes(loaded).items()]
    _print("\n".join(lines))


@main.command("init-params")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1))
@click.option("--random", "random_", is_flag=True, help="Non-identity weights (for checks).")
def init_params(spec, output, seed, random_):
    """Write fresh neutral parameters for SPEC to a safetensors file."""
    from .params import init_params as init
    from .params import save_params
    from .spec import load_spec

    loaded = load_spec(spec)
    _refuse_clash(output, [spec])
    save_params(init(loaded, seed, init="random" if random_ else "identity"), output, loaded)
    click.echo(f"wrote {output}", err=True)


@main.command()
@click.option("--preset", type=click.Choice(["quick", "axes", "grid", "conditional", "image",
                                            "peers"]),
              default="quick", show_default=True, help="quick: the target size (and the "
              "peers, where installed); axes: one axis at a time; grid: every combination "
              "(hours); conditional: the target size with a context of 16; image: the RealNVP "
              "image flow against hand-written Pyro and TF ones; peers: the target size "
              "against zuko, nflows and normflows (the bench extra).")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results",
              show_default=True, help="Where the JSON, Markdown and PNG go.")  # fmt: skip
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 1024),
              help="Threads per framework process.")  # fmt: skip
@click.option("--repeats", default=7, show_default=True, type=click.IntRange(1, 1000),
              help="Timed runs per measurement.")  # fmt: skip
@click.option("--min-time", default=0.5, show_default=True, type=click.FloatRange(0.0, 3600.0),
              help="Seconds per measurement.")  # fmt: skip
@click.option("--compile", "compile_at", type=click.Choice(["target", "all", "none"]),
              default="target", show_default=True,
              help="Sizes that also time torch.compile and XLA (compiles are slow on CPU).")  # fmt: skip
@click.option("--report", "saved", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Time nothing: write the Markdown and the plots of a saved run's JSON "
              "again, beside it.")  # fmt: skip
def bench(preset, out, threads, repeats, min_time, compile_at, saved):
    """Time flowbridge against native Pyro and TFP, flowbridge-JAX under jax.jit, and the
    PyTorch peers (each framework in its own process)."""
    from .bench import markdown, run

    if saved is not None:
        from .bench import report

        results = _saved_results(saved)
        report.write(results, Path(saved).parent)
        _print(markdown(results))
        return
    _stdout()  # the tables go there: refused before hours of timing when it is closed
    results = run(preset, threads=threads, repeats=repeats, min_time=min_time, out=Path(out),
                  compile_at=compile_at)  # fmt: skip
    _print(markdown(results))


def _saved_results(path: str) -> dict:
    """A saved benchmark run, read back; a file that is not one is bad input."""
    import json

    try:
        results = json.loads(Path(path).read_text())
        results["preset"], results["runs"], results["machine"]  # noqa: B018
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"expected a flowbridge bench JSON file ({exc})",
                                 param_hint="--report") from None  # fmt: skip
    return results


if __name__ == "__main__":
    main()
