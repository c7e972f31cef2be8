"""Structured output: a JSON Schema in, validated JSON out, one retry on a bad answer.

Works with every chat provider. The request asks for JSON in the system prompt and sets
``json_mode``/``json_schema`` so providers with a native JSON mode use it (OpenAI's
``response_format``, a llama.cpp grammar). The answer is parsed leniently (code fences
and text around one JSON value are dropped) and checked against the schema; when it
fails, the model sees its answer and the problem once, and answers again.

The validator covers the JSON Schema keywords that structured-output APIs accept (the
subset OpenAI documents for ``strict`` schemas, plus a few common ones): ``type``,
``enum``, ``const``, ``properties``, ``required``, ``additionalProperties``, ``items``,
``prefixItems``, ``minItems``/``maxItems``, ``uniqueItems``, ``minLength``/``maxLength``,
``pattern``, ``minimum``/``maximum`` (and exclusive), ``multipleOf``, ``anyOf``,
``oneOf``, ``allOf``, ``not`` and local ``$ref`` (``#/$defs/…``). Other keywords
(``format``, ``description``, …) are accepted and not checked.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowbuilder.errors import NodeError

if TYPE_CHECKING:
    from flowbuilder.providers import ChatProvider, ChatRequest, ChatResult, TokenCallback
    from flowbuilder.providers.call import ProviderContext

MAX_ERRORS = 5


class InvalidAnswer(ValueError):
    """A model's answer that is not JSON, or not JSON matching the schema."""


@dataclass
class StructuredResult:
    """The final answer, its parsed value, and how many calls it took (1 or 2)."""

    result: ChatResult
    value: Any
    attempts: int


# ---- parsing -----------------------------------------------------------------------

_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)


def parse_json_answer(text: str) -> Any:
    """The JSON value in a model's answer.

    Accepts bare JSON, JSON in a Markdown code fence, or one JSON object/array with
    text around it. Raises :class:`InvalidAnswer` (with the parser's reason) otherwise.
    """
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    if not stripped:
        raise InvalidAnswer("the answer is empty")
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        first_error = exc
    decoder = json.JSONDecoder()
    for i, ch in enumerate(stripped):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(stripped, i)
                return value
            except json.JSONDecodeError:
                continue
    raise InvalidAnswer(
        f"not JSON ({first_error.msg} at line {first_error.lineno}, column {first_error.colno})"
    )


# ---- validation --------------------------------------------------------------------

_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float)
    return False


def check_schema(schema: Any) -> None:
    """Raise :class:`NodeError` when ``schema`` is not a usable JSON Schema object."""
    if not isinstance(schema, dict):
        raise NodeError('the JSON schema must be an object, like {"type": "object", …}')

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            kinds = node.get("type")
            for kind in kinds if isinstance(kinds, list) else [kinds]:
                if kind is not None and kind not in _TYPES:
                    raise NodeError(
                        f"the JSON schema has an unknown type '{kind}' at {where or '/'} "
                        f"(use one of {', '.join(_TYPES)})"
                    )
            for key, sub in node.items():
                if key in ("enum", "const", "default", "examples"):
                    continue
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}/{i}")

    walk(schema, "")


def validate_json(value: Any, schema: dict[str, Any]) -> list[str]:
    """Problems of ``value`` against ``schema``, each naming where (``/items/0/name``).

    Returns an empty list when it matches. See the module docstring for the keywords.
    """
    errors: list[str] = []
    _validate(value, schema, "", schema, errors)
    return errors[:MAX_ERRORS]


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#"):
        raise NodeError(f"the JSON schema refers to '{ref}': only local $ref (#/…) works")
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise NodeError(f"the JSON schema's $ref '{ref}' points nowhere")
        node = node[part]
    if not isinstance(node, dict):
        raise NodeError(f"the JSON schema's $ref '{ref}' is not a schema")
    return node


def _validate(value: Any, schema: Any, path: str, root: dict[str, Any], errors: list[str]) -> None:
    if len(errors) >= MAX_ERRORS or schema is True or not isinstance(schema, dict):
        return
    where = path or "the answer"
    if "$ref" in schema:
        _validate(value, _resolve_ref(schema["$ref"], root), path, root, errors)
    kinds = schema.get("type")
    if kinds is not None:
        options = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is_type(value, k) for k in options):
            errors.append(f"{where} should be {' or '.join(options)}, not {_kind_of(value)}")
            return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        errors.append(f"{where} should be one of {allowed}, not {json.dumps(value)}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where} should be {json.dumps(schema['const'])}")
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            results = []
            for sub in schema[key]:
                sub_errors: list[str] = []
                _validate(value, sub, path, root, sub_errors)
                results.append(sub_errors)
            passed = sum(1 for r in results if not r)
            if key == "allOf":
                for r in results:
                    errors.extend(r)
            elif key == "anyOf" and results and passed == 0:
                errors.append(f"{where} matches none of the allowed shapes ({results[0][0]})")
            elif key == "oneOf" and passed != 1:
                errors.append(f"{where} should match exactly one allowed shape, matches {passed}")
    if "not" in schema:
        sub_errors = []
        _validate(value, schema["not"], path, root, sub_errors)
        if not sub_errors:
            errors.append(f"{where} matches a shape it must not")
    if isinstance(value, dict):
        _validate_object(value, schema, path, root, errors)
    elif isinstance(value, list):
        _validate_array(value, schema, path, root, errors)
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where} should have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where} should have at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where} should match the pattern {schema['pattern']}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(value, schema, where, errors)


