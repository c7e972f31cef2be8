"""Real local HTTP servers for the provider tests, and the pytest fixtures that start them.

(PYTEST_DONT_REWRITE: imported by test modules before pytest loads it as a plugin.)

Two servers, each a FastAPI app run by uvicorn in a background thread on 127.0.0.1 at a
free port:

- an **OpenAI wire-format** server: ``POST /v1/chat/completions`` (streamed as SSE or
  not), ``POST /v1/embeddings``, ``GET /v1/models``;
- an **Anthropic Messages** server: ``POST /v1/messages`` (streamed with the real API's
  SSE events — ``message_start``, ``content_block_start``, ``ping``,
  ``content_block_delta``, ``content_block_stop``, ``message_delta``, ``message_stop`` —
  or not).

Every answer comes from a real model through flowbuilder's local provider: the bundled
SmolLM2 for chat, the bundled all-MiniLM-L6-v2 for embeddings. Each model loads once
per test session (one shared :class:`~flowbuilder.models.ModelCache`). Errors have the
bodies the real APIs send: a wrong key is 401, an unknown model 404, a prompt longer
than the model's context 400 with ``context_length_exceeded`` (OpenAI) or "prompt is too
long" (Anthropic) — computed from the real model's context, not faked.

Faults are injected per request (:meth:`ServerState.inject`): ``429`` with
``Retry-After`` / ``retry-after-ms``, ``500``, ``503``, ``529`` (Anthropic's overloaded),
``quota`` (OpenAI's 429 ``insufficient_quota``), ``hang`` (say nothing past the client's
timeout), ``cut`` (drop the connection after a few real tokens), ``slow`` (a delay
before each token), ``refuse`` (a content-filter / refusal stop), ``truncate`` (the
real answer cut to a few tokens), ``unfinished`` (a stream that ends cleanly after a few
real tokens, with no finish reason — no ``message_stop`` on the Anthropic server) and
``json`` (a whole 200 JSON answer, not Server-Sent Events, to a streaming call).
Every request is recorded with its time (:attr:`ServerState.seen`); so is every client
disconnect from a stream, and how many tokens each stream sent.

Used as a pytest plugin: ``pytest_plugins = ["servers"]`` in a test module.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from flowbuilder.builder import GraphBuilder
from flowbuilder.bundled import BUNDLED
from flowbuilder.engine import Engine
from flowbuilder.graph import Graph
from flowbuilder.models import ModelCache
from flowbuilder.providers import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    ContextTooLong,
    EmbedRequest,
    default_providers,
)
from flowbuilder.providers.local import N_CTX, LocalModels
from flowbuilder.registry import Registry
from flowbuilder.scheduler import RunResult
from flowbuilder.settings import Settings

CHAT_MODELS = {"smollm2": "smollm2"}
"""Model names the servers answer to, and the local model behind each."""
EMBED_MODELS = {"all-minilm-l6-v2": "all-minilm-l6-v2"}


# ---- state and faults -----------------------------------------------------------------


@dataclass
class Fault:
    """One injected fault, used by one request.

    ``kind``: ``429``, ``500``, ``503``, ``529``, ``quota``, ``hang``, ``cut``, ``slow``,
    ``refuse``, ``truncate``, ``unfinished``, ``json``. ``retry_after`` is sent as the
    ``Retry-After`` header, ``retry_after_ms`` as ``retry-after-ms``; ``seconds`` is how
    long ``hang`` stays silent or ``slow`` waits before each token; ``tokens`` is how many
    real tokens ``cut`` and ``unfinished`` send (and ``truncate`` keeps).
    """

    kind: str
    retry_after: str | None = None
    retry_after_ms: int | None = None
    seconds: float = 10.0
    tokens: int = 2


@dataclass
class Seen:
    """A request as the server saw it."""

    t: float
    path: str
    model: str | None
    stream: bool
    auth: str | None
    body: dict[str, Any]


@dataclass
class ServerState:
    """What a test controls and observes: the expected API key, queued faults, requests
    seen, and the times clients dropped a stream."""

    api_key: str | None = None
    faults: deque[Fault] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)
    streamed: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, kind: str, times: int = 1, **kw: Any) -> None:
        """Queue ``times`` faults of ``kind`` for the next requests."""
        with self.lock:
            for _ in range(times):
                self.faults.append(Fault(kind, **kw))

    def next_fault(self) -> Fault | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def record(self, request: Request, body: dict[str, Any]) -> None:
        auth = request.headers.get("authorization") or request.headers.get("x-api-key")
        with self.lock:
            self.seen.append(
                Seen(
                    time.monotonic(),
                    request.url.path,
                    body.get("model"),
                    bool(body.get("stream")),
                    auth,
                    body,
                )
            )

    def requests(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]

    def reset(self, api_key: str | None = None) -> None:
        with self.lock:
            self.api_key = api_key
            self.faults.clear()
            self.seen.clear()
            self.disconnects.clear()
            self.streamed.clear()


def key_ok(state: ServerState, request: Request) -> tuple[bool, str]:
    """Whether the request carries the expected key (``Authorization: Bearer`` or
    ``x-api-key``), and the key it carried."""
    auth = request.headers.get("authorization", "")
    given = auth.removeprefix("Bearer ").strip() if auth else request.headers.get("x-api-key", "")
    return state.api_key is None or given == state.api_key, given


# ---- the real models --------------------------------------------------------------------


class Stopped(Exception):
    """The client went away; generation stops."""


class Backend:
    """Real local models behind both servers (flowbuilder's local provider)."""

    def __init__(self, models: ModelCache) -> None:
        self.local = LocalModels(models)

    async def stream(self, model: str, request: ChatRequest) -> AsyncIterator[tuple[str, Any]]:
        """``("token", text)`` items as the model generates, then ``("done", ChatResult)``
        or ``("error", exception)``. Closing the iterator stops the generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def put(item: tuple[str, Any]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def check() -> None:
            if stop.is_set():
                raise Stopped

        def work() -> None:
            try:
                put(("done", self.local.chat(model, request, lambda t: put(("token", t)), check)))
            except BaseException as exc:  # handed to the event loop side
                put(("error", exc))

        threading.Thread(target=work, daemon=True).start()
        try:
            while True:
                item = await queue.get()
                yield item
                if item[0] != "token":
                    return
        finally:
            stop.set()

    async def chat(self, model: str, request: ChatRequest) -> ChatResult:
        return await asyncio.to_thread(self.local.chat, model, request)

    async def prompt_tokens(self, model: str, request: ChatRequest) -> int:
        return await asyncio.to_thread(self.local.count_prompt_tokens, model, request)


def _text(content: Any) -> str:
    """Message content as text: a string, or a list of ``{"type": "text", "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


async def _wait_or_disconnect(request: Request, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.05)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class CutConnection(Exception):
    """Raised inside a streamed body: uvicorn drops the connection mid-answer."""


# ---- OpenAI wire format -------------------------------------------------------------------


def _oai_error(status: int, message: str, type_: str, code: str | None, **headers: str) -> Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _fault_response_openai(fault: Fault) -> Response | None:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["retry-after"] = fault.retry_after
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.kind == "429":
        return _oai_error(
            429,
            "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
            "Please try again in 20s.",
            "requests",
            "rate_limit_exceeded",
            **headers,
        )
    if fault.kind == "quota":
        return _oai_error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        )
    if fault.kind in ("500", "503", "529"):
        return _oai_error(
            int(fault.kind),
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            **headers,
        )
    return None


def _chat_request_from_openai(body: dict[str, Any], honour_format: bool) -> ChatRequest:
    stop = body.get("stop") or []
    schema = None
    json_mode = False
    fmt = body.get("response_format") or {}
    if honour_format and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
    elif honour_format and fmt.get("type") == "json_object":
        json_mode = True
    return ChatRequest(
        messages=[
            ChatMessage(
                role="system" if m["role"] == "developer" else m["role"],
                content=_text(m.get("content")),
            )
            for m in body.get("messages", [])
        ],
        temperature=body.get("temperature", 1.0),
        top_p=body.get("top_p", 1.0),
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens") or 256,
        stop=[stop] if isinstance(stop, str) else stop,
        seed=body.get("seed"),
        json_mode=json_mode,
        json_schema=schema,
    )


def openai_app(state: ServerState, backend: Backend) -> FastAPI:
    """An app speaking the OpenAI wire format, answering with real local models."""
    app = FastAPI()

    def unauthorized(given: str) -> Response:
        # The real API shows a masked key; this server echoes it whole, so tests see
        # that flowbuilder's redaction (not the server's manners) keeps it out of logs.
        return _oai_error(
            401,
            f"Incorrect API key provided: {given}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        state.record(request, {})
        ok, given = key_ok(state, request)
        if not ok:
            return unauthorized(given)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "flowbuilder-tests"}
            for name in (*CHAT_MODELS, *EMBED_MODELS)
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await request.json()
        state.record(request, body)
        ok, given = key_ok(state, request)
        if not ok:
            return unauthorized(given)
        fault = state.next_fault()
        if fault is not None:
            if fault.kind == "hang":
                await _wait_or_disconnect(request, fault.seconds)
            elif (response := _fault_response_openai(fault)) is not None:
                return response
        model = body.get("model", "")
        if model not in EMBED_MODELS:
            return _oai_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        result = await asyncio.to_thread(
            backend.local.embed, EMBED_MODELS[model], EmbedRequest(texts=texts, normalize=True)
        )
        base64_out = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
                if base64_out
                else v,
            }
            for i, v in enumerate(result.vectors)
        ]
        tokens = result.usage.prompt_tokens
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        state.record(request, body)
        ok, given = key_ok(state, request)
        if not ok:
            return unauthorized(given)
        fault = state.next_fault()
        if fault is not None:
            if fault.kind == "hang":
                await _wait_or_disconnect(request, fault.seconds)
                fault = None
            elif (response := _fault_response_openai(fault)) is not None:
                return response
        model = body.get("model", "")
        if model not in CHAT_MODELS:
            return _oai_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        req = _chat_request_from_openai(body, honour_format=True)
        if fault is not None and fault.kind == "truncate":
            req = req.model_copy(update={"max_tokens": fault.tokens})
        chat_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        local = CHAT_MODELS[model]
        stream = backend.stream(local, req)
        first = await anext(stream)
        if first[0] == "error":
            await stream.aclose()
            exc = first[1]
            if isinstance(exc, ContextTooLong):
                return _oai_error(
                    400,
                    f"This model's maximum context length is {exc.limit} tokens. However, "
                    f"you requested {exc.prompt_tokens + req.max_tokens} tokens "
                    f"({exc.prompt_tokens} in the messages, {req.max_tokens} in the "
                    "completion). Please reduce the length of the messages or completion.",
                    "invalid_request_error",
                    "context_length_exceeded",
                )
            return _oai_error(500, str(exc), "server_error", None)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        if not body.get("stream") or (fault is not None and fault.kind == "json"):
            pieces, result = [], None
            item = first
            while True:
                if item[0] == "token":
                    pieces.append(item[1])
                elif item[0] == "done":
                    result = item[1]
                    break
                else:
                    raise item[1]
                item = await anext(stream)
            assert result is not None
            refused = fault is not None and fault.kind == "refuse"
            finish = "content_filter" if refused else result.finish_reason
            return JSONResponse(
                {
                    "id": chat_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "" if refused else result.text,
                            },
                            "finish_reason": finish,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": result.usage.prompt_tokens,
                        "completion_tokens": result.usage.completion_tokens,
                        "total_tokens": result.usage.total_tokens,
                    },
                }
            )

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            sent = 0
            item = first
            try:
                yield _sse(chunk({"role": "assistant", "content": ""}))
                if fault is not None and fault.kind == "refuse":
                    yield _sse(chunk({}, "content_filter"))
                    yield b"data: [DONE]\n\n"
                    return
                while True:
                    if item[0] == "token":
                        if fault is not None and fault.kind == "cut" and sent >= fault.tokens:
                            raise CutConnection("fault injection: connection cut mid-stream")
                        if (
                            fault is not None
                            and fault.kind == "unfinished"
                            and sent >= fault.tokens
                        ):
                            item = ("ended", None)
                            return  # a clean end of the body: no finish_reason, no [DONE]
                        if fault is not None and fault.kind == "slow":
                            await asyncio.sleep(fault.seconds)
                        yield _sse(chunk({"content": item[1]}))
                        sent += 1
                    elif item[0] == "done":
                        result: ChatResult = item[1]
                        yield _sse(chunk({}, result.finish_reason))
                        if include_usage:
                            usage = {
                                "prompt_tokens": result.usage.prompt_tokens,
                                "completion_tokens": result.usage.completion_tokens,
                                "total_tokens": result.usage.total_tokens,
                            }
                            yield _sse({**chunk({}), "choices": [], "usage": usage})
                        yield b"data: [DONE]\n\n"
                        return
                    else:
                        raise item[1]
                    item = await anext(stream)
            finally:
                if sent and not _finished(item):
                    state.disconnects.append(time.monotonic())
                state.streamed.append(sent)
                await stream.aclose()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _finished(item: tuple[str, Any]) -> bool:
    """Whether a stream's last item ended it on the server's side (not a disconnect)."""
    return item[0] in ("done", "ended")


