"""The local model catalogue: bundled models and models under ``FLOWBUILDER_HOME/models``.

Each entry says how to use it (its model id), what it does (chat, embedding, speech),
its format, parameter count and size on disk. Parameter counts come from the files'
own headers without loading weights: GGUF tensor infos (a small reader of the GGUF v2/v3
header, per the spec in ggml's ``docs/gguf.md``; the ``gguf`` package is not a
dependency) and safetensors headers (8-byte length + JSON of tensor shapes).

Training nodes that save a model under ``FLOWBUILDER_HOME/models/<name>/`` (a Hugging
Face directory) or as ``<name>.gguf`` appear here as ``local:<name>``.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from flowbuilder.bundled import BUNDLED
from flowbuilder.errors import NodeError

Task = Literal["chat", "embedding", "speech"]
Source = Literal["bundled", "models-dir"]
MAX_DEPTH = 2


@dataclass
class ModelInfo:
    """One local model. ``id`` is what a node's ``model`` parameter takes."""

    id: str
    name: str
    task: Task
    format: str  # gguf | hf-safetensors | hf-pytorch | sentence-transformers | whisper-ct2
    parameters: int | None
    size_bytes: int
    path: str
    source: Source
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- headers -----------------------------------------------------------------------

_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _read(fh: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("the file ends inside its header")
    return struct.unpack(fmt, data)[0]


def _read_str(fh: BinaryIO) -> str:
    n = _read(fh, "<Q")
    if n > 1 << 24:
        raise ValueError("implausible string length")
    return fh.read(n).decode("utf-8", errors="replace")


def _read_value(fh: BinaryIO, vtype: int, keep: bool) -> Any:
    if vtype in _GGUF_SCALARS:
        return _read(fh, _GGUF_SCALARS[vtype])
    if vtype == _GGUF_STRING:
        return _read_str(fh)
    if vtype == _GGUF_ARRAY:
        etype, count = _read(fh, "<I"), _read(fh, "<Q")
        if etype in _GGUF_SCALARS and not keep:
            fh.seek(struct.calcsize(_GGUF_SCALARS[etype]) * count, 1)
            return count
        values = [_read_value(fh, etype, False) for _ in range(count)]
        return values if keep else count
    raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_header(path: Path) -> tuple[dict[str, Any], int]:
    """``(metadata, parameter_count)`` of a GGUF file (arrays are given as lengths).

    Raises:
        ValueError: not a GGUF v2/v3 file.
    """
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        version = _read(fh, "<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported")
        n_tensors, n_kv = _read(fh, "<Q"), _read(fh, "<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _read_str(fh)
            meta[key] = _read_value(fh, _read(fh, "<I"), False)
        params = 0
        for _ in range(n_tensors):
            _read_str(fh)
            dims = [_read(fh, "<Q") for _ in range(_read(fh, "<I"))]
            _read(fh, "<I")  # tensor type
            _read(fh, "<Q")  # offset
            params += math.prod(dims)
    return meta, params


def safetensors_parameters(directory: Path) -> int | None:
    """Total elements of the tensors in a directory's ``*.safetensors`` files, or None."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        try:
            with open(file, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                header = json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict):
                total += math.prod(info.get("shape") or [1])
    return total


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- entries -----------------------------------------------------------------------


def _gguf_info(model_id: str, name: str, path: Path, source: Source, description: str) -> ModelInfo:
    params: int | None = None
    try:
        meta, params = gguf_header(path)
        description = description or str(meta.get("general.name") or "")
    except (OSError, ValueError):
        pass
    return ModelInfo(
        model_id, name, "chat", "gguf", params, _size(path), str(path), source, description
    )


def _dir_info(
    model_id: str, name: str, path: Path, source: Source, description: str
) -> ModelInfo | None:
    task: Task
    if (path / "modules.json").is_file():
        fmt, task = "sentence-transformers", "embedding"
    elif (path / "model.bin").is_file() and not any(path.glob("*.safetensors")):
        fmt, task = "whisper-ct2", "speech"  # CTranslate2's model.bin (+ its config.json)
    elif (path / "config.json").is_file():
        config: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        archs = config.get("architectures") or []
        task = (
            "chat"
            if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
            else "embedding"
        )
        fmt = "hf-safetensors" if any(path.glob("*.safetensors")) else "hf-pytorch"
        description = description or ", ".join(archs)
    else:
        return None
    params = safetensors_parameters(path)
    return ModelInfo(
        model_id,
        name,
        task,
        fmt,
        params,
        _size(path),
        str(path),
        source,
        description,
    )


def _scan(models_dir: Path, base: Path, depth: int, found: list[ModelInfo]) -> None:
    try:
        children = sorted(base.iterdir())
    except OSError:
        return
    for child in children:
        if child.name.startswith("."):
            continue
        rel = child.relative_to(models_dir).as_posix()
        if child.is_file() and child.suffix.lower() == ".gguf":
            name = rel[: -len(child.suffix)]
            found.append(
                _gguf_info(
                    f"local:{name}" if depth == 0 else f"local:{child}",
                    name,
                    child,
                    "models-dir",
                    "",
                )
            )
        elif child.is_dir():
            model_id = f"local:{rel}" if depth == 0 else f"local:{child}"
            info = _dir_info(model_id, rel, child, "models-dir", "")
            if info is not None:
                if info.task == "speech":
                    info.id = str(child)
                found.append(info)
            elif depth + 1 < MAX_DEPTH:
                _scan(models_dir, child, depth + 1, found)


def list_local_models(home: Path) -> list[ModelInfo]:
    """Bundled models (whose packages are installed), then models under ``home/models``.

    A model directly in ``models/`` has the id ``local:<name>``; deeper ones (one more
    level, e.g. a training run's output folders) ``local:<absolute path>``. Whisper
    directories are ids for the Transcribe node (a path).
    """
    found: list[ModelInfo] = []
    for name, bundled in BUNDLED.items():
        try:
            path = bundled.path()
        except NodeError:
            continue
        if bundled.kind == "gguf":
            found.append(_gguf_info(f"local:{name}", name, path, "bundled", bundled.description))
        else:
            prefix = "bundled:" if bundled.kind == "whisper-ct2" else "local:"
            info = _dir_info(f"{prefix}{name}", name, path, "bundled", bundled.description)
            if info is not None:
                info.description = bundled.description
                found.append(info)
    models_dir = home / "models"
    if models_dir.is_dir():
        _scan(models_dir, models_dir, 0, found)
    return found


def human_count(n: int | None) -> str:
    """``134515008`` → ``134.5M``; None → ``?``."""
    if n is None:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """``103004800`` → ``98.2 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# ---- for pickers (canvas, settings page, CLI) ----------------------------------------------


def list_providers(home: Path) -> list[dict[str, Any]]:
    """Every provider a model id can name, for pickers and the settings page.

    Each: ``name`` (the model-id prefix), ``kind`` (``local``, ``openai``,
    ``openai_compatible``, ``anthropic``), ``base_url``, ``credential`` (the secret's
    name, never its value), ``credential_state`` (``"NAME (store)"``, ``"NAME
    (environment)"``, ``"NAME (not set)"``, ``"NAME (store; its scope leaves out this
    endpoint)"``, ``"none needed"``), ``source``
    (``built-in`` / ``configured``), ``suggested_models`` and
    ``suggested_embedding_models`` (free text is always allowed), ``timeout_s``.

    Raises:
        ProviderConfigError: providers.json is unreadable.
    """
    from flowbuilder.providers.config import (
        BUILTIN,
        SUGGESTED_EMBEDDING_MODELS,
        SUGGESTED_MODELS,
        Endpoint,
        ProviderConfig,
    )
    from flowbuilder.providers.credentials import scope_refusal
    from flowbuilder.secrets import SecretError, SecretStore

    store = SecretStore(home)

    def state(endpoint: Endpoint) -> str:
        name = endpoint.api_key_secret
        if name is None:
            return "none needed"
        try:
            found = store.resolve(name)
            refused = found is not None and scope_refusal(endpoint, name, store) is not None
        except SecretError:
            return f"{name} (store unreadable)"
        if found is None:
            return f"{name} (not set)"
        if refused:
            return f"{name} (store; its scope leaves out this endpoint)"
        return f"{name} ({'store' if found[1] == 'store' else 'environment'})"

    local = list_local_models(home)
    rows: list[dict[str, Any]] = [
        {
            "name": "local",
            "kind": "local",
            "base_url": None,
            "credential": None,
            "credential_state": "none needed",
            "source": "built-in",
            "suggested_models": [m.id.removeprefix("local:") for m in local if m.task == "chat"],
            "suggested_embedding_models": [
                m.id.removeprefix("local:") for m in local if m.task == "embedding"
            ],
            "timeout_s": None,
        }
    ]
    config = ProviderConfig(home)
    stored = config.stored()
    for name, e in config.endpoints().items():
        builtin = name in BUILTIN and e.kind == BUILTIN[name].kind
        rows.append(
            {
                "name": name,
                "kind": e.kind,
                "base_url": e.base_url,
                "credential": e.api_key_secret,
                "credential_state": state(e),
                "source": "configured" if name in stored else "built-in",
                "suggested_models": list(SUGGESTED_MODELS[e.kind]) if builtin else [],
                "suggested_embedding_models": list(SUGGESTED_EMBEDDING_MODELS[e.kind])
                if builtin
                else [],
                "timeout_s": e.timeout_s,
            }
        )
    return rows


def model_choices(home: Path, task: Task = "chat") -> list[dict[str, Any]]:
    """Options for a model picker (an LLM node's ``widget="model"`` with
    ``model_task``): local models of that task first, then each remote provider's
    suggestions. Each: ``id`` (the value to store), ``label``, ``provider``, ``local``."""
    choices: list[dict[str, Any]] = [
        {
            "id": m.id,
            "label": f"{m.name} ({m.format}, {human_count(m.parameters)})",
            "provider": "local",
            "local": True,
        }
        for m in list_local_models(home)
        if m.task == task
    ]
    key = "suggested_models" if task == "chat" else "suggested_embedding_models"
    for p in list_providers(home):
        if p["kind"] == "local":
            continue
        choices += [
            {"id": f"{p['name']}:{m}", "label": m, "provider": p["name"], "local": False}
            for m in p[key]
        ]
    return choices
