"""The Template node's Jinja2 sandbox, and the worker process that renders in it.

:class:`BoundedEnvironment` is Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment`
(no attribute access to internals such as ``''.__class__``, ``range`` of at most
100,000 items) that also refuses ``*`` and ``**`` whose result would be larger than the
output limit (``'x' * 10**9``, ``9 ** 9 ** 9``) before computing it.
:func:`render_bounded` streams a render with ``generate()`` and stops as soon as the
output passes its limit.

Run as a script (``python -I sandbox.py MEMORY_MB``), this file is a render worker: it
caps its own address space (``RLIMIT_AS``) and, per render, its CPU time
(``RLIMIT_CPU``) and wall time (``SIGALRM``), then answers render requests on stdin/stdout
until stdin closes. Messages both ways are a 4-byte big-endian length and UTF-8 JSON:
a request ``{"template", "vars", "max_chars", "timeout_s"}``, an answer ``{"text"}`` or
``{"error": kind, "message"}`` with kind one of :data:`ERROR_KINDS`. The parent (see
:mod:`nodes.core.render`) kills a worker that overruns, which bounds what the sandbox
alone cannot (a memory or CPU bomb inside one C call). This file imports only the
standard library and jinja2, so the worker starts in tens of milliseconds.
"""

from __future__ import annotations

import functools
import json
import math
import signal
import sys
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

INT_BITS = 14_300
"""The largest integer ``*``/``**`` may make, in bits: about 4,300 decimal digits, the
longest integer Python itself turns into text (``sys.get_int_max_str_digits``)."""
ERROR_KINDS = ("undefined", "syntax", "security", "too_long", "too_slow", "memory", "error")


class TemplateTooLarge(jinja2.TemplateError):
    """The render (or one value in it) would pass the output limit."""


class RenderTimeout(Exception):
    """The render took longer than its time limit (raised by the worker's alarm)."""


class BoundedEnvironment(SandboxedEnvironment):
    """A sandbox whose ``*`` and ``**`` refuse results beyond ``max_chars`` items (or
    beyond :data:`INT_BITS` bits for integers), raising :class:`TemplateTooLarge`."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, max_chars: int) -> None:
        super().__init__(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
        self.max_chars = max_chars

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            self._check_product(left, right)
        elif operator == "**":
            self._check_power(left, right)
        return super().call_binop(context, operator, left, right)

    def _check_product(self, left: Any, right: Any) -> None:
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                size = len(seq) * times
                if size > self.max_chars:
                    raise TemplateTooLarge(
                        f"'*' would make a value of {size:,} items; the limit is {self.max_chars:,}"
                    )
                return
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > INT_BITS
        ):
            raise TemplateTooLarge(f"'*' would make an integer of more than {INT_BITS:,} bits")

    def _check_power(self, base: Any, exponent: Any) -> None:
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
            bits = exponent * math.log2(abs(base))
            if bits > INT_BITS:
                raise TemplateTooLarge(
                    f"'**' would make an integer of about {bits:,.0f} bits; the limit is "
                    f"{INT_BITS:,}"
                )


@functools.lru_cache(maxsize=8)
def environment(max_chars: int) -> BoundedEnvironment:
    """The environment for an output limit (one per limit, shared)."""
    return BoundedEnvironment(max_chars)


@functools.lru_cache(maxsize=256)
def compiled(source: str, max_chars: int) -> jinja2.Template:
    """A template compiled once per (source, limit). Raises: TemplateSyntaxError."""
    return environment(max_chars).from_string(source)


def render_bounded(template: jinja2.Template, variables: dict[str, Any], max_chars: int) -> str:
    """Render, counting the output as it streams; stop past ``max_chars`` characters.

    Raises:
        TemplateTooLarge: the output (or a ``*``/``**`` value) passes the limit.
        jinja2.UndefinedError, jinja2.exceptions.SecurityError: from the template.
    """
    parts: list[str] = []
    total = 0
    for chunk in template.generate(variables):
        total += len(chunk)
        if total > max_chars:
            raise TemplateTooLarge(
                f"the output is longer than the limit of {max_chars:,} characters"
            )
        parts.append(chunk)
    return "".join(parts)


def answer_for(exc: BaseException) -> dict[str, str]:
    """A worker answer (``{"error": kind, "message"}``) for an exception of a render."""
    if isinstance(exc, jinja2.UndefinedError):
        return {"error": "undefined", "message": exc.message or str(exc)}
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return {"error": "syntax", "message": f"line {exc.lineno}: {exc.message}"}
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return {"error": "security", "message": str(exc)}
    if isinstance(exc, TemplateTooLarge | OverflowError):
        return {"error": "too_long", "message": str(exc)}
    if isinstance(exc, RenderTimeout):
        return {"error": "too_slow", "message": str(exc)}
    if isinstance(exc, MemoryError):
        return {"error": "memory", "message": "out of memory"}
    if isinstance(exc, RecursionError):
        return {"error": "error", "message": "the template nests or recurses too deeply"}
    return {"error": "error", "message": f"{type(exc).__name__}: {exc}"}


# ---- the worker process ---------------------------------------------------------------


def _alarm(signum: int, frame: Any) -> None:
    raise RenderTimeout("the render took too long")


def _cpu_budget(seconds: float) -> None:
    """Let this process use ``seconds`` more CPU time (then the kernel stops it)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _serve_one(request: dict[str, Any]) -> dict[str, str]:
    max_chars = int(request["max_chars"])
    timeout = float(request["timeout_s"])
    _cpu_budget(timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        template = compiled(request["template"], max_chars)
        return {"text": render_bounded(template, request["vars"], max_chars)}
    except BaseException as exc:  # every failure is an answer; the parent decides
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return answer_for(exc)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main(argv: list[str]) -> None:
    """The worker loop (see the module docstring); ``argv[1]`` is the memory cap in MB."""
    import resource

    limit = int(argv[1]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return
        request = json.loads(stdin.read(int.from_bytes(header, "big")))
        answer = _serve_one(request)
        try:
            data = json.dumps(answer).encode("utf-8")
        except MemoryError:
            data = json.dumps(answer_for(MemoryError())).encode("utf-8")
        stdout.write(len(data).to_bytes(4, "big") + data)
        stdout.flush()
        if answer.get("error") in ("memory", "too_slow"):
            return  # its memory may be fragmented or a C call half done: start afresh


if __name__ == "__main__":
    main(sys.argv)
