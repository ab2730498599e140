"""Turn a spec into one standalone Python module per backend.

The parts of a generated module:

1. a header with the spec hash and a do-not-edit note;
2. the framework imports (nothing else: the module never imports flowbridge);
3. ``SPEC_HASH``, ``SPEC_JSON``, ``EVENT_SHAPE``, ``PARAM_SHAPES`` and ``PARAM_INIT``
   (each parameter's initial uniform bound, from its plan's :class:`~flowbridge.layers.Param`);
4. backend helpers (weight init, parameter loading) from the backend's template;
5. one class per distinct static layer configuration, whose ``forward_with_log_det``
   and ``inverse_with_log_det`` bodies are *printed from traces* of the neutral
   definitions in :mod:`flowbridge.layers`, one line per IR node;
6. ``build_flow``, ``neutral_params`` and ``load_neutral_params``.

Output is deterministic: the same spec gives the same bytes.
"""

from __future__ import annotations

import json
import linecache
import re
import sys
import textwrap
import threading
import types
from typing import Any

from . import backends, ir
from .backends.contract import SHARED
from .layers import EmbeddingPlan, Plan, View, param_specs, plan_embedding, plan_flow
from .source import WIDTH, _flat, literal, number, py_str
from .spec import FlowSpec

MAX_NAME = 48  # the longest generated class name built from variant words


# ---------------------------------------------------------------- trace -> source
def emit_body(
    outputs: list[tuple[ir.Value, str]],
    reserved: set[str],
    table: dict,
    effects: list[ir.Value] = (),
    in_place: dict | None = None,
    split: str | None = None,
    effect: Any = None,
) -> list[str]:
    """Lines computing ``outputs`` (value, final name) with one assignment per node, and
    each of ``effects`` (state updates, :data:`flowbridge.ir.EFFECTS`) as a statement,
    written by ``effect(op, args)`` (a backend's :meth:`Emitter.effect
    <flowbridge.backends.contract.Emitter.effect>`; default: the op's template).

    ``in_place`` (a backend's ``IN_PLACE``: op -> (template, producer ops)) writes an op
    with its in-place template where its argument is a temporary that one of the producer
    ops made and nothing else reads (the activation after a dense layer, say): the same
    operation, without a fresh buffer. The producers are ops whose gradient does not
    need their own output, so autograd is unaffected.

    ``split`` (a backend's ``SPLIT`` template) writes two slices that cut one value in two
    at the same bound (``[..., :k]`` and ``[..., k:]``) as one split into both: the same
    views, and where a gradient flows back, one gradient node that joins both halves
    instead of two that each fill a zero tensor of the whole."""
    for value, name in outputs:
        value.node.hint = name
    order = ir.topo_order([v for v, _ in outputs] + list(effects))
    reads: dict[int, int] = {id(v.node): 1 for v, _ in outputs}  # an output is read later
    for node in order:
        for arg in node.args:
            if isinstance(arg, ir.Value):
                reads[id(arg.node)] = reads.get(id(arg.node), 0) + 1
    halves = _complementary_slices(order) if split else {}
    names: dict[int, str] = {}
    used = set(reserved)
    counts: dict[str, int] = {}
    lines = []

    def render(arg: Any) -> str:
        if isinstance(arg, ir.Value):
            node = arg.node
            return node.attrs["expr"] if node.op == "source" else names[id(node)]
        if arg is None:
            return ""
        return number(arg) if isinstance(arg, float) else _flat(arg)

    final = {id(v.node): n for v, n in outputs}

    def name_of(node: ir.Node) -> str:
        if id(node) in final:
            name = final[id(node)]
        else:
            base = node.hint or "tmp"
            counts[base] = counts.get(base, -1) + 1
            name = base if counts[base] == 0 and base not in used else f"{base}_{counts[base]}"
            while name in used:
                counts[base] += 1
                name = f"{base}_{counts[base]}"
        used.add(name)
        names[id(node)] = name
        return name

    for node in order:
        if node.op == "source" or id(node) in names:  # a source, or a split's second half
            continue
        if node.op in ir.EFFECTS:
            args = [render(a) for a in node.args]
            lines.append(effect(node.op, args) if effect else table[node.op].format(*args))
            continue
        if id(node) in halves:
            head, tail = halves[id(node)]
            pair = f"{name_of(head)}, {name_of(tail)}"
            source, bound = node.args[0], head.attrs["stop"]
            size = source.shape[head.attrs["axis"]]
            rest = size - bound if isinstance(bound, int) else f"{size} - {render(bound)}"
            sizes = f"[{render(bound)}, {rest}]"
            call = split.format(render(source), sizes=sizes, axis=head.attrs["axis"])
            lines.append(f"{pair} = {call}")
            continue
        name = name_of(node)
        args = [render(a) for a in node.args]
        if node.op == "call":  # a method of the class (its body is written once)
            attrs = {"method": node.attrs["method"], "args": ", ".join(args)}
        elif node.op == "loop":  # a loop over a method (its body is written once)
            attrs = {"method": node.attrs["method"], "args": ", ".join(args),
                     "count": render(node.attrs["count"])}  # fmt: skip
        else:
            attrs = {k: render(v) for k, v in node.attrs.items()}
            attrs.update(_derived(node, attrs))
        template = table[node.op]
        if in_place and node.op in in_place:
            arg = node.args[0].node if isinstance(node.args[0], ir.Value) else None
            if arg is not None and arg.op in in_place[node.op][1] and reads[id(arg)] == 1:
                template = in_place[node.op][0]
        lines.append(f"{name} = {template.format(*args, **attrs)}")
    for value, name in outputs:  # an output that is an input as it is (an identity map)
        if value.node.op == "source":
            lines.append(f"{name} = {value.node.attrs['expr']}")
    return lines


