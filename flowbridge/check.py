"""Cross-backend conformance: every backend against the float64 NumPy reference.

Each row (backend x dtype x device) is built from the *same* random, non-identity
parameters and fed fresh inputs, so neither framework's cache answers. Figures:

- ``forward``, ``inverse``, ``round_trip``: relative max-norm error,
  ``max|a - ref| / max|ref|`` (round trip: ``inverse(forward(x))`` against ``x``);
- ``fldj``, ``ildj``: log-det error ``max(|a - ref| / (1 + |ref|))``;
- ``jacobian``: the same log-det error of the row's own forward log-det against
  ``log|det J|`` of its autodiff Jacobian (finite differences for NumPy).

A figure passes when it is at most :data:`flowbridge.TOLERANCES` for its dtype. Flows are
checked in evaluation mode; a flow with a batch norm also gets a training-mode row per
backend, dtype and device: its forward and log-det (from the batch's statistics) against the
reference's in training mode (the other figures do not apply: the inverse uses the
running averages, and the per-example log-det holds the batch statistics constant).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import backends as B
from .build import module_for
from .errors import ParamError, SpecError
from .files import write_atomic
from .layers import plan_flow
from .params import check_params, init_params, read_safetensors
from .spec import FlowSpec

#: The conformance tolerances of :func:`flowbridge.check`, stated once, as
#: ``flowbridge.TOLERANCES``.
#:
#: A dict from a dtype's name to the largest figure that passes in that dtype:
#: ``"float64"`` 1e-12 and ``"float32"`` 1e-5, each 100x tighter than the one the project
#: set out with (float64 1e-10, float32 1e-4). ``"finite_difference"`` (1e-6) bounds the
#: NumPy reference's log-det against its central-difference Jacobian (step 1e-6), the
#: ``jacobian`` figure of a backend without autodiff.
TOLERANCES = {"float64": 1e-12, "float32": 1e-5, "finite_difference": 1e-6}
METRICS = ("forward", "inverse", "fldj", "ildj", "round_trip", "jacobian")
DTYPES = B.DTYPES


def runtime(backend: str):
    """The in-process driver of ``backend`` (raises if its frameworks are missing)."""
    return B.get(backend).runtime()


@dataclass
class Row:
    backend: str
    dtype: str
    device: str
    errors: dict[str, float]
    source: str = "here"  # "here" or "bundle" (recorded on another machine)
    mode: str = "evaluation"  # or "training" (a batch norm's; forward and fldj only)
    # a looser tolerance a layer of the flow states for this dtype (Plan.tolerances: a
    # spline's float32 inverse); None: TOLERANCES
    stated: float | None = None

    @property
    def tolerance(self) -> float:
        return self.stated if self.stated is not None else TOLERANCES[self.dtype]

    def tolerance_for(self, metric: str) -> float:
        if metric == "jacobian" and not B.get(self.backend).autodiff:
            return TOLERANCES["finite_difference"]
        return self.tolerance

    @property
    def ok(self) -> bool:
        return all(v <= self.tolerance_for(k) for k, v in self.errors.items())


@dataclass
class Report:
    """The result of a conformance check: one row of figures per backend x dtype x device.

    :func:`flowbridge.check` makes it. Each row holds the figures of one built flow
    against the float64 NumPy reference (``forward``, ``inverse``, ``round_trip``:
    relative max-norm errors; ``fldj``, ``ildj``, ``jacobian``: log-det errors), its
    ``backend``, ``dtype`` and ``device``, ``source`` (``"here"``, or ``"bundle"`` for a
    row recorded on another machine), ``mode`` (``"evaluation"``, or ``"training"`` for
    a batch norm's training-mode row, which has ``forward`` and ``fldj`` only) and
    ``ok``. A figure passes when it is at most :data:`flowbridge.TOLERANCES` for the
    row's dtype (``finite_difference`` for the ``jacobian`` of a backend without
    autodiff).

    Attributes:
        spec (FlowSpec): the :class:`flowbridge.FlowSpec` checked.
        rows (list): the rows, in the order they were measured, then any rows from a
            bundle.
        skipped (list): ``(backend, device, why)`` for each device asked for that a
            backend cannot use here (default: none).

    Example:
        >>> import flowbridge as fb
        >>> report = fb.check(fb.realnvp(4, num_couplings=2, hidden=(8,)), backends=("numpy",))
        >>> [(row.backend, row.dtype, row.device, row.ok) for row in report.rows]
        [('numpy', 'float64', 'cpu', True)]
        >>> report.skipped
        [('numpy', 'cuda', 'the NumPy reference runs on the CPU only')]
    """

    spec: FlowSpec
    rows: list[Row]
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (backend, device, why)

    @property
    def ok(self) -> bool:
        """Whether the check passed, with at least one row and every figure in tolerance.

        A report with no rows (no backend ran on the devices asked for) is not ok.

        Returns:
            bool: ``True`` when there is a row and every row passes.

        Example:
            >>> import flowbridge as fb
            >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
            >>> fb.check(spec, backends=("numpy",)).ok
            True
            >>> fb.check(spec, backends=("numpy",), devices=("cuda",)).ok  # nothing ran
            False
        """
        return bool(self.rows) and all(r.ok for r in self.rows)

    def table(self) -> str:
        """The report as a plain-text table, for a terminal or a log.

        A heading line names the spec (name, the first 16 hex digits of its hash, event
        shape, number of layers); then one line per row with every figure (``-`` where
        it does not apply), the row's tolerance and ``yes`` or ``NO``; a note for each
        backend whose ``jacobian`` column is against finite differences; a line per
        skipped device; and the verdict: ``PASS``, ``FAIL: a figure is over its
        tolerance``, or ``NOTHING CHECKED`` when there are no rows.

        Returns:
            str: the table, lines joined by newlines.

        Example:
            >>> import flowbridge as fb
            >>> report = fb.check(fb.realnvp(4, num_couplings=2, hidden=(8,)), backends=("numpy",))
            >>> print(report.table())
            spec 'realnvp' sha256:... event shape (4,) 2 layers
            backend dtype device forward inverse fldj ildj round_trip jacobian tol ok
            ...
            numpy float64 cpu ... 1e-12 yes
            ...
            PASS
        """
        head = ["backend", "dtype", "device", *METRICS, "tol", "ok"]
        body = [
            [r.backend + (" (bundle)" if r.source == "bundle" else "")
             + (" (training)" if r.mode == "training" else ""), r.dtype, r.device,
             *(f"{r.errors[m]:.1e}" if m in r.errors else "-" for m in METRICS),
             f"{r.tolerance:.0e}", "yes" if r.ok else "NO"]
            for r in self.rows
        ]  # fmt: skip
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        lines = [f"spec {self.spec.name!r} sha256:{self.spec.hash[:16]}  event shape "
                 f"{tuple(self.spec.event_shape)}  {len(self.spec.layers)} layers"]  # fmt: skip
        for row in [head, [""] * len(head), *body]:
            if not any(row):
                lines.append("  ".join("-" * w for w in widths))
            else:
                lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
        for name in dict.fromkeys(r.backend for r in self.rows if not B.get(r.backend).autodiff):
            lines.append(f"{name}'s jacobian column is against central finite differences "
                         f"(tolerance {TOLERANCES['finite_difference']:.0e})")  # fmt: skip
        for backend, device, why in self.skipped:
            lines.append(f"skipped {backend} on {device}: {why}")
        if not self.rows:
            lines.append("NOTHING CHECKED: no backend ran on the devices asked for")
        else:
            lines.append("PASS" if self.ok else "FAIL: a figure is over its tolerance")
        return "\n".join(lines)


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


def _ld(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(a - ref) / (1.0 + np.abs(ref))))


def inputs(spec: FlowSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` fresh inputs for ``spec``: standard normal, or uniform in (0.02, 0.98) for a
    flow whose first layer reads data in (0, 1) (a logit preprocessing)."""
    if spec.layers[0].domain == "unit_interval":
        return rng.uniform(0.02, 0.98, (n, *spec.event_shape))
    return rng.standard_normal((n, *spec.event_shape))