# ---- Anthropic Messages format -------------------------------------------------------------


def _anth_error(status: int, type_: str, message: str, **headers: str) -> Response:
    return JSONResponse(
        {"type": "error", "error": {"type": type_, "message": message}},
        status_code=status,
        headers=headers,
    )


def _fault_response_anthropic(fault: Fault) -> Response | None:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["retry-after"] = fault.retry_after
    if fault.kind == "429":
        return _anth_error(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests "
            "per minute. Please reduce the prompt length or the maximum tokens requested, "
            "or try again later.",
            **headers,
        )
    if fault.kind in ("500", "503"):
        return _anth_error(int(fault.kind), "api_error", "Internal server error", **headers)
    if fault.kind == "529":
        return _anth_error(529, "overloaded_error", "Overloaded", **headers)
    return None


def anthropic_app(state: ServerState, backend: Backend) -> FastAPI:
    """An app speaking the Anthropic Messages API, answering with real local models."""
    app = FastAPI()

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        body = await request.json()
        state.record(request, body)
        ok, _ = key_ok(state, request)
        if not ok:
            return _anth_error(401, "authentication_error", "invalid x-api-key")
        fault = state.next_fault()
        if fault is not None:
            if fault.kind == "hang":
                await _wait_or_disconnect(request, fault.seconds)
                fault = None
            elif (response := _fault_response_anthropic(fault)) is not None:
                return response
        model = body.get("model", "")
        if model not in CHAT_MODELS:
            return _anth_error(404, "not_found_error", f"model: {model}")
        if "max_tokens" not in body:
            return _anth_error(400, "invalid_request_error", "max_tokens: Field required")
        system = body.get("system")
        msgs = [ChatMessage(role="system", content=_text(system))] if system else []
        msgs += [
            ChatMessage(role=m["role"], content=_text(m.get("content")))
            for m in body.get("messages", [])
        ]
        stop = body.get("stop_sequences") or []
        fmt = (body.get("output_config") or {}).get("format") or {}
        # The 2.x Messages API has no sampling parameters: the model decodes greedily.
        req = ChatRequest(
            messages=msgs,
            temperature=0.0,
            max_tokens=body["max_tokens"],
            stop=stop,
            seed=None,
            json_schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
        )
        if fault is not None and fault.kind == "truncate":
            req = req.model_copy(update={"max_tokens": fault.tokens})
        local = CHAT_MODELS[model]
        try:
            prompt_tokens = await backend.prompt_tokens(local, req)
        except ContextTooLong as exc:
            return _anth_error(400, "invalid_request_error", str(exc))
        if prompt_tokens + req.max_tokens > N_CTX:
            return _anth_error(
                400,
                "invalid_request_error",
                f"prompt is too long: {prompt_tokens + req.max_tokens} tokens > {N_CTX} maximum",
            )
        msg_id = f"msg_{uuid.uuid4().hex[:24]}"
        refused = fault is not None and fault.kind == "refuse"

        def stop_reason(result: ChatResult) -> str:
            if refused:
                return "refusal"
            if result.finish_reason == "length":
                return "max_tokens"
            return "end_turn"

        if not body.get("stream") or (fault is not None and fault.kind == "json"):
            result = await backend.chat(local, req)
            return JSONResponse(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [] if refused else [{"type": "text", "text": result.text}],
                    "stop_reason": stop_reason(result),
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": result.usage.prompt_tokens,
                        "output_tokens": result.usage.completion_tokens,
                    },
                }
            )

        async def events() -> AsyncIterator[bytes]:
            stream = backend.stream(local, req)
            sent = 0
            item: tuple[str, Any] = ("start", None)
            try:
                yield _sse(
                    {
                        "type": "message_start",
                        "message": {
                            "id": msg_id,
                            "type": "message",
                            "role": "assistant",
                            "model": model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
                        },
                    },
                    "message_start",
                )
                yield _sse(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
                yield _sse({"type": "ping"}, "ping")
                async for item in stream:
                    if item[0] == "token":
                        if refused:
                            continue
                        if fault is not None and fault.kind == "cut" and sent >= fault.tokens:
                            raise CutConnection("fault injection: connection cut mid-stream")
                        if (
                            fault is not None
                            and fault.kind == "unfinished"
                            and sent >= fault.tokens
                        ):
                            item = ("ended", None)
                            return  # a clean end of the body: no message_stop
                        if fault is not None and fault.kind == "slow":
                            await asyncio.sleep(fault.seconds)
                        yield _sse(
                            {
                                "type": "content_block_delta",
                                "index": 0,
                                "delta": {"type": "text_delta", "text": item[1]},
                            },
                            "content_block_delta",
                        )
                        sent += 1
                    elif item[0] == "done":
                        result: ChatResult = item[1]
                        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
                        yield _sse(
                            {
                                "type": "message_delta",
                                "delta": {
                                    "stop_reason": stop_reason(result),
                                    "stop_sequence": None,
                                },
                                "usage": {"output_tokens": result.usage.completion_tokens},
                            },
                            "message_delta",
                        )
                        yield _sse({"type": "message_stop"}, "message_stop")
                    else:
                        raise item[1]
            finally:
                if sent and not _finished(item):
                    state.disconnects.append(time.monotonic())
                state.streamed.append(sent)
                await stream.aclose()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


# ---- running a server ---------------------------------------------------------------------------


class LocalServer:
    """An ASGI app served by uvicorn in a daemon thread on 127.0.0.1 at a free port."""

    def __init__(self, app: FastAPI, state: ServerState) -> None:
        self.app, self.state = app, state
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,  # leave the process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43117``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self._sock.close()


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers (a hung
    provider). ``accepted`` counts connections. Use as a context manager; leaving it
    closes every connection."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)  # held open, never answered

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self._conns:
            conn.close()
        self._sock.close()


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_models() -> ModelCache:
    """One model cache for the session: each real model loads once, for every server
    and every engine that uses it."""
    return ModelCache(4096)


@pytest.fixture(scope="session")
def openai_server_session(shared_models: ModelCache) -> Iterator[LocalServer]:
    state = ServerState()
    server = LocalServer(openai_app(state, Backend(shared_models)), state).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def anthropic_server_session(shared_models: ModelCache) -> Iterator[LocalServer]:
    state = ServerState()
    server = LocalServer(anthropic_app(state, Backend(shared_models)), state).start()
    yield server
    server.stop()


@pytest.fixture
def openai_server(openai_server_session: LocalServer) -> Iterator[LocalServer]:
    """The OpenAI-format server, with no faults, no key required and an empty log."""
    openai_server_session.state.reset()
    yield openai_server_session
    openai_server_session.state.reset()


@pytest.fixture
def anthropic_server(anthropic_server_session: LocalServer) -> Iterator[LocalServer]:
    """The Anthropic-format server, with no faults, no key required and an empty log."""
    anthropic_server_session.state.reset()
    yield anthropic_server_session
    anthropic_server_session.state.reset()


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A small Llama causal LM saved as a Hugging Face directory (config.json +
    safetensors), the shape a fine-tune writes; random weights, a real WordPiece
    tokenizer (from the bundled MiniLM) with a chat template. Returns (dir, parameters)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("hf") / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(BUNDLED["all-minilm-l6-v2"].path())
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, sum(p.numel() for p in model.parameters())


# ---- helpers for the tests -----------------------------------------------------------------------


def make_engine(registry: Registry, models: ModelCache) -> Engine:
    """An engine on ``FLOWBUILDER_HOME`` (set by the ``home`` fixture) that shares the
    session's loaded models."""
    settings = Settings.from_env()
    engine = Engine(registry, settings)
    engine.models = engine.scheduler.models = models
    engine.providers = engine.scheduler.providers = default_providers(settings)
    return engine


def chat_graph(
    registry: Registry, model: str, prompt: str = "Name a colour.", **params: Any
) -> Graph:
    """Text → LLM → outputs ``answer`` (text), ``json`` and ``usage``; the LLM is node 2."""
    b = GraphBuilder(registry)
    p = b.add("core/text", text=prompt)
    chat = b.add("llm/chat", model=model, **params)
    b.link(p, "text", chat, "prompt")
    for port, name in (("text", "answer"), ("json", "json"), ("usage", "usage")):
        out = b.add("core/output", name=name)
        b.link(chat, port, out, "value")
    return b.build()


def run_graph(engine: Engine, graph: Graph, **kw: Any) -> tuple[RunResult, list[Any]]:
    """Run without the cache; return the result and every event."""
    seen: list[Any] = []
    result = asyncio.run(engine.run(graph, listeners=[seen.append], use_cache=False, **kw))
    return result, seen


def starts(events: list[Any], node_id: str = "2") -> list[Any]:
    """The node_started events of one node (one per attempt)."""
    return [e for e in events if e.type == "node_started" and e.node_id == node_id]


def deltas(events: list[Any], node_id: str = "2") -> str:
    """The streamed text of a node's last attempt."""
    last = starts(events, node_id)[-1].seq
    return "".join(
        e.delta or ""
        for e in events
        if e.type == "node_progress" and e.node_id == node_id and e.seq > last
    )