def _complementary_slices(order: list[ir.Node]) -> dict[int, tuple[ir.Node, ir.Node]]:
    """{id of a slice: (head, tail)} for each pair of slices ``[..., :k]`` (head) and
    ``[..., k:]`` (tail) of one value on one axis, keyed by the one that comes first."""
    groups: dict[tuple[int, int], list[ir.Node]] = {}
    for node in order:
        if node.op == "slice" and isinstance(node.args[0], ir.Value):
            groups.setdefault((id(node.args[0].node), node.attrs["axis"]), []).append(node)
    out: dict[int, tuple[ir.Node, ir.Node]] = {}
    for group in groups.values():
        heads = [n for n in group if n.attrs["start"] is None and n.attrs["stop"] is not None]
        tails = [n for n in group if n.attrs["stop"] is None and n.attrs["start"] is not None]
        for head in heads:
            for tail in tails:
                cut = _bound_key(head.attrs["stop"]) == _bound_key(tail.attrs["start"])
                if cut and id(head) not in out and id(tail) not in out:
                    first = head if order.index(head) < order.index(tail) else tail
                    out[id(first)] = (head, tail)
                    out[id(head) if first is tail else id(tail)] = (head, tail)
    return out


def _bound_key(bound: Any) -> Any:
    """What a slice bound stands for: an int, or a static source's expression."""
    if isinstance(bound, ir.Value):
        return ("source", bound.node.attrs.get("expr", id(bound.node)))
    return bound


def _derived(node: ir.Node, text: dict[str, str]) -> dict[str, str]:
    """Attribute texts every backend's templates share: ``index`` for a slice
    (``..., a:b`` then ``, :`` per axis after it, spaced as ruff formats it), ``axes``
    for an ``event_ndims`` reduction (``-1``, or ``(-3, -2, -1)``), ``ndims`` for a
    reshape (how many static dims it replaces), ``last`` for a bucket search (the last
    bucket's index, ``K - 1``), ``upper`` for a triangular solve (``not lower``) and
    ``subscripts`` for a matrix applied along an axis (``"ij,...jab->...iab"`` at axis -3)."""
    op, raw, out = node.op, node.attrs, {}
    if op == "reshape":
        out["ndims"] = str(len(node.args[0].shape))
    if op == "bucket":
        out["last"] = str(node.args[0].shape[-1] - 2)
    if op == "slice":
        start, stop = text.pop("start"), text.pop("stop")
        part = f"{start} : {stop}".strip() if "." in start + stop else f"{start}:{stop}"
        out["index"] = ", ".join(["...", part] + [":"] * (-raw["axis"] - 1))
    if op == "solve_triangular":
        out["upper"] = str(not raw["lower"])
    if op == "matvec":
        rest = "abcdefgh"[: -raw["axis"] - 1]
        out["subscripts"] = f"ij,...j{rest}->...i{rest}"
    if "event_ndims" in raw:
        n = raw["event_ndims"]
        out["axes"] = "-1" if n == 1 else _flat(tuple(range(-n, 0)))
    return out


