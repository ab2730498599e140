"""The JSON Schema of the spec format: pydantic's schema of :class:`FlowSpec`, patched so
that it states what pydantic leaves out (discriminator tags as required fields, the
constraints a validator wraps, the current size ceilings of :func:`flowbridge.limits`)."""

from __future__ import annotations

import re
from typing import Any

from ..limits import current
from .flow import FORMAT_VERSION, FlowSpec


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of the spec format.

    It states every rule about a single field (types, choices, ranges of constants, the
    ceilings on sizes in force: the defaults of :func:`flowbridge.limits` unless a
    ``with`` block changed them, including the number of layers and the conditioners'
    depth and width), and that each layer, mask and scale map needs its ``type`` or
    ``kind`` tag. Rules that relate fields are checked on load and listed in the schema's
    ``description``: the event shape is ``(D,)`` or ``(C, H, W)`` and each layer takes
    its events, mask sizes against the event size, explicit masks and permutations of
    length D, ``low < high`` for a clamp, a seed for a random permutation only, a context
    embedding only with ``context_dim > 0``, and the ceiling on the total parameter count.
    A document that loads (:meth:`flowbridge.FlowSpec.from_dict`) is valid under the
    schema. ``flowbridge schema`` prints it.

    Returns:
        dict: the schema as JSON data: ``$schema``, ``title``, ``description``, the
        spec's ``properties`` and ``required`` fields, and the layer models under
        ``$defs``.

    Example:
        >>> import flowbridge as fb
        >>> schema = fb.json_schema()
        >>> schema["$schema"], schema["required"]
        ('https://json-schema.org/draft/2020-12/schema', ['event_shape', 'layers'])
        >>> schema["$defs"]["HalfMask"]["required"], schema["properties"]["layers"]["maxItems"]
        (['kind'], 1024)
        >>> with fb.limits(layers=10):
        ...     fb.json_schema()["properties"]["layers"]["maxItems"]
        10
    """
    schema = FlowSpec.model_json_schema()
    defs = schema.get("$defs", {})
    ceilings = current()
    # the models' descriptions are written as reStructuredText: JSON readers get Markdown
    for node in _schema_nodes(schema):
        if isinstance(node.get("description"), str):
            node["description"] = _markdown(node["description"])
    # constraints pydantic leaves under its own names when a validator wraps the type
    keywords = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}
    for node in _schema_nodes(schema):
        if node.get("type") in ("integer", "number"):
            for short, keyword in keywords.items():
                if short in node:
                    node[keyword] = node.pop(short)
    # a discriminated union needs its tag: "type" of a layer, "kind" of a mask or scale
    for node in _schema_nodes(schema):
        tag = node.get("discriminator")
        if isinstance(tag, dict):
            for ref in tag.get("mapping", {}).values():
                target = defs[ref.rsplit("/", 1)[-1]]
                required = target.setdefault("required", [])
                if tag["propertyName"] not in required:
                    required.insert(0, tag["propertyName"])
    sizes = {
        ("FlowSpec", "event_shape"): ceilings.event_size,
        ("FlowSpec", "context_dim"): ceilings.event_size,
        ("Conditioner", "hidden"): ceilings.width,
        ("ResNetConditioner", "channels"): ceilings.width,
        ("ResNetConditioner", "blocks"): ceilings.depth,
        ("ContextEmbedding", "hidden"): ceilings.width,
        ("ContextEmbedding", "features"): ceilings.event_size,
        ("SplitMask", "size"): ceilings.event_size - 1,
        ("Permutation", "indices"): ceilings.event_size - 1,
    }
    for (model, field), maximum in sizes.items():
        prop = (schema if model == "FlowSpec" else defs[model])["properties"][field]
        for node in _schema_nodes(prop):
            if node.get("type") == "integer":
                node["maximum"] = maximum
    defs["Conditioner"]["properties"]["hidden"]["maxItems"] = ceilings.depth
    defs["ContextEmbedding"]["properties"]["hidden"]["maxItems"] = ceilings.depth
    defs["ResNetConditioner"]["required"] = ["kind"]  # no kind: an MLP conditioner
    schema["properties"]["layers"]["maxItems"] = ceilings.layers
    schema["properties"]["event_shape"]["minItems"] = 1
    schema["properties"]["event_shape"]["maxItems"] = 3  # (D,) or (C, H, W)
    schema["properties"]["layers"]["minItems"] = 1
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"flowbridge FlowSpec, format {FORMAT_VERSION}"
    schema["description"] = (
        "A normalizing flow. Checked on load beyond this schema: the event shape is (D,) "
        "or (C, H, W), and each layer takes its events (checkerboard and channel masks, "
        "resnet conditioners and squeezes images, permutations and the other masks and "
        "MLP conditioners vectors; a squeeze needs an even height and width); a split mask's size is "
        "below D; an explicit mask has D booleans and passes and transforms at least one "
        "entry; explicit permutation indices are a permutation of 0..D-1; a random "
        "permutation has a seed and others none; a clamp has low < high; a context "
        "embedding needs context_dim > 0; the flow has at "
        f"most {ceilings.params} parameters (ceilings are raised with flowbridge.limits)."
    )
    return schema


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`]+)`")


def _markdown(text: str) -> str:
    r"""A description written as reStructuredText, as the Markdown a JSON Schema reader
    shows: code in double backquotes gets single ones, a cross-reference (a ``:func:`` or
    ``:class:`` role, with or without ``~``) becomes its name in backquotes, and the lines
    of a paragraph become one line.

    Example:
        >>> from flowbridge.spec.schema import _markdown
        >>> print(_markdown("An ``actnorm``, see\n:func:`flowbridge.actnorm_init` and "
        ...                 ":class:`~flowbridge.ActNorm`.\n\nNext."))
        An `actnorm`, see `flowbridge.actnorm_init` and `ActNorm`.
        <BLANKLINE>
        Next.
    """

    def reference(match: re.Match) -> str:
        tilde, target = match[1], match[2].strip()
        titled = re.fullmatch(r"(.+?)\s*<[^>]+>", target, re.S)  # :role:`title <target>`
        if titled:
            return f"`{titled[1]}`"
        return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"

    text = re.sub(r"``(.+?)``", r"`\1`", _ROLE.sub(reference, text), flags=re.S)
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _schema_nodes(node: Any):
    """Every dict in a JSON Schema tree (iteratively)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
