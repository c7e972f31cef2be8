"""Port types, their compatibility rules, and references to heavy values.

A port type is a short string shown on the canvas and in the catalogue:

- scalars: ``text``, ``integer``, ``number``, ``boolean``
- ``json`` — any JSON value (object, array, string, number, boolean, null)
- ``any`` — accepts every value
- ``list[T]`` — a list of values of type ``T`` (``list[text]``, ``list[json]``, …)
- references to artifacts: ``audio``, ``image``, ``document``, ``dataset``, ``model``,
  and ``file`` for an artifact of any kind

Compatibility (:func:`compatible`) lives only here. Allowed without conversion:
the same type; ``integer`` → ``number``; anything → ``any``; ``any`` → anything (the
value is then checked when the node runs, since its type is only known then); scalars,
``json`` lists and ``list[...]`` → ``json`` (every such value *is* JSON); any reference
type → ``file``; ``list[A]`` → ``list[B]`` when ``A`` → ``B``. Nothing else is coerced.
"""

from __future__ import annotations

import types as pytypes
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

ARTIFACT_KINDS = ("audio", "image", "document", "dataset", "model")
SCALAR_TYPES = ("text", "integer", "number", "boolean")
BASE_TYPES = (*SCALAR_TYPES, "json", "any", "file", *ARTIFACT_KINDS)


class ArtifactRef(BaseModel):
    """A small, immutable reference to a content-addressed file in the artifact store.

    ``id`` is the SHA-256 of the file's bytes (64 hex characters), so two refs with the
    same id always name the same content; ``size`` is in bytes.
    """

    model_config = ConfigDict(frozen=True)

    kind: str = "file"
    id: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the content")
    name: str = Field("", description="original file name, for display and downloads")
    mime: str = "application/octet-stream"
    size: int = Field(0, ge=0, description="bytes")


class AudioRef(ArtifactRef):
    """Reference to an audio file (any format PyAV/ffmpeg decodes)."""

    kind: Literal["audio"] = "audio"


class ImageRef(ArtifactRef):
    """Reference to an image file (PNG, JPEG, WebP, …)."""

    kind: Literal["image"] = "image"


class DocumentRef(ArtifactRef):
    """Reference to a document (text, Markdown, reStructuredText, HTML, PDF, …)."""

    kind: Literal["document"] = "document"


class DatasetRef(ArtifactRef):
    """Reference to a dataset file (jsonl, json, csv, parquet)."""

    kind: Literal["dataset"] = "dataset"


class ModelRef(ArtifactRef):
    """Reference to a model file or an archived model directory."""

    kind: Literal["model"] = "model"


REF_CLASSES: dict[str, type[ArtifactRef]] = {
    "file": ArtifactRef,
    "audio": AudioRef,
    "image": ImageRef,
    "document": DocumentRef,
    "dataset": DatasetRef,
    "model": ModelRef,
}

_PY_FOR_SCALAR: dict[str, Any] = {"text": str, "integer": int, "number": float, "boolean": bool}


class PortTypeError(ValueError):
    """A port type string or annotation that flowbuilder does not know."""


def parse_list(port_type: str) -> str | None:
    """Return ``T`` for ``list[T]``, else ``None``."""
    if port_type.startswith("list[") and port_type.endswith("]"):
        return port_type[5:-1]
    return None


def is_known(port_type: str) -> bool:
    """True for every type this module can name (``list[...]`` nests)."""
    inner = parse_list(port_type)
    return is_known(inner) if inner is not None else port_type in BASE_TYPES


def compatible(source: str, target: str) -> bool:
    """Whether an output of type ``source`` may be linked into an input of type ``target``.

    >>> compatible("integer", "number"), compatible("number", "integer")
    (True, False)
    """
    if source == target or target == "any" or source == "any":
        return True
    if source == "integer" and target == "number":
        return True
    if target == "json":
        return source in (*SCALAR_TYPES, "json") or parse_list(source) is not None
    if target == "file":
        return source in ARTIFACT_KINDS
    src_item, dst_item = parse_list(source), parse_list(target)
    if src_item is not None and dst_item is not None:
        return compatible(src_item, dst_item)
    return False


def why_incompatible(source: str, target: str) -> str:
    """A sentence explaining a refused link, for validation messages and the canvas."""
    hint = ""
    if source == "text" and target in ("json", "integer", "number"):
        hint = " Use a 'JSON parse' node to turn text into a value."
    elif source == "json" and target != "json":
        hint = " Use a 'JSON get' node to pick a value out of it."
    return f"an output of type '{source}' cannot feed an input of type '{target}'.{hint}"


def python_type(port_type: str) -> Any:
    """The Python type that values of ``port_type`` have at run time."""
    inner = parse_list(port_type)
    if inner is not None:
        return list[python_type(inner)]  # type: ignore[misc]
    if port_type in _PY_FOR_SCALAR:
        return _PY_FOR_SCALAR[port_type]
    if port_type in REF_CLASSES:
        return REF_CLASSES[port_type]
    if port_type in ("json", "any"):
        return Any
    raise PortTypeError(f"unknown port type '{port_type}'")


def port_type_of(annotation: Any) -> str:
    """Map a field annotation to its port type string.

    ``str`` → text, ``int`` → integer, ``float`` → number, ``bool`` → boolean,
    ``dict``/``JSONValue`` → json, ``Any``/``object`` → any, ``list[X]`` → ``list[...]``,
    an :class:`ArtifactRef` subclass → its kind. ``X | None`` maps like ``X``.
    A ``Literal[...]`` of strings maps to text.

    Raises:
        PortTypeError: for annotations with no port type (e.g. ``set[int]``).
    """
    if annotation is Any or annotation is object:
        return "any"
    if annotation is JSONValue:
        return "json"
    origin = get_origin(annotation)
    if origin in (Union, pytypes.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return port_type_of(members[0])
        if all(a in (int, float) for a in members):
            return "number"
        return "json"
    if origin is typing.Annotated:
        return port_type_of(get_args(annotation)[0])
    if origin is Literal:
        values = get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return "text"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "integer"
        return "json"
    if origin in (list, tuple) or annotation in (list, tuple):
        args = get_args(annotation)
        return f"list[{port_type_of(args[0])}]" if args else "list[any]"
    if origin is dict or annotation is dict:
        return "json"
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return "boolean"
        if issubclass(annotation, int):
            return "integer"
        if issubclass(annotation, float):
            return "number"
        if issubclass(annotation, str):
            return "text"
        if issubclass(annotation, ArtifactRef):
            field = annotation.model_fields["kind"]
            return str(field.default)
        if issubclass(annotation, BaseModel):
            return "json"
    raise PortTypeError(f"no port type for annotation {annotation!r}")


# A JSON value. Used as an annotation marker for ``json`` ports.
JSONValue = Union[dict[str, Any], list[Any], str, int, float, bool, None]  # noqa: UP007


def to_jsonable(value: Any) -> Any:
    """Values as plain JSON data (artifact refs and other models become dicts)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def summarise(value: Any, *, max_text: int = 2000, max_items: int = 50) -> Any:
    """A small JSON version of a value for events and previews.

    Text longer than ``max_text`` characters is cut (with "…"); lists keep their first
    ``max_items`` items (a final string says how many more there were).
    """
    if isinstance(value, str):
        return value if len(value) <= max_text else value[:max_text] + "…"
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: summarise(v, max_text=500, max_items=20) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        items = [summarise(v, max_text=500, max_items=20) for v in value[:max_items]]
        if len(value) > max_items:
            items.append(f"… {len(value) - max_items} more")
        return items
    return value