def trace(
    plan: Plan, direction: str
) -> tuple[list[tuple[ir.Value, str]], set[str], list[ir.Value]]:
    """Trace ``plan``'s forward (``direction="forward"``), its training-mode forward
    (``"training"``) or its inverse: the outputs with their variable names,
    ``(result, "y" or "x")`` and ``(log_det, "log_det")``, the IR ops the trace uses,
    and its effects (state updates). The ops check shapes as they are traced; the
    outputs are checked against the plan's shapes here: a definition that gets them
    wrong fails now, naming the layer, before anything is emitted."""
    forward = direction != "inverse"
    arg, out = ("x", "y") if forward else ("y", "x")
    shape_in, shape_out = (plan.event_shape, plan.output_shape)[:: 1 if forward else -1]
    fn = {"forward": plan.forward, "training": plan.training_forward,
          "inverse": plan.inverse}[direction]  # fmt: skip
    inputs = [ir.source(arg, shape_in, batched=True)]
    if plan.context:
        inputs.append(ir.source("context", (plan.context,), batched=True))
    result, log_det, *rest = fn(View(plan.params, plan.args, buffers=plan.buffers), *inputs)
    effects = list(rest[0]) if rest else []
    for value, want, what in ((result, shape_out, out), (log_det, (), "log_det")):
        if not value.batched or value.shape != want:
            expected = ", ".join(["*batch", *map(str, want)])
            raise ir.ShapeError(f"{plan.class_name} {direction}: {what} has shape "
                                f"{value.node.describe()}, expected ({expected})")  # fmt: skip
    used_ops = {n.op for n in ir.reachable([result, log_det, *effects])}
    return [(result, out), (log_det, "log_det")], used_ops, effects


def trace_embedding(plan: EmbeddingPlan) -> tuple[list[tuple[ir.Value, str]], set[str]]:
    """Trace the context embedding: ``(features, "features")`` from ``context``, and the
    IR ops it uses (the output checked against the plan's size, as a layer's is)."""
    context = ir.source("context", (plan.context_dim,), batched=True)
    features = plan.embed(View(plan.params, plan.args, dense=""), context)
    if not features.batched or features.shape != (plan.features,):
        raise ir.ShapeError(f"ContextEmbedding: features have shape "
                            f"{features.node.describe()}, expected (*batch, {plan.features})")  # fmt: skip
    return [(features, "features")], {n.op for n in ir.topo_order([features])}


# ------------------------------------------------------------------ whole modules
#: Ops that act entry by entry on images, so they run in either layout (with a number,
#: or with another image in the same layout).
_LAYOUT_FREE = frozenset({"relu", "leaky_relu", "elu", "tanh", "sigmoid", "add", "sub", "mul",
                          "neg"})  # fmt: skip


def conv_layouts(function: ir.Function) -> dict[int, tuple[str, str]] | None:
    """``{id(node): (input layout, output layout)}`` of each ``conv2d`` in ``function``
    where it can compute channels last inside: every node other than a source is a
    convolution or an entry-by-entry op (:data:`_LAYOUT_FREE`) of values computed inside,
    the output is a convolution that nothing inside reads, and only convolutions read the
    parameters. A convolution reading a parameter takes channels first (``"first"``) and
    the output one gives channels first; every other layout is ``"last"``. ``None``
    where the function is not of that form (it is then emitted as it is)."""
    nodes = ir.reachable([function.output])
    output = function.output.node
    if output.op != "conv2d":
        return None
    layouts = {}
    for node in nodes:
        if node.op == "source":
            continue
        values = [a.node for a in node.args if isinstance(a, ir.Value)]
        if output in values:
            return None
        if node.op == "conv2d":
            data = values[0]
            if data.op == "source" and data.attrs.get("expr") not in function.params:
                return None
            into = "first" if data.op == "source" else "last"
            layouts[id(node)] = (into, "first" if node is output else "last")
        elif node.op not in _LAYOUT_FREE or any(v.op == "source" for v in values):
            return None
    return layouts


