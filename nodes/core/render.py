"""Bounded Template renders: in the node when that is provably cheap, else in a worker.

A template renders **in the node** (on the event loop, as before) only when its syntax
tree has no loops, macros, blocks, assignments, calls or arithmetic — only text,
variables, attribute/item lookups, conditions, ``~`` and a few filters that are linear
in their input (:data:`INLINE_FILTERS`) — and the size of its output is then bounded by
its own length plus, per variable reference, the size of the variables
(:func:`inline_bound`), which must be within the output limit. ``Hello {{ text }}!`` is
such a template; its render costs what it did.

Every other template renders in a **worker process** (:mod:`nodes.core.sandbox`): with
a memory cap (``FLOWBUILDER_TEMPLATE_MEMORY_MB``), killed when it overruns its time
(``FLOWBUILDER_TEMPLATE_TIMEOUT_S``) or when the run is cancelled (``?timeout=``), so a
template bomb costs one worker, never the server's event loop (see
:mod:`nodes.core.workers`).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import jinja2
from jinja2 import nodes

from nodes.core.sandbox import answer_for, compiled, environment, render_bounded
from nodes.core.workers import Limits, RenderError, render_in_worker

INLINE_FILTERS = frozenset(
    {
        "capitalize",
        "d",
        "default",
        "e",
        "escape",
        "first",
        "float",
        "int",
        "last",
        "length",
        "count",
        "lower",
        "safe",
        "string",
        "title",
        "tojson",
        "trim",
        "upper",
    }
)
INLINE_TESTS = frozenset(
    {"defined", "undefined", "none", "string", "number", "true", "false", "eq", "ne"}
)
_INLINE_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.Getattr,
    nodes.Getitem,
    nodes.If,
    nodes.CondExpr,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Concat,
    nodes.Filter,
    nodes.Test,
)
EXPANSION = 12
"""The most a filter in :data:`INLINE_FILTERS` multiplies its input's length by (a
character escaped as JSON ``\\uXXXX`` or HTML ``&#34;`` is at most 6; 12 leaves room)."""


# ---- in the node, when provably cheap --------------------------------------------------


LONG_TEMPLATE = 20_000
"""Templates longer than this (characters) are parsed in a thread, off the event loop."""


@functools.lru_cache(maxsize=256)
def references(source: str, max_chars: int) -> int | None:
    """How many variable references the template makes when it may render in the node
    (see the module docstring), else None.

    Raises:
        jinja2.TemplateSyntaxError: the template does not parse.
    """
    tree = environment(max_chars).parse(source)
    count = 0
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, _INLINE_NODES):
            return None
        if isinstance(node, nodes.Filter) and node.name not in INLINE_FILTERS:
            return None
        if isinstance(node, nodes.Test) and node.name not in INLINE_TESTS:
            return None
        if isinstance(node, nodes.Name):
            if node.ctx != "load":
                return None
            count += 1
        stack.extend(node.iter_child_nodes())
    return count


def _size(value: Any, budget: int) -> int:
    """An upper bound on ``str(value)``'s length, or more than ``budget`` (then stop)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 4
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
            total += 2 + 2 * len(item)
        elif isinstance(item, list | tuple):
            stack.extend(item)
            total += 2 + 2 * len(item)
        elif item is None or isinstance(item, bool | int | float):
            total += 32
        else:
            return budget + 1
        if total > budget:
            return total
    return total


def inline_bound(source: str, refs: int, variables: dict[str, Any], max_chars: int) -> int:
    """An upper bound on the output of an in-node template (see the module docstring)."""
    if refs == 0:
        return len(source)
    per_ref = _size(variables, max_chars // (refs * EXPANSION) + 1) * EXPANSION
    return len(source) + refs * per_ref


def _in_node(source: str, max_chars: int) -> tuple[int, jinja2.Template] | None:
    """(references, compiled template) when the template may render in the node."""
    refs = references(source, max_chars)
    return None if refs is None else (refs, compiled(source, max_chars))


async def render(source: str, variables: dict[str, Any], limits: Limits) -> str:
    """Render a template within ``limits`` (see the module docstring).

    Raises:
        RenderError: the template failed or overran a limit (``kind`` says which).
    """
    if len(source) > limits.max_chars:
        raise RenderError(
            "too_long", f"the template is longer than the limit of {limits.max_chars:,} characters"
        )
    try:
        if len(source) > LONG_TEMPLATE:
            found = await asyncio.to_thread(_in_node, source, limits.max_chars)
        else:
            found = _in_node(source, limits.max_chars)
        if found is not None:
            refs, template = found
            if inline_bound(source, refs, variables, limits.max_chars) <= limits.max_chars:
                return render_bounded(template, variables, limits.max_chars)
    except (jinja2.TemplateError, RecursionError, OverflowError, MemoryError) as exc:
        answer = answer_for(exc)
        raise RenderError(answer["error"], answer["message"]) from None
    try:
        return await render_in_worker(source, variables, limits)
    except TypeError as exc:  # a variable json cannot write
        raise RenderError("error", f"the variables are not JSON values ({exc})") from None
