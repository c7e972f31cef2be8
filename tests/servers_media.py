"""A real local server for the OpenAI media APIs, and the pytest fixtures that start it.

(PYTEST_DONT_REWRITE: imported by test modules before pytest loads it as a plugin.)

Speaks the OpenAI wire format for:

- ``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations`` (multipart:
  ``file``, ``model``, ``language``, ``prompt``, ``response_format`` ``json`` /
  ``verbose_json`` / ``text`` / ``srt`` / ``vtt``, ``timestamp_granularities[]``) —
  answered by the real bundled Whisper tiny.en through faster-whisper, loaded once per
  session in the shared model cache. ``whisper-1`` gives every format; the
  ``gpt-4o-*transcribe`` models refuse ``verbose_json`` with a 400, as the real API does.
- ``POST /v1/images/generations`` (``prompt``, ``model``, ``n``, ``size``, ``quality``,
  ``response_format``) — a real PNG of the requested size drawn with Pillow (the prompt
  written on a background coloured by the prompt's hash). Sizes, ``n`` and
  ``response_format`` are checked per model like the real API (dall-e-3 takes ``n=1``
  only; gpt-image-1 answers base64 only).

Keys, fault injection and request records come from :mod:`servers`
(:class:`~servers.ServerState`). Used as a pytest plugin:
``pytest_plugins = ["servers", "servers_media"]``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from servers import LocalServer, ServerState, _fault_response_openai, _oai_error, key_ok

from flowbuilder.models import ModelCache

TRANSCRIBE_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
IMAGE_SIZES = {
    "gpt-image-1": ("auto", "1024x1024", "1536x1024", "1024x1536"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
}


def draw_png(prompt: str, size: tuple[int, int]) -> bytes:
    """A real PNG of ``size`` (width, height) pixels with ``prompt`` written on it."""
    from PIL import Image, ImageDraw

    digest = hashlib.sha256(prompt.encode()).digest()
    img = Image.new("RGB", size, (digest[0], digest[1], digest[2]))
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), prompt[:80], fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _srt_time(t: float, sep: str) -> str:
    ms = round(t * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def media_app(state: ServerState, models: ModelCache) -> FastAPI:
    """An app speaking the OpenAI audio and images APIs (see the module docstring)."""
    from nodes.audio.transcribe import _load, whisper_dir

    app = FastAPI()

    def unauthorized(given: str) -> Response:
        return _oai_error(
            401,
            f"Incorrect API key provided: {given}.",
            "invalid_request_error",
            "invalid_api_key",
        )

    def whisper() -> Any:
        path = whisper_dir("bundled:tiny.en")
        return models.get(f"whisper:{path.resolve()}", lambda: _load(path), 200)

    async def audio(request: Request, task: str) -> Response:
        form = await request.form()
        upload = form.get("file")
        fields = {k: v for k, v in form.multi_items() if k != "file"}
        body: dict[str, Any] = {
            **fields,
            "timestamp_granularities": form.getlist("timestamp_granularities[]"),
            "filename": getattr(upload, "filename", None),
        }
        state.record(request, body)
        ok, given = key_ok(state, request)
        if not ok:
            return unauthorized(given)
        fault = state.next_fault()
        if fault is not None and (response := _fault_response_openai(fault)) is not None:
            return response
        model = str(form.get("model", ""))
        if model not in TRANSCRIBE_MODELS or (task == "translate" and model != "whisper-1"):
            return _oai_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        fmt = str(form.get("response_format") or "json")
        if model != "whisper-1" and fmt not in ("json", "text"):
            return _oai_error(
                400,
                f"response_format '{fmt}' is not compatible with model '{model}'. Use 'json' "
                "or 'text' instead.",
                "invalid_request_error",
                "unsupported_value",
            )
        if upload is None or isinstance(upload, str):
            return _oai_error(400, "Missing file.", "invalid_request_error", None)
        data = await upload.read()
        words = "word" in body["timestamp_granularities"]
        language = str(form.get("language") or "") or None
        prompt = str(form.get("prompt") or "") or None

        def work() -> tuple[list[Any], Any]:
            entry = whisper()
            with entry.lock:
                segs, info = entry.model.transcribe(
                    io.BytesIO(data),
                    language=language if task == "transcribe" else None,
                    initial_prompt=prompt,
                    word_timestamps=words,
                    beam_size=1,
                )
                return list(segs), info

        try:
            segments, info = await asyncio.to_thread(work)
        except Exception as exc:  # the real API answers 400 for undecodable audio
            return _oai_error(
                400,
                f"The audio file could not be decoded or its format is not supported. ({exc})",
                "invalid_request_error",
                None,
            )
        text = " ".join(s.text.strip() for s in segments).strip()
        if fmt == "text":
            return PlainTextResponse(text + "\n")
        if fmt in ("srt", "vtt"):
            sep = "," if fmt == "srt" else "."
            cues = [
                f"{i}\n{_srt_time(s.start, sep)} --> {_srt_time(s.end, sep)}\n{s.text.strip()}\n"
                for i, s in enumerate(segments, 1)
            ]
            head = "WEBVTT\n\n" if fmt == "vtt" else ""
            return PlainTextResponse(head + "\n".join(cues))
        if fmt == "json":
            out: dict[str, Any] = {"text": text}
            if model != "whisper-1":
                out["usage"] = {"type": "duration", "seconds": round(info.duration)}
            return JSONResponse(out)
        verbose: dict[str, Any] = {
            "task": task,
            "language": "english",
            "duration": info.duration,
            "text": text,
            "segments": [
                {
                    "id": i,
                    "seek": s.seek,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": s.tokens,
                    "temperature": s.temperature,
                    "avg_logprob": s.avg_logprob,
                    "compression_ratio": s.compression_ratio,
                    "no_speech_prob": s.no_speech_prob,
                }
                for i, s in enumerate(segments)
            ],
        }
        if words:
            verbose["words"] = [
                {"word": w.word.strip(), "start": w.start, "end": w.end}
                for s in segments
                for w in s.words or []
            ]
        return JSONResponse(verbose)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await audio(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request) -> Response:
        return await audio(request, "translate")

    @app.post("/v1/images/generations")
    async def images(request: Request) -> Response:
        body = await request.json()
        state.record(request, body)
        ok, given = key_ok(state, request)
        if not ok:
            return unauthorized(given)
        fault = state.next_fault()
        if fault is not None and (response := _fault_response_openai(fault)) is not None:
            return response
        model = body.get("model") or "dall-e-2"
        if model not in IMAGE_SIZES:
            return _oai_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        prompt = body.get("prompt") or ""
        if not prompt:
            return _oai_error(
                400, "Missing required parameter: 'prompt'.", "invalid_request_error", None
            )
        n = int(body.get("n") or 1)
        if model == "dall-e-3" and n != 1:
            return _oai_error(
                400,
                "Invalid 'n': integer above maximum value. Expected a value <= 1, but got "
                f"{n} instead.",
                "invalid_request_error",
                "integer_above_max_value",
            )
        size = body.get("size") or ("auto" if model == "gpt-image-1" else "1024x1024")
        if size not in IMAGE_SIZES[model]:
            return _oai_error(
                400,
                f"Invalid value: '{size}'. Supported values are: "
                + ", ".join(f"'{s}'" for s in IMAGE_SIZES[model])
                + ".",
                "invalid_request_error",
                "invalid_value",
            )
        fmt = body.get("response_format")
        if model == "gpt-image-1" and fmt is not None:
            return _oai_error(
                400,
                "Unknown parameter: 'response_format'.",
                "invalid_request_error",
                "unknown_parameter",
            )
        w, h = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        pngs = await asyncio.to_thread(
            lambda: [draw_png(f"{prompt} #{i}", (w, h)) for i in range(n)]
        )
        if model != "gpt-image-1" and fmt != "b64_json":
            items: list[dict[str, Any]] = [
                {"url": f"http://127.0.0.1/never/{i}.png"} for i in range(n)
            ]
        else:
            items = [{"b64_json": base64.b64encode(p).decode()} for p in pngs]
        if model == "dall-e-3":
            for item in items:
                item["revised_prompt"] = prompt
        out: dict[str, Any] = {"created": int(time.time()), "data": items}
        if model == "gpt-image-1":
            out["usage"] = {
                "input_tokens": len(prompt.split()),
                "output_tokens": 272 * n,
                "total_tokens": len(prompt.split()) + 272 * n,
                "input_tokens_details": {"text_tokens": len(prompt.split()), "image_tokens": 0},
            }
        return JSONResponse(out)

    return app


@pytest.fixture(scope="session")
def media_server_session(shared_models: ModelCache) -> Iterator[LocalServer]:
    state = ServerState()
    server = LocalServer(media_app(state, shared_models), state).start()
    yield server
    server.stop()


@pytest.fixture
def media_server(media_server_session: LocalServer) -> Iterator[LocalServer]:
    """The OpenAI media server with no faults, no key required and an empty log."""
    media_server_session.state.reset()
    yield media_server_session
    media_server_session.state.reset()