def _method(plan: Plan, method: str, functions: list[ir.Function], em) -> str:
    """The method ``method`` of a layer class: the body of the sub-function every
    direction calls (:func:`flowbridge.ir.call`), or a loop's step (:func:`flowbridge.ir.loop`,
    its result named for the state: ``x_next``), written once. Each call traces it anew;
    all must print the same body, or the definition is refused here."""
    texts = set()
    result = "out" if functions[0].kind == "call" else f"{functions[0].params[0]}_next"
    for function in functions:
        table = em.OPS
        layouts = conv_layouts(function) if em.CONV_LAYOUT else None
        if layouts:  # each convolution under its own op name, written by its layouts
            table = {**em.OPS}
            for node in ir.reachable([function.output]):
                if id(node) in layouts:
                    node.op = "conv2d:{}>{}".format(*layouts[id(node)])
                    table[node.op] = em.CONV_LAYOUT[layouts[id(node)]]
        lines = emit_body([(function.output, result)], {"self", *function.params}, table, (),
                          em.IN_PLACE, em.SPLIT)  # fmt: skip
        texts.add("\n".join(lines))
    if len(texts) != 1:
        raise ir.DefinitionError(f"{plan.class_name}: the directions call {method} with bodies that "
                            f"differ")  # fmt: skip
    params = ", ".join(["self", *functions[0].params])
    given = ", ".join(functions[0].params)
    doc = (f"m({given}): the {method} every direction calls." if functions[0].kind == "call"
           else f"{method}({given}): one step of the loop a direction runs.")  # fmt: skip
    return "\n".join([
        f"    def {method}({params}):",
        f'        """{doc}"""',
        *("        " + ln for ln in texts.pop().split("\n")),
        f"        return {result}",
    ])  # fmt: skip


def _hoist_constants(
    outputs: list[tuple[ir.Value, str]], effects: list[ir.Value], em
) -> tuple[str, ...]:
    """Build constants once: the nodes of a traced body that depend on the layer's
    constant buffers alone (a checkerboard mask from its row and column parities) are
    computed in ``__init__`` and stored as attributes (the emitter's ``CONSTANT``: a
    non-persistent buffer in Pyro, a tensor in TFP, an array in NumPy); the body reads
    ``self.<name>`` instead. The bodies of the methods it calls are searched too (a
    MADE's masks, built from its degrees inside the conditioner). Rewrites the traced
    graph in place and returns the ``__init__`` lines."""
    nodes = ir.reachable([v for v, _ in outputs] + list(effects))
    static: set[int] = set()
    for node in nodes:
        if node.op == "source":
            if node.attrs.get("constant"):
                static.add(id(node))
            continue
        tensors = [a for a in node.args if isinstance(a, ir.Value)]
        if node.op not in (*ir.EFFECTS, "call", "loop") and tensors and all(
                id(a.node) in static for a in tensors):  # fmt: skip
            static.add(id(node))
    roots: dict[int, ir.Node] = {}
    for node in nodes:
        if id(node) not in static:
            for a in node.args:
                if isinstance(a, ir.Value) and id(a.node) in static and a.node.op != "source":
                    roots.setdefault(id(a.node), a.node)
    if not roots:
        return ()
    names, taken = {}, {"self"}
    for key, node in roots.items():
        base = node.hint or "constant"
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        names[key] = name
        taken.add(name)
    lines = emit_body([(ir.Value(n), names[k]) for k, n in roots.items()], {"self"}, em.OPS)
    lines += [em.CONSTANT.format(name=names[k], value=names[k]) for k in roots]
    for node in nodes:
        if id(node) not in static:
            node.args = tuple(
                ir.source(f"self.{names[id(a.node)]}", a.node.shape, dtype=a.node.dtype)
                if isinstance(a, ir.Value) and id(a.node) in roots else a
                for a in node.args
            )
    return tuple(lines)


