"""Dataset nodes: Load Dataset (jsonl/json/csv/parquet → one of the standard row shapes)
and Split (train/validation by fraction, seeded).

Datasets travel between nodes as :class:`~flowbuilder.types.DatasetRef` artifacts: a
JSONL file with one normalised row per line, in one of four shapes, told apart by keys:

- instruction: ``{"instruction": str, "input": str, "output": str}``
- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, …]}``
- preference: ``{"prompt": str, "chosen": str, "rejected": str}``
- text: ``{"text": str}``

Two source layouts are recognised beyond the plain ones: Stanford Alpaca's seed tasks
(an ``instruction`` with an ``instances`` list of ``{input, output}``, expanded to one row
per instance) and Anthropic HH-RLHF (``chosen``/``rejected`` whole dialogues with no
``prompt``; they are split at their longest common prefix that ends in
``"\\n\\nAssistant:"``, so ``prompt`` is the shared dialogue and ``chosen``/``rejected``
are the differing final assistant turns).
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from flowbuilder.sdk import (
    DatasetRef,
    JSONValue,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    RunContext,
    file_fingerprint,
)

Shape = Literal["instruction", "chat", "preference", "text"]
SHAPES: tuple[str, ...] = ("instruction", "chat", "preference", "text")
ROLES = ("system", "user", "assistant")
HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"
HH_TURN = re.compile(r"\n\n(Human|Assistant):")
FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


# ---- reading and writing normalised datasets ----------------------------------------------


def read_rows(ctx: RunContext, ref: DatasetRef) -> list[dict[str, Any]]:
    """The rows of a normalised dataset artifact (a JSONL file), in order.

    Raises:
        NodeError: the artifact is missing or a line is not a JSON object.
    """
    rows: list[dict[str, Any]] = []
    text = ctx.artifacts.path(ref).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NodeError(f"dataset {ref.name or ref.id[:12]}, line {number}: {exc}") from None
        if not isinstance(row, dict):
            raise NodeError(f"dataset {ref.name or ref.id[:12]}, line {number}: not an object")
        rows.append(row)
    return rows


def shape_of(row: dict[str, Any]) -> str:
    """The shape of a normalised row, by its keys (see the module docstring).

    Raises:
        NodeError: the row has none of the shapes' keys.
    """
    if "messages" in row:
        return "chat"
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "instruction" in row:
        return "instruction"
    if "text" in row:
        return "text"
    raise NodeError(f"a row with keys {sorted(row)} has none of the dataset shapes {SHAPES}")


def write_rows(ctx: RunContext, rows: list[dict[str, Any]], name: str) -> DatasetRef:
    """Store rows as a JSONL dataset artifact named ``name``."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    ref = ctx.artifacts.put_bytes(data, name=name, kind="dataset")
    assert isinstance(ref, DatasetRef)
    return ref


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two Anthropic HH dialogues into ``(prompt, chosen, rejected)``.

    ``prompt`` is the longest common prefix of the two that ends in ``"\\n\\nAssistant:"``
    (the shared dialogue up to the final assistant turn); the two answers are what
    follows, without the leading space. Answers may be empty (one HH row prefers
    silence).

    Raises:
        ValueError: the two dialogues share no prefix ending in an assistant turn, or are
            the same text.
    """
    if chosen == rejected:
        raise ValueError("'chosen' and 'rejected' are the same text")
    limit = min(len(chosen), len(rejected))
    common = 0
    while common < limit and chosen[common] == rejected[common]:
        common += 1
    end = chosen.rfind(HH_ASSISTANT, 0, common)
    if end < 0:
        raise ValueError(
            "'chosen' and 'rejected' share no dialogue prefix ending in "
            "'\\n\\nAssistant:' (Anthropic HH format); give a 'prompt' column instead"
        )
    cut = end + len(HH_ASSISTANT)
    return chosen[:cut], chosen[cut:].lstrip(" "), rejected[cut:].lstrip(" ")


def hh_to_messages(prompt: str) -> list[dict[str, str]]:
    """Turn an HH dialogue (``"\\n\\nHuman: …\\n\\nAssistant: …"``) into chat messages.

    A text without HH markers becomes one user message. A trailing empty assistant turn
    (the point where the answer goes) is dropped.
    """
    if HH_HUMAN not in prompt:
        return [{"role": "user", "content": prompt.strip()}]
    parts = HH_TURN.split(prompt)  # [lead, speaker, text, speaker, text, …]
    messages: list[dict[str, str]] = []
    if parts[0].strip():
        messages.append({"role": "user", "content": parts[0].strip()})
    for speaker, text in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + text.strip()
        else:
            messages.append({"role": role, "content": text.strip()})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


# ---- mapping source rows to a shape -------------------------------------------------------


class Mapping(BaseModel):
    """Source column names for each standard field."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    instances: str = "instances"
    messages: str = "messages"
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    text: str = "text"


