"""Nodes that make and reshape small values: text, numbers, templates, JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from flowbuilder.sdk import (
    JSONValue,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    RunContext,
    Settings,
    lone_surrogate,
    to_jsonable,
)
from nodes.core.render import Limits, RenderError, render


class Text(Node):
    """A fixed piece of text."""

    meta = NodeMeta(type="core/text", version="1.0.0", category="Text", title="Text")

    class Inputs(BaseModel):
        text: str = Param("", description="the text", widget="textarea")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        return self.Outputs(text=inputs.text)


class Number(Node):
    """A fixed number."""

    meta = NodeMeta(type="core/number", version="1.0.0", category="Values", title="Number")

    class Inputs(BaseModel):
        value: float = Param(0.0, description="the number")

    class Outputs(BaseModel):
        value: float

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        return self.Outputs(value=inputs.value)


def render_limits(settings: Settings) -> Limits:
    """A Template render's bounds from the settings (``FLOWBUILDER_TEMPLATE_*``)."""
    return Limits(
        timeout_s=settings.template_timeout_s,
        max_chars=settings.template_max_chars,
        memory_mb=settings.template_memory_mb,
    )


def render_failure(exc: RenderError, limits: Limits, variables: dict[str, Any]) -> NodeError:
    """The node's error for a failed render: a sentence naming the cause and the limit."""
    if exc.kind == "undefined":
        return NodeError(
            f"template uses a variable with no value: {exc.message}; "
            f"available: {', '.join(sorted(variables)) or 'none'}"
        )
    if exc.kind == "syntax":
        return NodeError(f"template syntax error on {exc.message}")
    if exc.kind == "security":
        return NodeError(f"template refused by the sandbox: {exc.message}")
    if exc.kind == "too_long":
        return NodeError(
            f"template too large: {exc.message} (FLOWBUILDER_TEMPLATE_MAX_CHARS, "
            f"{limits.max_chars:,} characters)"
        )
    if exc.kind == "too_slow":
        return NodeError(
            f"template took longer than the limit of {limits.timeout_s:g} s to render "
            "(FLOWBUILDER_TEMPLATE_TIMEOUT_S)"
        )
    if exc.kind == "memory":
        return NodeError(
            f"template needed more than the limit of {limits.memory_mb} MB of memory "
            "(FLOWBUILDER_TEMPLATE_MEMORY_MB)"
        )
    return NodeError(f"template failed: {exc.message}")


class Template(Node):
    """Fill a Jinja2 template with named variables.

    Variables: 'text', 'a', 'b', 'c' from their ports, plus every key of the 'vars' JSON
    object. Using a variable that has no value is an error naming it. Templates run in
    Jinja2's sandbox, bounded in time, output and memory (``FLOWBUILDER_TEMPLATE_*``;
    see :mod:`nodes.core.render`).

    Raises NodeError naming the cause: a variable with no value, a syntax error (with
    its line), something the sandbox refuses, or a limit passed (naming the setting).
    """

    meta = NodeMeta(type="core/template", version="1.0.0", category="Text", title="Template")

    class Inputs(BaseModel):
        text: str | None = Port(None, description="available as {{ text }}")
        a: str | None = Port(None, description="available as {{ a }}")
        b: str | None = Port(None, description="available as {{ b }}")
        c: str | None = Port(None, description="available as {{ c }}")
        vars: dict[str, Any] | None = Port(None, description="more variables, by key")
        template: str = Param("{{ text }}", description="Jinja2 template", widget="textarea")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        variables: dict[str, Any] = dict(inputs.vars or {})
        for name in ("text", "a", "b", "c"):
            value = getattr(inputs, name)
            if value is not None:
                variables[name] = value
        limits = render_limits(ctx.settings)
        try:
            text = await render(inputs.template, to_jsonable(variables), limits)
        except RenderError as exc:
            raise render_failure(exc, limits, variables) from None
        where = lone_surrogate(text)
        if where is not None:
            raise NodeError(f"template made text with a lone surrogate ({where}), not Unicode")
        return self.Outputs(text=text)


class JoinText(Node):
    """Join texts with a separator, skipping inputs that have no value."""

    meta = NodeMeta(type="core/join", version="1.0.0", category="Text", title="Join")

    class Inputs(BaseModel):
        a: str | None = Port(None, description="first text")
        b: str | None = Port(None, description="second text")
        c: str | None = Port(None, description="third text")
        d: str | None = Port(None, description="fourth text")
        items: list[str] | None = Port(None, description="a list of texts, joined after a–d")
        separator: str = Param("\n", description="put between texts")

    class Outputs(BaseModel):
        text: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        parts = [p for p in (inputs.a, inputs.b, inputs.c, inputs.d) if p is not None]
        parts.extend(inputs.items or [])
        return self.Outputs(text=inputs.separator.join(parts))


class JsonParse(Node):
    """Parse JSON text into a value."""

    meta = NodeMeta(type="core/json_parse", version="1.0.0", category="JSON", title="JSON parse")

    class Inputs(BaseModel):
        text: str = Port(description="JSON text")

    class Outputs(BaseModel):
        value: JSONValue

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        try:
            return self.Outputs(value=json.loads(inputs.text))
        except json.JSONDecodeError as exc:
            raise NodeError(
                f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            ) from None


_STEP = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def get_path(value: Any, path: str) -> Any:
    """Follow a path like ``a.b[0].c`` into nested dicts and lists.

    Raises:
        KeyError: with the part of the path that was not found.
    """
    current = value
    walked = ""
    for match in _STEP.finditer(path):
        key, index = match.group(1), match.group(2)
        if index is not None:
            walked += f"[{index}]"
            if not isinstance(current, list) or not -len(current) <= int(index) < len(current):
                raise KeyError(walked)
            current = current[int(index)]
        else:
            walked += ("." if walked else "") + key
            if isinstance(current, dict) and key in current:
                current = current[key]
            elif (
                isinstance(current, list)
                and key.lstrip("-").isdigit()
                and -len(current) <= int(key) < len(current)
            ):
                current = current[int(key)]
            else:
                raise KeyError(walked)
    return current


class JsonGet(Node):
    """Pick a value out of JSON by a path such as 'results[0].text'.

    A path that is not found is an error naming the part that is missing, unless a
    default is set.
    """

    meta = NodeMeta(type="core/json_get", version="1.0.0", category="JSON", title="JSON get")

    class Inputs(BaseModel):
        value: JSONValue = Port(description="a JSON value")
        path: str = Param("", description="dotted keys and [index] steps; empty for the whole")
        default: Any = Param(None, description="returned when the path is not found")

    class Outputs(BaseModel):
        value: Any

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        try:
            return self.Outputs(value=get_path(inputs.value, inputs.path))
        except KeyError as exc:
            if inputs.default is not None:
                return self.Outputs(value=inputs.default)
            raise NodeError(f"path '{inputs.path}' not found: nothing at '{exc.args[0]}'") from None