def class_names(plans: list[Plan], texts: list[str]) -> list[str]:
    """The generated class of each plan, given each plan's emitted class text (with a
    placeholder name): plans share a class exactly when their texts are equal. A class
    is named after its paper name alone when it has one configuration in the flow, else
    with the words of ``plan.variant`` that tell the configurations apart: the detailed
    words (``AffineCouplingClampM5To3``) only where the short ones
    (``AffineCouplingSplitFirst``) do not and the name stays readable. Configurations
    the words do not tell apart are told apart by their event shape
    (``AffineCouplingCheckerboardOn1x8x8``); only those that even it does not tell apart
    are numbered (``ScalingV1``, ``ScalingV2``)."""
    distinct: dict[str, dict[str, Plan]] = {}  # paper name -> text -> first plan
    for plan, text in zip(plans, texts, strict=True):
        distinct.setdefault(plan.class_name, {}).setdefault(text, plan)
    names: dict[tuple[str, str], str] = {}
    for paper, by_text in distinct.items():
        if len(by_text) == 1:
            names[paper, next(iter(by_text))] = paper
            continue
        variants = [p.variant for p in by_text.values()]
        aspects = [i for i in range(max(map(len, variants)))
                   if len({v[i][1] if i < len(v) else "" for v in variants}) > 1]  # fmt: skip

        short, detailed = (["".join(v[i][level] for i in aspects if i < len(v)) for v in variants]
                           for level in (0, 1))  # fmt: skip
        unique = len(set(detailed)) == len(detailed) and len(set(short)) < len(short)
        chosen = detailed if unique and max(map(len, detailed)) + len(paper) <= MAX_NAME else short
        if max(map(len, chosen)) + len(paper) > MAX_NAME:
            chosen = [""] * len(chosen)  # words too long for a readable name
        chosen = _told_apart(paper, chosen, [p.event_shape for p in by_text.values()])
        for text, word in zip(by_text, chosen, strict=True):
            names[paper, text] = paper + word
    return [names[p.class_name, t] for p, t in zip(plans, texts, strict=True)]


def _told_apart(paper: str, words: list[str], shapes: list[tuple[int, ...]]) -> list[str]:
    """``words`` where they are distinct; where several share one, each with its event
    shape (``On4x4x4``) when the shapes tell them apart, else numbered (``V1``...); a
    word every configuration shares is dropped."""
    out = list(words)
    for word in set(words):
        group = [k for k, w in enumerate(words) if w == word]
        if len(group) == 1:
            continue
        word = word if len(group) < len(words) else ""  # a word they all share tells nothing
        shaped = [f"{word}On{'x'.join(map(str, shapes[k]))}" for k in group]
        if len(set(shaped)) < len(shaped) or max(map(len, shaped)) + len(paper) > MAX_NAME:
            shaped = [f"{word}V{n + 1}" for n in range(len(group))]
        for k, name in zip(group, shaped, strict=True):
            out[k] = name
    return out


_PLACEHOLDER = "__FLOWBRIDGE_CLASS__"


def generate(spec: FlowSpec, backend: str, plans: list[Plan] | None = None) -> str:
    """The standalone source of ``spec`` for ``backend`` (``pyro``, ``tfp``, ``numpy``).

    ``plans`` (the flow's plans, :func:`flowbridge.layers.plan_flow`) are made here when
    not given; a caller that has them already hands them on, so a flow is planned once."""
    em = backends.get(backend).emitter()
    plans = plan_flow(spec) if plans is None else plans
    texts, used_ops, cache = [], set(), {}
    for plan in plans:
        bodies, called, constants = {}, {}, {}
        directions = ("forward", "inverse") + ("training",) * (plan.training_forward is not None)
        for direction in directions:
            outputs, ops_here, effects = trace(plan, direction)
            used_ops |= ops_here
            constants[direction] = _hoist_constants(outputs, effects, em)
            bodies[direction] = emit_body(outputs, {"self", "x", "y", "context"}, em.OPS,
                                          effects, em.IN_PLACE, em.SPLIT, em.effect)  # fmt: skip
            nodes = ir.reachable([v for v, _ in outputs] + effects)
            for method, found in ir.functions(nodes).items():
                called.setdefault(method, []).extend(found)
        if len({frozenset(lines) for lines in constants.values()}) > 1:  # the same, any order
            raise ir.DefinitionError(f"{plan.class_name}: the directions' constants differ")
        methods = tuple(_method(plan, m, fs, em) for m, fs in called.items())
        text = em.layer_class(_PLACEHOLDER, plan, bodies["forward"], bodies["inverse"],
                              bodies.get("training"), methods, constants["forward"])  # fmt: skip
        texts.append(cache.setdefault(text, text))
    names = class_names(plans, texts)
    classes = list(dict.fromkeys(t.replace(_PLACEHOLDER, n) for t, n in zip(texts, names, strict=True)))
    embedding = plan_embedding(spec)
    if embedding is not None:
        outputs, ops_here = trace_embedding(embedding)
        used_ops |= ops_here
        body = emit_body(outputs, {"self", "context"}, em.OPS, (), em.IN_PLACE, em.SPLIT)
        classes.insert(0, em.embedding_class(embedding, body))

    spec_json = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    params = param_specs(spec, plans)
    shapes = {name: param.shape for name, param in params.items()}
    bounds = {name: param.init.bound for name, param in params.items()}
    calls = [(name, {**plan.args, "event_shape": plan.event_shape,
                     **({"output_shape": plan.output_shape}
                        if plan.output_shape != plan.event_shape else {}),
                     **({"context_dim": plan.context} if plan.context else {})})
             for name, plan in zip(names, plans, strict=True)]  # fmt: skip
    # The prelude's definitions this module uses, in dependency order (a class after
    # its bases): per op and field kind, then the shared, base and flow-kind ones.
    wanted: list[str] = []
    for op in sorted(used_ops):
        wanted += em.OP_HELPERS.get(op, ())
    for kind in sorted({f.kind for plan in plans for f in plan.fields}):
        wanted += em.FIELD_HELPERS.get(kind, ())
    if any(plan.output_shape != plan.event_shape for plan in plans):
        wanted += em.SHAPES
    helpers = [em.helpers(list(dict.fromkeys(wanted)))] if wanted else []
    shared = ["_per_layer", *(["_under"] if embedding is not None else [])]
    flow_kind = [*(em.CONDITIONAL if spec.context_dim else em.UNCONDITIONAL),
                 *(em.EMBEDDING if embedding is not None else ()),
                 *(em.IMAGE if len(spec.event_shape) == 3 else ())]  # fmt: skip
    stdlib = sorted({em.OP_IMPORTS[op] for op in used_ops if op in em.OP_IMPORTS})
    imports = em.CONDITIONAL_IMPORTS if spec.context_dim else em.IMPORTS
    imports = "\n".join(stdlib) + "\n\n" + imports if stdlib else imports
    parts = [
        _header(spec, backend, em) + "\n\n" + imports + "\n\n" + "\n".join([
            f"SPEC_HASH = {py_str(spec.hash)}",
            f"SPEC_JSON = {_wrapped_string(spec_json)}",
            f"EVENT_SHAPE = {literal(tuple(spec.event_shape))}",
            *([f"OUTPUT_SHAPE = {literal(plans[-1].output_shape)}"]
              if plans[-1].output_shape != tuple(spec.event_shape) else []),
            *([f"CONTEXT_DIM = {spec.context_dim}"] if spec.context_dim else []),
            f"PARAM_SHAPES = {literal(shapes, 0, 15)}",
            _INIT_COMMENT + (_MATRIX_COMMENT if any(
                f.kind == "matrix" for plan in plans for f in plan.fields) else ""),
            f"PARAM_INIT = {literal(bounds, 0, 13)}",
        ]),  # fmt: skip
        *helpers,
        SHARED.source(shared),
        em.helpers(em.BASE),
        *([em.helpers(flow_kind)] if flow_kind else []),
        *classes,
        em.flow_code(spec, calls, embedding),
    ]
    return "\n\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"


_MATRIX_COMMENT = """
# A square "matrix" weight (an LU factorisation's packed factors) starts at the identity
# plus that, so its layer starts as its permutation."""

_INIT_COMMENT = """\
# Each parameter starts uniform in +-bound, or at zero where the bound is 0: kernels of
# hidden layers 1/sqrt(fan_in), a conditioner's last layer and log-scales 0, so the flow
# starts as the identity (each rule is stated once, in flowbridge's layer plans)."""


