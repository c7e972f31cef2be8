"""The node base class and its declaration helpers.

A node is declared once: a stable type id and a semantic version in :class:`NodeMeta`,
an ``Inputs`` pydantic model whose fields are :func:`Port` (a wired socket) or
:func:`Param` (a widget value that may also be wired), an ``Outputs`` pydantic model,
and ``async def run(self, ctx, inputs) -> Outputs``. Everything else — canvas widgets,
validation, the HTTP schema, the catalogue — is derived from those models by
:func:`describe`. The style follows InvokeAI's invocations and ComfyUI V3's typed I/O.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.fields import FieldInfo

from flowbuilder.files import fingerprint_path
from flowbuilder.types import port_type_of

if TYPE_CHECKING:
    from flowbuilder.context import RunContext

PORT = "port"
PARAM = "param"


class NodeMeta(BaseModel):
    """What a node type is, beyond its ports.

    ``deterministic`` is False for nodes whose outputs may differ between two runs with
    the same inputs (clock, network, side effects); they are never served from the cache.
    ``heavy`` marks model work that is bounded by the per-device limit.
    ``retries`` is how many times a :class:`~flowbuilder.errors.RetryableError` is
    retried, with exponential back-off and jitter.

    Scale-out hints, read by the Ray executor (:mod:`flowbuilder.executors.ray`) and
    ignored in process:

    - ``num_cpus``: CPU cores one execution reserves. ``None`` means the executor's
      default: 1 for a node run as a Ray task, none for the long-lived actor that runs a
      ``heavy`` node (an actor holding cores for its whole life would starve every other
      node on a small cluster).
    - ``num_gpus``: GPUs one execution (or a heavy node's actor) reserves; 0 by default.
    - ``memory_mb``: memory in MB Ray reserves for it; ``None`` reserves none.
    - ``idempotent``: running the node again after its worker died mid-run is safe (no
      side effect happens twice in a way that matters). Such a node is re-run, up to
      ``max(1, retries)`` times, when its Ray worker is lost; any other node fails with
      a "worker lost" error. Defaults to ``deterministic``: a node whose outputs depend
      only on its inputs is one the cache already treats as re-runnable.
    """

    model_config = ConfigDict(frozen=True)

    type: str = Field(pattern=r"^[a-z0-9_]+/[a-z0-9_]+$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    category: str
    title: str = ""
    deterministic: bool = True
    heavy: bool = False
    retries: int = 0
    timeout_s: float | None = None
    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_mb: int | None = Field(None, ge=0)
    idempotent: bool = False

    @model_validator(mode="before")
    @classmethod
    def _idempotent_default(cls, data: Any) -> Any:
        """``idempotent`` defaults to the value of ``deterministic`` (itself True)."""
        if isinstance(data, dict) and "idempotent" not in data:
            data = {**data, "idempotent": data.get("deterministic", True)}
        return data


def Port(default: Any = ..., *, description: str = "", **extra: Any) -> Any:
    """Declare a wired input (a socket on the canvas). Required unless a default is given."""
    return Field(default, description=description, json_schema_extra={"fb": PORT, **extra})


def Param(
    default: Any = ...,
    *,
    description: str = "",
    widget: str | None = None,
    hidden: bool = False,
    ge: float | None = None,
    le: float | None = None,
    multiple_of: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    **extra: Any,
) -> Any:
    """Declare a parameter: a widget value kept by name in the node's ``properties``.

    ``widget`` overrides the widget the canvas picks from the type (``textarea``,
    ``file``, ``model``); ``hidden`` keeps it out of the canvas (set by the engine).
    Numeric bounds (``ge``/``le``) become the widget's min/max and are validated.
    """
    hints: dict[str, Any] = {"fb": PARAM, **extra}
    if widget:
        hints["widget"] = widget
    if hidden:
        hints["hidden"] = True
    return Field(
        default,
        description=description,
        json_schema_extra=hints,
        ge=ge,
        le=le,
        multiple_of=multiple_of,
        min_length=min_length,
        max_length=max_length,
        pattern=pattern,
    )


def file_fingerprint(path: Any) -> str | None:
    """A file's modification time (ns) and size as a cache fingerprint, or None when
    ``path`` names no readable file — for nodes that read a file named by a parameter,
    so editing the file re-runs them (see :meth:`Node.fingerprint`). The path resolves as
    the file-access policy resolves it (:func:`flowbuilder.files.fingerprint_path`)."""
    real = fingerprint_path(path)
    try:
        stat = real.stat() if real is not None else None
    except OSError:
        return None
    if stat is None:
        return None
    return f"{stat.st_mtime_ns}:{stat.st_size}"


def field_kind(info: FieldInfo) -> str:
    """``port`` or ``param`` for a field of an ``Inputs`` model (undeclared fields are params)."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and extra.get("fb") == PORT:
        return PORT
    return PARAM


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input of a node type, as the engine sees it."""

    name: str
    kind: str  # PORT or PARAM
    type: str  # port type string
    required: bool
    default: Any
    info: FieldInfo

    def adapter(self) -> TypeAdapter[Any]:
        """A validator for a single value of this input (with its constraints)."""
        return _field_adapter(self.info)


_ADAPTERS: dict[int, TypeAdapter[Any]] = {}


def _field_adapter(info: FieldInfo) -> TypeAdapter[Any]:
    key = id(info)
    adapter = _ADAPTERS.get(key)
    if adapter is None:
        bare = FieldInfo.merge_field_infos(info, default=...)
        adapter = TypeAdapter(Annotated[info.annotation, bare])  # type: ignore[arg-type]
        _ADAPTERS[key] = adapter
    return adapter


class Node:
    """Base class of every node type.

    Subclasses set ``meta`` and define nested ``Inputs`` and ``Outputs`` pydantic models
    and an async ``run``. Nodes keep no state between runs: every service (artifacts,
    models, progress, cancellation) comes through the :class:`RunContext`.
    """

    meta: ClassVar[NodeMeta]
    role: ClassVar[str | None] = None
    """``"input"`` or ``"output"`` for the nodes that make a flow's signature."""

    class Inputs(BaseModel):
        pass

    class Outputs(BaseModel):
        pass

    async def run(self, ctx: RunContext, inputs: Any) -> BaseModel:
        raise NotImplementedError

    # ---- derived descriptions, cached per class -------------------------------------

    @classmethod
    def input_specs(cls) -> dict[str, InputSpec]:
        """Inputs by name, in declaration order (ports and params)."""
        cached = cls.__dict__.get("_input_specs")
        if cached is None:
            cached = {}
            for name, info in cls.Inputs.model_fields.items():
                cached[name] = InputSpec(
                    name=name,
                    kind=field_kind(info),
                    type=port_type_of(info.annotation),
                    required=info.is_required(),
                    default=None if info.is_required() else info.get_default(),
                    info=info,
                )
            cls._input_specs = cached  # type: ignore[attr-defined]
        return cached

    @classmethod
    def output_types(cls) -> dict[str, str]:
        """Output port types by name, in declaration order."""
        cached = cls.__dict__.get("_output_types")
        if cached is None:
            cached = {n: port_type_of(f.annotation) for n, f in cls.Outputs.model_fields.items()}
            cls._output_types = cached  # type: ignore[attr-defined]
        return cached

    @classmethod
    def fingerprint(cls, params: dict[str, Any]) -> str | None:
        """Extra content for the cache key, for nodes that read the outside world.

        A Load File node returns the file's modification time and size, so an edited
        file re-runs it (ComfyUI V3's ``fingerprint_inputs``). The default adds nothing.
        """
        return None

    @classmethod
    def resolve_types(cls, params: dict[str, Any]) -> dict[str, str]:
        """Port types that depend on parameter values (e.g. an Input node's ``type``).

        Returns overrides by port name; the default has none.
        """
        return {}

    @classmethod
    def is_heavy(cls, inputs: Any) -> bool:
        """Whether this execution (with these validated ``inputs``) is model work bounded
        by the per-device limit. Defaults to ``meta.heavy``; the LLM node says False for
        remote providers, so API calls run side by side."""
        return cls.meta.heavy

    @classmethod
    def _dynamic_types(cls, params: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, str]]]:
        """For each choice parameter that changes port types: value → {port: type}."""
        if cls.resolve_types.__func__ is Node.resolve_types.__func__:  # type: ignore[attr-defined]
            return {}
        defaults = {p["name"]: p["default"] for p in params}
        dynamic: dict[str, dict[str, dict[str, str]]] = {}
        for param in params:
            choices = param["schema"].get("enum")
            if not choices:
                continue
            by_value = {str(v): cls.resolve_types({**defaults, param["name"]: v}) for v in choices}
            if len({tuple(sorted(m.items())) for m in by_value.values()}) > 1:
                dynamic[param["name"]] = by_value
        return dynamic

    @classmethod
    def description(cls) -> str:
        """The first paragraph of the class docstring, for tooltips and the catalogue."""
        doc = inspect.getdoc(cls) or ""
        return doc.split("\n\n", 1)[0].replace("\n", " ").strip()

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The catalogue entry: type, version, category, ports, params with JSON Schema.

        Shape::

            {"type": "audio/transcribe", "version": "1.0.0", "category": "Audio",
             "title": "...", "description": "...", "deterministic": true,
             "inputs": [{"name", "type", "required", "description"}],
             "params": [{"name", "type", "required", "default", "schema"}],
             "outputs": [{"name", "type"}]}
        """
        schema = cls.Inputs.model_json_schema()
        props = schema.get("properties", {})
        ports, params = [], []
        for spec in cls.input_specs().values():
            entry: dict[str, Any] = {
                "name": spec.name,
                "type": spec.type,
                "required": spec.required,
                "description": spec.info.description or "",
            }
            if spec.kind == PORT:
                ports.append(entry)
            else:
                field_schema = dict(props.get(spec.name, {}))
                field_schema.pop("fb", None)
                entry["default"] = (
                    spec.default
                    if not isinstance(spec.default, BaseModel)
                    else (spec.default.model_dump())
                )
                entry["schema"] = field_schema
                params.append(entry)
        return {
            "dynamic": cls._dynamic_types(params),
            "type": cls.meta.type,
            "version": cls.meta.version,
            "category": cls.meta.category,
            "title": cls.meta.title or cls.__name__,
            "description": cls.description(),
            "deterministic": cls.meta.deterministic,
            "inputs": ports,
            "params": params,
            "outputs": [{"name": n, "type": t} for n, t in cls.output_types().items()],
            "defs": schema.get("$defs", {}),
        }
