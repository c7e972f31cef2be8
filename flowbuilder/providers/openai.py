"""The ``openai`` and ``openai_compatible`` providers, with the official ``openai`` SDK.

One class serves the OpenAI API and any server speaking its wire format (Ollama, vLLM,
LM Studio, llama.cpp server) at a configured ``base_url``. Answers always stream
(``stream_options.include_usage`` for token counts), so tokens arrive as progress and a
cancelled node closes the HTTP stream at once. Faults are mapped as described in
:mod:`flowbuilder.providers.remote`; a stream that ends without a ``finish_reason``, or a
200 answer that is not a stream, is an incomplete answer (retried, never a result).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from flowbuilder.providers import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    EmbedRequest,
    ProgressCallback,
    TokenCallback,
    Usage,
)
from flowbuilder.providers.config import Endpoint
from flowbuilder.providers.remote import (
    Deadline,
    RemoteChat,
    api_key,
    connection_error,
    incomplete_error,
    not_a_stream,
    refused_error,
    status_error,
    timeout_error,
)
from flowbuilder.secrets import SecretStore

if TYPE_CHECKING:
    from flowbuilder.providers.call import ProviderContext

EMBED_BATCH = 256


class OpenAIProvider(RemoteChat):
    """Chat and embeddings through an OpenAI-format endpoint (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, secrets: SecretStore) -> None:
        self.endpoint, self.secrets = endpoint, secrets
        self.name = endpoint.name

    @asynccontextmanager
    async def _client(self, credential: str | None, timeout_s: float | None) -> AsyncIterator[Any]:
        """A client for one call; closed (with its connections) when the call ends.

        Clients are not kept between calls: their connection pools belong to one event
        loop, and each run may use another.
        """
        import openai

        key = api_key(self.endpoint, self.secrets, credential)
        total = timeout_s or self.endpoint.timeout_s
        client = openai.AsyncOpenAI(
            api_key=key,
            base_url=self.endpoint.base_url,
            timeout=openai.Timeout(total, connect=min(total, self.endpoint.connect_timeout_s)),
            max_retries=0,
        )
        async with client:
            yield client

    @asynccontextmanager
    async def api_client(
        self, model: str, credential: str | None, timeout_s: float | None
    ) -> AsyncIterator[Any]:
        """An ``openai.AsyncOpenAI`` client for one call to another API of this endpoint
        (audio transcription, image generation), with the key chosen as for chat
        (:mod:`flowbuilder.providers.credentials`).

        SDK errors raised inside the ``async with`` body become flowbuilder's, as for chat
        (see :mod:`flowbuilder.providers.remote`): NodeError for a refused request (wrong
        key, unknown model, bad parameter), RetryableError for rate limits, server errors,
        time-outs and dropped connections. ``timeout_s`` None: the endpoint's setting.
        """
        with self._sdk_errors(model, credential, timeout_s or self.endpoint.timeout_s):
            async with self._client(credential, timeout_s) as client:
                yield client

    def _params(self, model: str, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model,
            "messages": [_message(m) for m in request.messages],
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        # OpenAI's own API takes max_completion_tokens (max_tokens is refused by its
        # reasoning models); compatible servers know max_tokens.
        if self.endpoint.kind == "openai":
            params["max_completion_tokens"] = request.max_tokens
        else:
            params["max_tokens"] = request.max_tokens
        if request.stop:
            params["stop"] = request.stop
        if request.seed is not None:
            params["seed"] = request.seed
        if request.json_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.json_schema, "strict": False},
            }
        elif request.json_mode:
            params["response_format"] = {"type": "json_object"}
        return params

    @contextlib.contextmanager
    def _sdk_errors(
        self,
        model: str,
        credential: str | None,
        timeout: float,
        streaming: Callable[[], bool] = lambda: False,
    ) -> Iterator[None]:
        """Turn the openai SDK's exceptions into flowbuilder's (see ``remote.py``):
        status codes, time-outs, dropped connections (``streaming()`` tells whether a
        stream had started) and error events inside a stream."""
        import openai

        try:
            yield
        except openai.APIStatusError as exc:
            raise status_error(
                self.endpoint,
                model,
                exc.status_code,
                exc.body,
                exc.response.headers,
                exc.message,
                credential,
            ) from None
        except openai.APITimeoutError:
            raise timeout_error(self.endpoint, model, timeout) from None
        except openai.APIConnectionError as exc:
            raise connection_error(self.endpoint, model, exc, streaming=streaming()) from None
        except openai.APIError as exc:  # an error event inside a stream
            raise status_error(
                self.endpoint, model, 500, exc.body, None, exc.message, credential
            ) from None

    async def _chat(
        self,
        model: str,
        request: ChatRequest,
        on_token: TokenCallback | None,
        deadline: Deadline,
    ) -> ChatResult:
        timeout = deadline.timeout(request.timeout_s or self.endpoint.timeout_s)
        pieces: list[str] = []
        refusal: list[str] = []
        usage = Usage()
        finish: str | None = None
        chunks = 0
        answered_by = model
        started = False
        errors = self._sdk_errors(model, request.credential, timeout, lambda: started)
        with errors:
            async with self._client(request.credential, timeout) as client:
                stream = await client.chat.completions.create(
                    **self._params(model, request),
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async with stream:
                    wrong = not_a_stream(
                        self.endpoint, model, stream.response.headers.get("content-type", "")
                    )
                    if wrong is not None:
                        raise wrong
                    async for chunk in stream:
                        started = True
                        chunks += 1
                        answered_by = chunk.model or answered_by
                        if chunk.usage is not None:
                            usage = Usage(
                                prompt_tokens=chunk.usage.prompt_tokens or 0,
                                completion_tokens=chunk.usage.completion_tokens or 0,
                            )
                        if not chunk.choices:
                            continue
                        choice = chunk.choices[0]
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        delta = choice.delta
                        if getattr(delta, "refusal", None):
                            refusal.append(delta.refusal)
                        if delta.content:
                            pieces.append(delta.content)
                            if on_token is not None:
                                on_token(delta.content)
        if refusal:
            raise refused_error(self.endpoint, model, "".join(refusal))
        if finish is None:
            raise incomplete_error(self.endpoint, model, f"no finish_reason after {chunks} chunks")
        if finish == "content_filter":
            raise refused_error(self.endpoint, model, "its content filter stopped the answer")
        if usage.completion_tokens == 0 and pieces:
            usage = Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=len(pieces))
        return ChatResult(
            text="".join(pieces), usage=usage, finish_reason=finish, model=answered_by
        )

    async def embed(
        self,
        ctx: ProviderContext,
        model: str,
        request: EmbedRequest,
        on_progress: ProgressCallback | None = None,
    ) -> EmbeddingResult:
        deadline = Deadline(ctx, self.endpoint, model)
        vectors: list[list[float]] = []
        tokens = 0
        total = len(request.texts)
        async with deadline.bound():
            timeout = deadline.timeout(request.timeout_s or self.endpoint.timeout_s)
            with self._sdk_errors(model, request.credential, timeout):
                async with self._client(request.credential, timeout) as client:
                    for start in range(0, total, EMBED_BATCH):
                        ctx.check_cancelled()
                        batch = request.texts[start : start + EMBED_BATCH]
                        response = await client.embeddings.create(
                            model=model, input=batch, encoding_format="float"
                        )
                        data = sorted(response.data, key=lambda d: d.index)
                        vectors.extend(list(map(float, d.embedding)) for d in data)
                        if response.usage is not None:
                            tokens += response.usage.prompt_tokens or 0
                        if on_progress is not None:
                            on_progress(min(start + EMBED_BATCH, total), total)
        if request.normalize:
            vectors = [_unit(v) for v in vectors]
        dims = len(vectors[0]) if vectors else 0
        return EmbeddingResult(
            vectors=vectors, dimensions=dims, usage=Usage(prompt_tokens=tokens), model=model
        )

    async def list_models(self, credential: str | None = None) -> list[str]:
        """The model ids the endpoint offers (``GET /models``), sorted.

        Raises the same errors as :meth:`chat` (e.g. NodeError for a wrong key).
        """

        with self._sdk_errors("*", credential, self.endpoint.timeout_s):
            async with self._client(credential, None) as client:
                return sorted([m.id async for m in client.models.list()])


def _message(message: ChatMessage) -> dict[str, Any]:
    """A message in the wire format; one with images gets text and ``image_url`` parts."""
    if not message.images:
        return message.model_dump()
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in message.images]
    return {"role": message.role, "content": parts}


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector
