"""Speech to text with Whisper through faster-whisper (CTranslate2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flowbuilder.bundled import BUNDLED
from flowbuilder.context import RunContext
from flowbuilder.errors import NodeError
from flowbuilder.node import Node, NodeMeta, Param, Port
from flowbuilder.types import AudioRef


class Segment(BaseModel):
    """A stretch of speech: ``start`` and ``end`` in seconds from the audio's start."""

    start: float
    end: float
    text: str


def whisper_dir(model: str) -> Path:
    """Resolve ``bundled:tiny.en`` or a CTranslate2 Whisper directory (with model.bin).

    Raises:
        NodeError: neither a bundled Whisper model nor such a directory.
    """
    name = model.removeprefix("bundled:")
    bundled = BUNDLED.get(name)
    if bundled is not None and bundled.kind == "whisper-ct2":
        return bundled.path()
    path = Path(model).expanduser()
    if (path / "model.bin").is_file():
        return path
    names = ", ".join(f"bundled:{n}" for n, m in BUNDLED.items() if m.kind == "whisper-ct2")
    raise NodeError(
        f"Whisper model '{model}' is neither a bundled model ({names}) nor a "
        "CTranslate2 model directory (one holding model.bin)"
    )


def _load(path: Path) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(path), device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 2
    )


class Transcribe(Node):
    """Speech to text with Whisper (faster-whisper), offline with the bundled tiny.en model.

    Inputs: audio — any format PyAV decodes (flac, mp3, wav, ogg, m4a, webm).
    Outputs: text, segments (start/end seconds, text), language (ISO 639-1).
    Progress is reported in seconds of audio transcribed. Raises NodeError when the audio
    cannot be decoded.
    """

    meta = NodeMeta(
        type="audio/transcribe", version="1.0.0", category="Audio", title="Transcribe", heavy=True
    )

    class Inputs(BaseModel):
        audio: AudioRef = Port(description="speech to transcribe")
        model: str = Param(
            "bundled:tiny.en",
            description="bundled:tiny.en or a CTranslate2 Whisper directory",
            widget="model",
            min_length=1,
        )
        language: str | None = Param(None, description="ISO 639-1 code; none detects it")
        beam_size: int = Param(
            5, description="beam search width (1 is greedy, fastest)", ge=1, le=10
        )

    class Outputs(BaseModel):
        text: str
        segments: list[Segment]
        language: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        path = whisper_dir(inputs.model)
        entry = await ctx.to_thread(
            ctx.models.get, f"whisper:{path.resolve()}", lambda: _load(path), 200
        )
        audio = ctx.artifacts.path(inputs.audio)
        return await ctx.to_thread(self._transcribe, ctx, entry, audio, inputs)

    def _transcribe(self, ctx: RunContext, entry: Any, audio: Path, inputs: Inputs) -> Outputs:
        with entry.lock:
            try:
                segments, info = entry.model.transcribe(
                    str(audio), language=inputs.language, beam_size=inputs.beam_size
                )
            except Exception as exc:  # PyAV raises its own error classes for bad input
                raise NodeError(
                    f"cannot decode '{inputs.audio.name or audio.name}' as audio "
                    f"({type(exc).__name__}: {exc})"
                ) from None
            duration = info.duration or 0.0
            out: list[Segment] = []
            ctx.progress(0.0, f"0 / {duration:.1f} s of audio")
            for seg in segments:
                out.append(
                    Segment(start=round(seg.start, 3), end=round(seg.end, 3), text=seg.text.strip())
                )
                ctx.progress(
                    seg.end / duration if duration else None,
                    f"{seg.end:.1f} / {duration:.1f} s of audio",
                )
        text = " ".join(s.text for s in out).strip()
        return self.Outputs(text=text, segments=out, language=info.language)