def detect_shape(columns: list[str], m: Mapping) -> str:
    """The shape a table with ``columns`` most likely holds.

    Raises:
        NodeError: no shape's columns are present.
    """
    if m.messages in columns:
        return "chat"
    if m.chosen in columns and m.rejected in columns:
        return "preference"
    if m.instruction in columns:
        return "instruction"
    if m.text in columns:
        return "text"
    raise NodeError(
        f"cannot tell the dataset's shape from its columns {columns}: expected "
        f"'{m.messages}' (chat), '{m.chosen}' + '{m.rejected}' (preference), "
        f"'{m.instruction}' (instruction) or '{m.text}' (text); set 'shape' and the "
        "field names"
    )


def _text(row: dict[str, Any], field: str, where: str, *, required: bool = True) -> str:
    value = row.get(field)
    if value is None:
        if required:
            raise NodeError(f"{where}: field '{field}' is missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise NodeError(f"{where}: field '{field}' must be text, not {type(value).__name__}")
    return str(value)


def normalise(
    rows: list[dict[str, Any]], shape: str, m: Mapping, limit: int = 0
) -> list[dict[str, Any]]:
    """Map source rows to normalised rows of ``shape`` (see the module docstring).

    Row numbers in errors count from 1 in the order of the source file.

    Raises:
        NodeError: a row lacks a field or has a value of the wrong type (naming the row
            number and the field).
    """
    out: list[dict[str, Any]] = []
    for number, row in enumerate(rows, 1):
        if limit and len(out) >= limit:
            break
        where = f"row {number}"
        if shape == "instruction":
            instruction = _text(row, m.instruction, where)
            if not instruction.strip():
                raise NodeError(f"{where}: field '{m.instruction}' is empty")
            instances = row.get(m.instances)
            if row.get(m.output) is None and instances is not None:
                if not isinstance(instances, list) or not instances:
                    raise NodeError(f"{where}: field '{m.instances}' must be a non-empty list")
                for k, inst in enumerate(instances, 1):
                    at = f"{where}, instance {k}"
                    if not isinstance(inst, dict):
                        raise NodeError(f"{at}: must be an object with '{m.output}'")
                    out.append(
                        {
                            "instruction": instruction,
                            "input": _text(inst, m.input, at, required=False),
                            "output": _text(inst, m.output, at),
                        }
                    )
            else:
                out.append(
                    {
                        "instruction": instruction,
                        "input": _text(row, m.input, where, required=False),
                        "output": _text(row, m.output, where),
                    }
                )
        elif shape == "chat":
            out.append({"messages": _messages(row.get(m.messages), m.messages, where)})
        elif shape == "preference":
            chosen = _text(row, m.chosen, where)
            rejected = _text(row, m.rejected, where)
            if row.get(m.prompt) is not None:
                prompt = _text(row, m.prompt, where)
            else:
                try:
                    prompt, chosen, rejected = split_hh(chosen, rejected)
                except ValueError as exc:
                    raise NodeError(f"{where}: {exc}") from None
            out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        elif shape == "text":
            text = _text(row, m.text, where)
            if not text.strip():
                raise NodeError(f"{where}: field '{m.text}' is empty")
            out.append({"text": text})
        else:  # pragma: no cover - Literal-checked
            raise NodeError(f"unknown shape '{shape}'")
    return out[:limit] if limit else out


def _messages(value: Any, field: str, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise NodeError(f"{where}: field '{field}' must be a non-empty list of messages")
    messages = []
    for k, msg in enumerate(value, 1):
        at = f"{where}, message {k}"
        if not isinstance(msg, dict):
            raise NodeError(f"{at}: must be an object with 'role' and 'content'")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise NodeError(f"{at}: 'role' must be one of {', '.join(ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise NodeError(f"{at}: 'content' must be text")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise NodeError(f"{where}: field '{field}' has no assistant message to learn from")
    return messages


def read_table(
    path: Path, fmt: str, cache_dir: Path, name: str | None = None
) -> list[dict[str, Any]]:
    """Read a jsonl/json/csv/parquet file with the ``datasets`` library (offline).

    ``fmt`` is ``json`` (JSON Lines or a JSON array of objects), ``csv`` or ``parquet``.
    The Arrow cache goes to ``cache_dir``; ``name`` is the file's name in messages
    (default: ``path``'s).

    Raises:
        NodeError: the file cannot be parsed (for JSON Lines, naming the bad line).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(
            fmt,
            data_files=str(path),
            split="train",
            cache_dir=str(cache_dir),
            keep_in_memory=True,
        )
    except Exception as exc:  # datasets wraps parser errors in several exception types
        if fmt == "json":
            _find_bad_json_line(path, name or path.name)
        cause = exc.__cause__ or exc
        raise NodeError(f"cannot read {name or path.name} as {fmt}: {cause}") from None
    return list(table)


def _find_bad_json_line(path: Path, name: str) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise NodeError(f"{name}: not valid JSON at line {exc.lineno}: {exc.msg}") from None
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NodeError(f"{name}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise NodeError(f"{name}, line {number}: each line must be a JSON object")


# ---- nodes -----------------------------------------------------------------------------


class LoadDataset(Node):
    """Load a dataset file (jsonl, json, csv or parquet) as rows of a standard shape:
    instruction, chat, preference or text.

    Reads with the ``datasets`` library (offline). 'auto' picks the shape from the columns;
    the field parameters rename source columns. Alpaca seed tasks (an ``instances`` list)
    give one row per instance; Anthropic HH pairs without a prompt are split at their shared
    dialogue. Outputs the normalised dataset (JSONL), its shape, row count and a preview
    of the first 3 rows. Raises a NodeError naming the row and field of a row that does
    not fit, and a FileAccessError for a path the file-access policy refuses (relative
    paths are in the workspace, FLOWBUILDER_HOME/files).
    """

    meta = NodeMeta(
        type="training/load_dataset",
        version="2.0.0",
        category="Training",
        title="Load Dataset",
    )

    class Inputs(BaseModel):
        file: DatasetRef | None = Port(None, description="a dataset file (instead of 'path')")
        path: str = Param(
            "", description="dataset file path (jsonl, json, csv, parquet)", widget="file"
        )
        format: Literal["auto", "jsonl", "json", "csv", "parquet"] = Param(
            "auto", description="file format; auto goes by the file name"
        )
        shape: Literal["auto", "instruction", "chat", "preference", "text"] = Param(
            "auto", description="row shape; auto goes by the columns"
        )
        instruction_field: str = Param("instruction", description="instruction column")
        input_field: str = Param("input", description="optional input/context column")
        output_field: str = Param("output", description="answer column")
        messages_field: str = Param("messages", description="chat messages column")
        prompt_field: str = Param("prompt", description="preference prompt column")
        chosen_field: str = Param("chosen", description="preferred answer column")
        rejected_field: str = Param("rejected", description="rejected answer column")
        text_field: str = Param("text", description="plain text column")
        limit: int = Param(0, description="keep the first N rows (0: all)", ge=0)

    class Outputs(BaseModel):
        dataset: DatasetRef
        shape: str
        rows: int
        preview: JSONValue

    @classmethod
    def fingerprint(cls, params: dict[str, Any]) -> str | None:
        return file_fingerprint(params.get("path"))

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        if inputs.file is not None:
            path = ctx.artifacts.path(inputs.file)
            name = inputs.file.name or "dataset.jsonl"
        elif inputs.path:
            name = Path(inputs.path).name

            def copy_in() -> Path:  # the datasets library reads it by name: a private copy
                with ctx.files.open_read(inputs.path, field="path") as fh:
                    return ctx.artifacts.path(ctx.artifacts.put_stream(fh, name=name))

            path = await ctx.to_thread(copy_in)
        else:
            raise NodeError("no dataset: set 'path' or connect a dataset file")
        fmt = inputs.format
        if fmt == "auto":
            suffix = Path(name).suffix.lower()
            if suffix not in FORMATS:
                raise NodeError(
                    f"cannot tell the format of '{name}' from its name; set 'format' "
                    "(jsonl, json, csv or parquet)"
                )
            fmt = FORMATS[suffix]  # type: ignore[assignment]
        loader = "json" if fmt in ("jsonl", "json") else fmt
        mapping = Mapping(
            instruction=inputs.instruction_field,
            input=inputs.input_field,
            output=inputs.output_field,
            messages=inputs.messages_field,
            prompt=inputs.prompt_field,
            chosen=inputs.chosen_field,
            rejected=inputs.rejected_field,
            text=inputs.text_field,
        )
        cache = ctx.settings.home / "cache" / "datasets"

        def load() -> tuple[str, list[dict[str, Any]]]:
            source = read_table(path, loader, cache, name)
            if not source:
                raise NodeError(f"{name} has no rows")
            shape = inputs.shape
            if shape == "auto":
                shape = detect_shape(list(source[0].keys()), mapping)  # type: ignore[assignment]
            return shape, normalise(source, shape, mapping, inputs.limit)

        shape, rows = await ctx.to_thread(load)
        ref = write_rows(ctx, rows, f"{Path(name).stem}-{shape}.jsonl")
        return self.Outputs(dataset=ref, shape=shape, rows=len(rows), preview=rows[:3])


class Split(Node):
    """Split a dataset into train and validation rows by fraction, after a seeded shuffle.

    The same seed gives the same split. With a fraction above 0 and at least two rows,
    both parts get at least one row. Outputs both datasets and their row counts.
    """

    meta = NodeMeta(type="training/split", version="1.0.0", category="Training", title="Split")

    class Inputs(BaseModel):
        dataset: DatasetRef = Port(description="rows to split")
        validation_fraction: float = Param(
            0.1, description="share of rows for validation (0–0.9)", ge=0, le=0.9
        )
        seed: int = Param(0, description="shuffle seed")
        shuffle: bool = Param(True, description="shuffle before splitting")

    class Outputs(BaseModel):
        train: DatasetRef
        validation: DatasetRef
        train_rows: int
        validation_rows: int

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        rows = await ctx.to_thread(read_rows, ctx, inputs.dataset)
        order = list(range(len(rows)))
        if inputs.shuffle:
            random.Random(inputs.seed).shuffle(order)
        n_val = round(len(rows) * inputs.validation_fraction)
        if inputs.validation_fraction > 0 and len(rows) >= 2:
            n_val = min(max(n_val, 1), len(rows) - 1)
        val = [rows[i] for i in order[:n_val]]
        train = [rows[i] for i in order[n_val:]]
        if not train:
            raise NodeError("the dataset has no rows to train on")
        stem = Path(inputs.dataset.name or "dataset").stem
        return self.Outputs(
            train=write_rows(ctx, train, f"{stem}-train.jsonl"),
            validation=write_rows(ctx, val, f"{stem}-validation.jsonl"),
            train_rows=len(train),
            validation_rows=len(val),
        )


def rows_of_shape(
    ctx: RunContext, ref: DatasetRef, shapes: tuple[str, ...], node: str
) -> list[dict[str, Any]]:
    """Read a normalised dataset and check every row has one of ``shapes``.

    Raises:
        NodeError: the dataset is empty or a row has another shape (naming the row).
    """
    rows = read_rows(ctx, ref)
    if not rows:
        raise NodeError(f"{node}: the dataset {ref.name or ''} has no rows")
    for number, row in enumerate(rows, 1):
        shape = shape_of(row)
        if shape not in shapes:
            raise NodeError(
                f"{node}: row {number} is a {shape} row; this node takes "
                f"{' or '.join(shapes)} rows (use Load Dataset's 'shape')"
            )
    return rows


NODES: tuple[type[Node], ...] = (LoadDataset, Split)
