"""The Template node's bounds (nodes/core/render.py, nodes/core/sandbox.py), run through
the engine: templates that loop, multiply, grow or reach for internals fail in bounded
time with a message naming the limit, and ordinary ones render the same in the node or
in a worker process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.registry import Registry
from flowbuilder.scheduler import RunResult
from flowbuilder.settings import Settings
from nodes.core.render import references


@pytest.fixture
def bounded(registry: Registry, home: Path) -> Engine:
    return Engine(
        registry,
        Settings.from_env(
            template_timeout_s=1.0, template_max_chars=10_000, template_memory_mb=256
        ),
    )


def render(engine: Engine, registry: Registry, template: str, **values: Any) -> RunResult:
    b = GraphBuilder(registry)
    tpl = b.add("core/template", template=template)
    inputs = {}
    for name, value in values.items():
        src = b.add("core/input", name=name, type="json" if name == "vars" else "text")
        b.link(src, "value", tpl, name)
        inputs[name] = value
    out = b.add("core/output", name="out")
    b.link(tpl, "text", out, "value")
    return asyncio.run(engine.run(b.build(), inputs))


@pytest.mark.parametrize(
    ("template", "says"),
    [
        (
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "FLOWBUILDER_TEMPLATE_TIMEOUT_S",
        ),
        ("{{ 'x' * 10**9 }}", "FLOWBUILDER_TEMPLATE_MAX_CHARS"),
        ("{{ 7 ** (10 ** 9) }}", "FLOWBUILDER_TEMPLATE_MAX_CHARS"),
        ("{% for i in range(100000) %}{{ i }}{% endfor %}", "FLOWBUILDER_TEMPLATE_MAX_CHARS"),
        ("{{ 'x'|center(300000000) }}", "FLOWBUILDER_TEMPLATE_MEMORY_MB"),
        ("{{ ''.__class__.__mro__ }}", "refused by the sandbox"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recurses too deeply"),
        ("{{ '\\ud800' }}", "lone surrogate"),
    ],
)
def test_a_bomb_fails_in_bounded_time_naming_the_limit(
    bounded: Engine, registry: Registry, template: str, says: str
) -> None:
    t0 = time.monotonic()
    r = render(bounded, registry, template)
    assert r.status == "failed"
    assert says in (r.error or ""), r.error
    assert time.monotonic() - t0 < 5.0


def test_plain_substitution_renders_in_the_node(bounded: Engine, registry: Registry) -> None:
    template = "Hello {{ text|upper }}{% if a is defined %}, {{ a }}{% endif %}!"
    assert references(template, 10_000) == 3
    assert render(bounded, registry, template, text="ada").outputs == {"out": "Hello ADA!"}


def test_loops_and_calls_render_in_a_worker_with_the_same_result(
    bounded: Engine, registry: Registry
) -> None:
    template = "{% for w in text.split() %}[{{ w|title }}]{% endfor %} {{ n * 2 }}"
    assert references(template, 10_000) is None  # not in the node
    r = render(bounded, registry, template, text="ask not", vars={"n": 21})
    assert r.outputs == {"out": "[Ask][Not] 42"}


def test_inputs_larger_than_the_output_limit_go_to_the_worker_and_are_refused(
    bounded: Engine, registry: Registry
) -> None:
    r = render(bounded, registry, "{{ text }}{{ text }}", text="x" * 6_000)
    assert r.status == "failed"
    assert "FLOWBUILDER_TEMPLATE_MAX_CHARS" in (r.error or "")
    assert render(bounded, registry, "{{ text }}", text="x" * 6_000).outputs == {"out": "x" * 6_000}


def test_errors_read_as_before(bounded: Engine, registry: Registry) -> None:
    r = render(bounded, registry, "{% for x in [1] %}{{ topic }}{% endfor %}", text="a")
    assert "template uses a variable with no value: 'topic' is undefined" in (r.error or "")
    assert "available: text" in (r.error or "")
    r = render(bounded, registry, "ok\n{% for %}")
    assert "template syntax error on line 2" in (r.error or "")


def test_a_cancelled_render_stops_its_worker(bounded: Engine, registry: Registry) -> None:
    b = GraphBuilder(registry)
    tpl = b.add(
        "core/template",
        template="{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    )
    out = b.add("core/output", name="out")
    b.link(tpl, "text", out, "value")

    async def go() -> float:
        task = asyncio.ensure_future(bounded.run(b.build(), {}))
        await asyncio.sleep(0.4)
        t0 = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    assert asyncio.run(go()) < 0.5