def _validate_object(
    value: dict[str, Any],
    schema: dict[str, Any],
    path: str,
    root: dict[str, Any],
    errors: list[str],
) -> None:
    where = path or "the answer"
    props = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(f"{where} is missing the required key '{name}'")
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in props:
            _validate(item, props[key], f"{path}/{key}", root, errors)
        elif extra is False:
            errors.append(f"{where} has the key '{key}', which the schema does not allow")
        elif isinstance(extra, dict):
            _validate(item, extra, f"{path}/{key}", root, errors)


def _validate_array(
    value: list[Any], schema: dict[str, Any], path: str, root: dict[str, Any], errors: list[str]
) -> None:
    where = path or "the answer"
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{where} should have at least {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{where} should have at most {schema['maxItems']} items")
    if schema.get("uniqueItems"):
        seen = [json.dumps(v, sort_keys=True) for v in value]
        if len(set(seen)) != len(seen):
            errors.append(f"{where} should not repeat items")
    prefix = schema.get("prefixItems") or []
    for i, item in enumerate(value):
        if i < len(prefix):
            _validate(item, prefix[i], f"{path}/{i}", root, errors)
        elif "items" in schema:
            _validate(item, schema["items"], f"{path}/{i}", root, errors)


def _validate_number(value: float, schema: dict[str, Any], where: str, errors: list[str]) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where} should be at least {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{where} should be at most {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{where} should be more than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"{where} should be less than {schema['exclusiveMaximum']}")
    step = schema.get("multipleOf")
    if step and not math.isclose(value / step, round(value / step), abs_tol=1e-9):
        errors.append(f"{where} should be a multiple of {step}")


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def check_answer(text: str, schema: dict[str, Any] | None) -> Any:
    """Parse and validate an answer; raise :class:`InvalidAnswer` saying what is wrong."""
    value = parse_json_answer(text)
    if schema is None:
        if not isinstance(value, dict | list):
            raise InvalidAnswer(f"expected a JSON object, got {_kind_of(value)}")
        return value
    problems = validate_json(value, schema)
    if problems:
        raise InvalidAnswer("; ".join(problems))
    return value


# ---- the call ----------------------------------------------------------------------


def instruction(schema: dict[str, Any] | None) -> str:
    """The system-prompt sentence that asks for JSON (and shows the schema)."""
    if schema is None:
        return "Reply with only a JSON object, no other text."
    return (
        "Reply with only a JSON value, no other text. It must match this JSON Schema:\n"
        + json.dumps(schema, ensure_ascii=False)
    )


def _with_instruction(request: ChatRequest) -> ChatRequest:
    from flowbuilder.providers import ChatMessage

    note = instruction(request.json_schema)
    messages = list(request.messages)
    if messages and messages[0].role == "system":
        messages[0] = ChatMessage(role="system", content=f"{messages[0].content}\n\n{note}")
    else:
        messages.insert(0, ChatMessage(role="system", content=note))
    return request.model_copy(update={"messages": messages, "json_mode": True})


async def chat_structured(
    provider: ChatProvider,
    ctx: ProviderContext,
    model: str,
    request: ChatRequest,
    on_token: TokenCallback | None = None,
    *,
    model_id: str | None = None,
) -> StructuredResult:
    """Chat for a JSON answer matching ``request.json_schema`` (or any JSON object when
    only ``json_mode`` is set), with one retry when the answer does not parse or match.

    Usage counts add up over both calls. Raises :class:`NodeError` naming the model and
    the last problem when the retry fails too (and whatever ``provider.chat`` raises).
    """
    from flowbuilder.providers import ChatMessage

    schema = request.json_schema
    if schema is not None:
        check_schema(schema)
    req = _with_instruction(request)
    result = await provider.chat(ctx, model, req, on_token)
    try:
        return StructuredResult(result, check_answer(result.text, schema), 1)
    except InvalidAnswer as exc:
        problem = str(exc)
    ctx.log.info("answer was not valid JSON (%s); asking once more", problem)
    retry = req.model_copy(
        update={
            "messages": [
                *req.messages,
                ChatMessage(role="assistant", content=result.text),
                ChatMessage(
                    role="user",
                    content=f"That reply is not valid: {problem}. Reply again with only the "
                    "corrected JSON.",
                ),
            ]
        }
    )
    second = await provider.chat(ctx, model, retry, on_token)
    total = second.model_copy(update={"usage": result.usage + second.usage})
    try:
        return StructuredResult(total, check_answer(second.text, schema), 2)
    except InvalidAnswer as exc:
        what = "JSON matching the schema" if schema is not None else "a JSON object"
        raise NodeError(
            f"model '{model_id or f'{provider.name}:{model}'}' did not return {what} after "
            f"one retry: {exc}. Try a larger model, a simpler schema or a lower temperature"
        ) from None
