"""Bounds on the JSON a request may send and on the size of a graph.

:func:`parse_json` decodes request JSON and :func:`check_json` checks decoded data: at
most ``max_json_depth`` nested arrays/objects, strings (keys too) of at most
``max_string_chars`` characters, only text that can be written back out (no lone
surrogate such as ``"\\ud800"``: such a value would be stored, then fail on every read),
and only standard JSON numbers (no ``NaN``/``Infinity``, no float that overflows to
infinity). :func:`check_graph_size` bounds a graph's nodes and links. The limits come
from :class:`~flowbuilder.settings.Settings` (see :meth:`Limits.from_settings`).

Each refusal is a :class:`LimitExceeded` naming where (a location such as
``("graph", "nodes", 3, "properties", "text")``), what and, for a limit, its setting.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from flowbuilder.errors import FlowbuilderError
from flowbuilder.settings import Settings

Loc = tuple[str | int, ...]


class LimitExceeded(FlowbuilderError):
    """A value that is larger, deeper or stranger than the server accepts.

    ``loc`` is where in the JSON (keys and list indexes, outermost first), ``setting``
    the environment variable of the limit it broke (None for a value that is simply not
    acceptable, such as a lone surrogate), ``reason`` the sentence without the place
    (ending with the setting's name, when there is one).
    """

    def __init__(self, reason: str, *, loc: Loc = (), setting: str | None = None) -> None:
        if setting:
            reason = f"{reason} ({setting})"
        self.reason, self.loc, self.setting = reason, loc, setting
        where = describe(loc)
        super().__init__(f"{where}: {reason}" if where else reason)


def describe(loc: Loc, most: int = 10) -> str:
    """``("graph", "nodes", 3, "id")`` → ``graph.nodes[3].id``; a location more than
    ``most`` parts deep is cut after its first ``most`` parts (``…``)."""
    text = ""
    for part in loc[:most]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text + ("…" if len(loc) > most else "")


@dataclass(frozen=True, slots=True)
class Limits:
    """The request limits of one server (see the module docstring)."""

    max_json_depth: int = 64
    max_string_chars: int = 1_000_000
    max_graph_nodes: int = 2_000
    max_graph_links: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_json_depth=settings.max_json_depth,
            max_string_chars=settings.max_string_chars,
            max_graph_nodes=settings.max_graph_nodes,
            max_graph_links=settings.max_graph_links,
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str | bytes, limits: Limits, loc: Loc = ()) -> Any:
    """Decode JSON text and check it with :func:`check_json`.

    Raises:
        json.JSONDecodeError: the text is not JSON (position and message as usual).
        LimitExceeded: the JSON nests too deeply, has a string that is too long, a lone
            surrogate, ``NaN``/``Infinity``, or an integer with too many digits.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:  # deeper than Python's own limit, so far deeper than ours
        raise _too_deep(loc, limits) from None
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise LimitExceeded(f"the body is not UTF-8 text ({exc.reason})", loc=loc) from None
    except ValueError as exc:  # NaN, Infinity, an integer beyond Python's digit limit
        reason = str(exc)
        if "integer string conversion" in reason:
            reason = f"an integer has more than {sys.get_int_max_str_digits()} digits"
        raise LimitExceeded(f"not standard JSON: {reason}", loc=loc) from None
    check_json(value, limits, loc)
    return value


def _too_deep(loc: Loc, limits: Limits) -> LimitExceeded:
    return LimitExceeded(
        f"JSON nested deeper than the limit of {limits.max_json_depth} levels",
        loc=loc,
        setting="FLOWBUILDER_MAX_JSON_DEPTH",
    )


def check_json(value: Any, limits: Limits, loc: Loc = ()) -> None:
    """Check decoded JSON data against ``limits`` (see the module docstring); walks the
    data once, without recursion, so any depth is safe to check.

    Raises:
        LimitExceeded: for the first problem found, with its location.
    """
    stack: list[tuple[Any, int, Loc]] = [(value, 0, loc)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            _check_text(item, limits, where)
        elif isinstance(item, dict | list):
            if depth >= limits.max_json_depth:
                raise _too_deep(where, limits)
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key, limits, (*where, key))
                    stack.append((child, depth + 1, (*where, key)))
            else:
                stack.extend((child, depth + 1, (*where, i)) for i, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise LimitExceeded(f"the number {item} is not a finite JSON number", loc=where)


def _check_text(text: str, limits: Limits, loc: Loc) -> None:
    if len(text) > limits.max_string_chars:
        raise LimitExceeded(
            f"a string of {len(text):,} characters is longer than the limit of "
            f"{limits.max_string_chars:,} characters",
            loc=loc,
            setting="FLOWBUILDER_MAX_STRING_CHARS",
        )
    where = lone_surrogate(text)
    if where is not None:
        raise LimitExceeded(
            f"the text has a lone surrogate ({where}), which is not Unicode text and could "
            "not be read back",
            loc=loc,
        )


def lone_surrogate(text: str) -> str | None:
    """Where ``text`` has a lone surrogate (``"U+D800 at character 3"``), or None when it
    is Unicode text (UTF-8 can write it)."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"U+{ord(text[exc.start]):04X} at character {exc.start}"
    return None


def check_graph_size(data: Any, limits: Limits, loc: Loc = ()) -> None:
    """Refuse graph JSON with more nodes or links than ``limits`` allow (checked on the
    raw lists, before any node is parsed; anything else is left to the graph parser).

    Raises:
        LimitExceeded: naming the count and the limit.
    """
    if not isinstance(data, dict):
        return
    for key, limit, setting in (
        ("nodes", limits.max_graph_nodes, "FLOWBUILDER_MAX_GRAPH_NODES"),
        ("links", limits.max_graph_links, "FLOWBUILDER_MAX_GRAPH_LINKS"),
    ):
        items = data.get(key)
        if isinstance(items, list) and len(items) > limit:
            raise LimitExceeded(
                f"the graph has {len(items):,} {key}; the limit is {limit:,}",
                loc=(*loc, key),
                setting=setting,
            )


def check_graph(data: Any, limits: Limits, loc: Loc = ()) -> None:
    """:func:`check_graph_size` then :func:`check_json`: what every graph a user saves
    must pass before it is stored.

    Raises:
        LimitExceeded: for the first problem found.
    """
    check_graph_size(data, limits, loc)
    check_json(data, limits, loc)