def reference(
    spec: FlowSpec, params: dict, x: np.ndarray, context: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The float64 reference outputs for ``x`` (at ``context`` for a conditional flow:
    one row per input, or one context for every input)."""
    rt = runtime(B.REFERENCE)
    flow = rt.build(module_for(spec, B.REFERENCE), params, "float64", "cpu")
    y, fldj = rt.forward(flow, x, context)
    _, ildj = rt.inverse(flow, y, context)
    ref = {"x": x, "y": y, "fldj": fldj, "ildj": ildj}
    return ref if context is None else {**ref, "context": context}


def errors(out: dict, ref: dict) -> dict[str, float]:
    """The figures of one backend's raw outputs ``out`` against the reference ``ref``."""
    return {
        "forward": _rel(out["y"], ref["y"]),
        "inverse": _rel(out["x"], ref["x"]),
        "fldj": _ld(out["fldj"], ref["fldj"]),
        "ildj": _ld(out["ildj"], ref["ildj"]),
        "round_trip": _rel(out["round_trip"], ref["x"]),
        "jacobian": _ld(out["fldj"][: len(out["jacobian"])], out["jacobian"]),
    }


def measure(backend: str, dtype: str, device: str, spec, params, ref, jac_rows: int):
    """One row, and the raw outputs: build ``backend`` and compare it with ``ref``."""
    rt = runtime(backend)
    flow = rt.build(module_for(spec, backend), params, dtype, device)
    c = ref.get("context")
    out = dict(zip(("y", "fldj"), rt.forward(flow, ref["x"], c), strict=True))
    out.update(zip(("x", "ildj"), rt.inverse(flow, ref["y"], c), strict=True))
    out["round_trip"] = rt.round_trip(flow, ref["x"], c)
    rows = ref["x"][:jac_rows]
    per_row = None if c is None else np.broadcast_to(c, (len(ref["x"]), c.shape[-1]))[:jac_rows]
    out["jacobian"] = rt.jacobian_log_det(flow, rows, per_row)
    return Row(backend, dtype, device, errors(out, ref)), out


def measure_training(backend: str, dtype: str, device: str, spec, params, ref) -> Row:
    """The training-mode row of a flow with a batch norm: forward and log-det of the
    batch ``ref["x"]`` against the reference's, both in training mode."""
    want_rt, rt = runtime(B.REFERENCE), runtime(backend)
    want = want_rt.training(want_rt.build(module_for(spec, B.REFERENCE), params, "float64", "cpu"))
    y_ref, ld_ref = want_rt.forward(want, ref["x"], ref.get("context"))
    flow = rt.training(rt.build(module_for(spec, backend), params, dtype, device))
    y, ld = rt.forward(flow, ref["x"], ref.get("context"))
    return Row(backend, dtype, device, {"forward": _rel(y, y_ref), "fldj": _ld(ld, ld_ref)},
               mode="training")  # fmt: skip


def check(
    spec: FlowSpec,
    *,
    params: dict | None = None,
    backends: tuple[str, ...] | None = None,
    dtypes: tuple[str, ...] = DTYPES,
    devices: tuple[str, ...] | None = None,
    batch: int = 64,
    jacobian_rows: int = 8,
    seed: int = 0,
    bundle: str | Path | None = None,
    save_bundle: str | Path | None = None,
) -> Report:
    """Run the conformance check: every backend against the float64 NumPy reference.

    Each row (backend x dtype x device) is built from the *same* random, non-identity
    parameters and fed fresh inputs (standard normal, or uniform in (0.02, 0.98) for a
    flow whose first layer reads data in (0, 1)), so neither framework's cache answers.
    Its figures: ``forward``, ``inverse``, ``round_trip`` (relative max-norm error
    ``max|a - ref| / max|ref|``; the round trip ``inverse(forward(x))`` against ``x``),
    ``fldj``, ``ildj`` (log-det error ``max(|a - ref| / (1 + |ref|))``) and ``jacobian``
    (the row's forward log-det against ``log|det J|`` of its autodiff Jacobian, finite
    differences for NumPy). A figure passes when it is at most
    :data:`flowbridge.TOLERANCES` for its dtype. Flows are checked in evaluation mode; a
    flow with a batch norm also gets a training-mode row per backend, dtype and device.
    The reference backend always runs in float64, the others in the ``dtypes`` asked
    for that they support.

    Args:
        spec: the :class:`flowbridge.FlowSpec` to check, or its dict.
        params: neutral parameters for ``spec``; default ``None``:
            ``init_params(spec, seed, init="random")`` (:func:`flowbridge.init_params`).
        backends: the backends' names to check, e.g. ``("pyro",)``; default
            ``None``: every installed one.
        dtypes: some of ``"float32"`` and ``"float64"``; default both.
        devices: some of ``"cpu"`` and ``"cuda"``; default ``None``: every device each
            backend sees. A device a backend cannot use is listed in the report's
            ``skipped`` with the reason.
        batch: the number of inputs, default 64.
        jacobian_rows: how many of the inputs the ``jacobian`` figure is taken on,
            default 8.
        seed: seeds the default parameters (``seed``) and the inputs (``seed + 1``),
            default 0.
        bundle: a bundle file written by ``save_bundle`` on another machine; its spec,
            params, inputs and reference outputs are used (``spec`` and ``params`` given
            here are not), and that machine's rows are listed next to this one's as
            ``(bundle)`` rows. Default ``None``.
        save_bundle: a path to write this run's bundle to (one safetensors file, written
            atomically: spec, params, inputs, reference and every backend's outputs),
            for comparing another machine with this one. Default ``None``.

    Returns:
        Report: the :class:`flowbridge.Report`; ``report.ok`` says whether it passed,
        ``report.table()`` shows every figure.

    Raises:
        ValueError: ``dtypes`` holds a name other than float32 or float64, ``devices``
            one other than cpu or cuda, or ``backends`` an unknown backend name.
        SpecError: ``spec`` is a dict that is not a valid spec.
        BackendUnavailable: a backend named in ``backends`` is not installed.
        ParamError: ``params`` do not fit ``spec`` (or hold a value float32 cannot, when
            float32 rows are asked for), or ``bundle`` is missing or not a well-formed
            bundle (the message says what is wrong).

    Example:
        >>> import flowbridge as fb
        >>> spec = fb.realnvp(4, num_couplings=2, hidden=(8,))
        >>> report = fb.check(spec, backends=("numpy",))
        >>> report.ok
        True
        >>> print(report.table().splitlines()[-1])
        PASS
    """
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ValueError(f"dtypes: expected some of {', '.join(DTYPES)}, got {unknown[0]!r}")
    unknown = [d for d in devices or () if d not in B.DEVICES]
    if unknown:
        raise ValueError(f"devices: expected some of {', '.join(B.DEVICES)}, got {unknown[0]!r}")
    if isinstance(spec, dict):
        spec = FlowSpec.from_dict(spec)
    recorded: list[Row] = []
    if bundle is not None:
        spec, params, ref, recorded = load_bundle(bundle)
    else:
        # float32 rows asked for: a value float32 cannot hold is refused, not run as inf
        narrowest = "float32" if "float32" in dtypes else None
        params = check_params(spec, params, dtype=narrowest) if params is not None else \
            init_params(spec, seed, init="random")  # fmt: skip
        rng = np.random.default_rng(seed + 1)
        x = inputs(spec, batch, rng)
        context = rng.standard_normal((batch, spec.context_dim)) if spec.context_dim else None
        ref = reference(spec, params, x, context)
    chosen = backends or tuple(name for name, b in B.BACKENDS.items() if b.available())
    # a layer with a training mode (a batch norm) gets training-mode rows too
    has_training_mode = any(plan.training_forward is not None for plan in plan_flow(spec))
    report = Report(spec, [])
    outputs = {}
    for backend in chosen:
        rt = runtime(backend)
        skipped = rt.unavailable_devices()
        for device in devices or B.DEVICES:
            if device in skipped:
                report.skipped.append((backend, device, skipped[device]))
                continue
            if device not in rt.devices():
                continue
            for dtype in _row_dtypes(B.get(backend), dtypes):
                row, out = measure(backend, dtype, device, spec, params, ref, jacobian_rows)
                report.rows.append(row)
                outputs[(backend, dtype, device)] = out
                if not B.get(backend).reference and has_training_mode:
                    report.rows.append(measure_training(backend, dtype, device, spec, params,
                                                        ref))  # fmt: skip
    for row in recorded:
        report.rows.append(row)
    _state_tolerances(spec, report.rows)
    if save_bundle is not None:
        write_bundle(save_bundle, spec, params, ref, outputs)
    return report


def _state_tolerances(spec: FlowSpec, rows: list[Row]) -> None:
    """Give each row the loosest tolerance a layer of ``spec`` states for its dtype
    (``Plan.tolerances``), where one does and it is looser than :data:`TOLERANCES`."""
    for row in rows:
        stated = [p.tolerances[row.dtype] for p in plan_flow(spec) if row.dtype in p.tolerances]
        if stated and max(stated) > TOLERANCES[row.dtype]:
            row.stated = max(stated)


def _row_dtypes(backend: B.Backend, asked: tuple[str, ...]) -> tuple[str, ...]:
    """The reference always runs in its own dtype; others in the asked ones they have."""
    return backend.dtypes if backend.reference else tuple(d for d in asked if d in backend.dtypes)


# ------------------------------------------------------------------------ bundles
def write_bundle(path, spec: FlowSpec, params: dict, ref: dict, outputs: dict) -> None:
    """One safetensors file: spec (metadata), params, inputs, reference and every
    backend's outputs from this machine, so another machine can be compared with it.
    Written atomically."""
    from safetensors.numpy import save

    tensors = {f"params/{k}": np.ascontiguousarray(v) for k, v in params.items()}
    tensors.update({f"reference/{k}": np.ascontiguousarray(v) for k, v in ref.items()})
    for (backend, dtype, device), out in outputs.items():
        for k, v in out.items():
            tensors[f"result/{backend}/{dtype}/{device}/{k}"] = np.ascontiguousarray(v)
    meta = {"flowbridge_bundle": "1", "spec": spec.to_json(indent=None)}
    write_atomic(path, save(tensors, meta))


#: What a bundle's arrays must be: ``n`` inputs (``nx``: of the flow's event shape, ``ny``:
#: of its output shape).
_OUTPUT_SHAPES = {"x": "nx", "y": "ny", "fldj": "n", "ildj": "n", "round_trip": "nx",
                  "jacobian": "j"}  # fmt: skip
#: The reference's arrays: the outputs', and a conditional flow's contexts.
_REFERENCE_SHAPES = {**_OUTPUT_SHAPES, "context": "nc"}


def load_bundle(path) -> tuple[FlowSpec, dict, dict, list[Row]]:
    """(spec, params, reference, rows recorded on the saving machine). Anything that is
    not a well-formed bundle raises a :class:`ParamError` naming what is wrong."""
    where = f"bundle {str(path)!r}"
    meta, tensors = read_safetensors(path, "bundle")
    if meta.get("flowbridge_bundle") != "1":
        raise ParamError(f"{where}: not a flowbridge bundle (made by flowbridge check "
                         "--save-bundle); a params file goes to --params")  # fmt: skip
    if "spec" not in meta:
        raise ParamError(f"{where}: its metadata holds no spec")
    try:
        spec = FlowSpec.from_json(meta["spec"])
    except SpecError as exc:
        raise ParamError(f"{where}: its spec is invalid: {exc}") from None
    params = check_params(spec, {k[7:]: v for k, v in tensors.items() if k.startswith("params/")})
    ref = {k[10:]: v for k, v in tensors.items() if k.startswith("reference/")}
    missing = [k for k in ("x", "y", "fldj", "ildj") if k not in ref]
    if missing:
        raise ParamError(f"{where}: reference/{missing[0]}: missing")
    if spec.context_dim and "context" not in ref:
        raise ParamError(f"{where}: reference/context: missing (the spec is conditional)")
    n = len(ref["x"])
    sizes = {"n": (n,), "nx": (n, *spec.event_shape), "ny": (n, *spec.output_shape),
             "nc": (n, spec.context_dim)}  # fmt: skip
    for name, value in ref.items():
        kind = _REFERENCE_SHAPES.get(name)
        if kind not in sizes or value.shape != sizes[kind] or (kind == "nc" and not spec.context_dim):
            raise ParamError(f"{where}: reference/{name}: unexpected array of shape {value.shape}")
    results: dict[tuple, dict] = {}
    for k, v in tensors.items():
        if k.startswith(("params/", "reference/")):
            continue
        parts = k.split("/")
        if len(parts) != 5 or parts[0] != "result" or parts[4] not in _OUTPUT_SHAPES:
            raise ParamError(f"{where}: {k}: unexpected array")
        _, backend, dtype, device, name = parts
        if backend not in B.BACKENDS or dtype not in DTYPES or device not in B.DEVICES:
            raise ParamError(f"{where}: {k}: unknown backend, dtype or device")
        kind = _OUTPUT_SHAPES[name]
        ok = v.ndim == 1 and len(v) <= n if kind == "j" else v.shape == sizes[kind]
        if not ok:
            raise ParamError(f"{where}: {k}: unexpected shape {v.shape}")
        results.setdefault((backend, dtype, device), {})[name] = v
    rows = []
    for (backend, dtype, device), out in sorted(results.items()):
        if set(out) != set(_OUTPUT_SHAPES):
            lacking = sorted(set(_OUTPUT_SHAPES) - set(out))
            raise ParamError(f"{where}: result/{backend}/{dtype}/{device}: missing {lacking}")
        rows.append(Row(backend, dtype, device, errors(out, ref), source="bundle"))
    return spec, params, ref, rows


def summary_json(reports: list[Report]) -> str:
    """Every figure of every report, as JSON."""
    return json.dumps(
        [
            {
                "spec": r.spec.name,
                "spec_hash": r.spec.hash,
                "ok": r.ok,
                "rows": [
                    {"backend": row.backend, "dtype": row.dtype, "device": row.device,
                     "source": row.source, "mode": row.mode, "ok": row.ok, **row.errors}
                    for row in r.rows
                ],  # fmt: skip
            }
            for r in reports
        ],
        indent=2,
    )


def worst_table(reports: list[Report]) -> str:
    """The worst figure per backend x dtype x metric over several reports."""
    worst: dict[tuple[str, str], dict[str, float]] = {}
    for report in reports:
        for row in report.rows:
            key = (row.backend + (" (bundle)" if row.source == "bundle" else ""), row.dtype)
            cell = worst.setdefault(key, dict.fromkeys(METRICS, 0.0))
            for metric, value in row.errors.items():
                cell[metric] = max(cell[metric], value)
    lines = [f"worst over {len(reports)} specs",
             ("backend  dtype    " + "  ".join(f"{m:<10}" for m in METRICS)).rstrip()]  # fmt: skip
    for (backend, dtype), cell in sorted(worst.items()):
        figures = "  ".join(f"{cell[m]:<10.1e}" for m in METRICS)
        lines.append(f"{backend:<8} {dtype:<8} {figures}".rstrip())
    verdict = "PASS" if all(r.ok for r in reports) else "FAIL"
    return "\n".join(lines + [f"{verdict} ({sum(r.ok for r in reports)}/{len(reports)} specs)"])