def _wrapped_string(text: str) -> str:
    """``text`` as ``NAME = "..."`` fits after 12 columns, else in parentheses: whole when
    it fits on its own indented line (as ruff format joins it), else in chunks of up to
    80 characters cut between JSON tokens only (a token longer than that alone)."""
    if len(py_str(text)) + 12 <= WIDTH:
        return py_str(text)
    if len(py_str(text)) + 4 <= WIDTH:
        return f"(\n    {py_str(text)}\n)"
    chunks = [""]
    for token in _JSON_TOKEN.findall(text):
        if chunks[-1] and len(chunks[-1]) + len(token) > 80:
            chunks.append("")
        chunks[-1] += token
    assert "".join(chunks) == text, "the JSON tokens must cover the text"
    return "(\n" + "".join(f"    {py_str(c)}\n" for c in chunks) + ")"


#: A token of compact JSON: a string (escapes included), a bare number or word, a mark.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[^",:\[\]{}]+|[,:\[\]{}]')


def _header(spec: FlowSpec, backend: str, em) -> str:
    layer_types = ", ".join(dict.fromkeys(type(layer).__name__ for layer in spec.layers))
    title = textwrap.fill(
        f"{em.TITLE} for the flow {spec.name!r}: {len(spec.layers)} layers ({layer_types}) "
        f"on events of shape {tuple(spec.event_shape)}.",
        WIDTH - 4,
    )
    usage = (em.CONDITIONAL_USAGE if spec.context_dim else em.USAGE).format(
        event_ndims=len(spec.event_shape), context_dim=spec.context_dim)
    return (
        "# Generated by flowbridge. DO NOT EDIT.\n"
        f"# Spec sha256:{spec.hash}\n"
        f"# Regenerate with: flowbridge generate SPEC --backend {backend}\n"
        f'"""{title}\n\n{usage}\n'
        f'{em.IMAGE_SHAPES if len(spec.event_shape) == 3 else VECTOR_SHAPES}\n"""'
    )


VECTOR_SHAPES = "Shapes: inputs are (*batch, D); log-dets are (*batch,)."

_LOAD_LOCK = threading.Lock()


def _module_name(backend: str, spec_hash: str) -> str:
    return f"flowbridge_generated.{backend}_{spec_hash[:16]}"


def loaded(backend: str, spec_hash: str) -> types.ModuleType | None:
    """The generated module of ``spec_hash`` for ``backend`` if this process has loaded it
    already (consulted before any planning or code generation), else None."""
    module = sys.modules.get(_module_name(backend, spec_hash))
    return module if module is not None and module.SPEC_HASH == spec_hash else None


def load(code: str, backend: str, spec_hash: str) -> types.ModuleType:
    """Execute generated code as a module registered in ``sys.modules`` (so pickling,
    ``torch.compile`` and tracebacks see real source lines). Thread-safe: threads
    loading the same spec at once all get the one module object."""
    name = _module_name(backend, spec_hash)
    with _LOAD_LOCK:
        if name in sys.modules and sys.modules[name].SPEC_HASH == spec_hash:
            return sys.modules[name]
        return _load(code, name, backend, spec_hash)


class _SourceLoader:
    """The loader of a generated module (PEP 302's ``get_source``): ``linecache`` asks it
    for the source whenever its cached lines are dropped, so ``inspect.getsource``,
    tracebacks and TensorFlow's AutoGraph (which empties the cache entry before reading
    it) always find the generated lines."""

    def __init__(self, code: str):
        self._code = code

    def get_source(self, name: str) -> str:
        return self._code


def _load(code: str, name: str, backend: str, spec_hash: str) -> types.ModuleType:
    # a path-like name, not "<...>": linecache re-reads such a file through the module's
    # loader, where it gives up on a "<...>" name
    filename = f"flowbridge_generated/{backend}_{spec_hash[:16]}.py"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    module.__loader__ = _SourceLoader(code)
    sys.modules.setdefault("flowbridge_generated", types.ModuleType("flowbridge_generated"))
    exec(compile(code, filename, "exec"), module.__dict__)
    sys.modules[name] = module
    return module
