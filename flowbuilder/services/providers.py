"""``ctx.providers``: models behind the provider interface, by model id.

A model id reads ``provider:model`` (``local:smollm2``, ``openai:gpt-4o-mini``,
``anthropic:claude-sonnet-4-5``, ``ollama:llama3.2``; a bare name or path is ``local``;
see :mod:`flowbuilder.providers`). The service resolves the id, hands the provider only
what it needs of the calling node (:class:`~flowbuilder.providers.call.ProviderContext`)
and returns the provider's answer; errors are the providers' own
(:class:`~flowbuilder.errors.NodeError` for what a user can fix,
:class:`~flowbuilder.errors.RetryableError` for transient faults, which the scheduler
retries).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from flowbuilder.errors import NodeError

if TYPE_CHECKING:
    from flowbuilder.providers import (
        ChatRequest,
        ChatResult,
        EmbeddingResult,
        EmbedRequest,
        ProgressCallback,
        ProviderContext,
        ProviderRegistry,
        StructuredResult,
        TokenCallback,
    )


class ProviderService:
    """Chat, structured chat, embeddings and an endpoint's other APIs for one node
    execution (``ctx.providers``)."""

    def __init__(self, registry: ProviderRegistry, caller: ProviderContext) -> None:
        self._registry, self._caller = registry, caller

    async def chat(
        self, model_id: str, request: ChatRequest, on_token: TokenCallback | None = None
    ) -> ChatResult:
        """The model's answer; ``on_token`` gets each piece of text as it is generated
        (from a worker thread for local models).

        Raises:
            NodeError: an unknown provider or model, a refused request (wrong key, too
                long a prompt: :class:`~flowbuilder.providers.ContextTooLong`).
            RetryableError: rate limits, server errors, dropped connections.
        """
        provider, model = self._registry.resolve(model_id)
        return await provider.chat(self._caller, model, request, on_token)

    async def chat_structured(
        self, model_id: str, request: ChatRequest, on_token: TokenCallback | None = None
    ) -> StructuredResult:
        """A JSON answer matching ``request.json_schema`` (any JSON object when only
        ``json_mode`` is set), asking once more when the first does not parse or match
        (see :func:`flowbuilder.providers.chat_structured`).

        Raises:
            NodeError: as :meth:`chat`, or the retry's answer is not valid either.
        """
        from flowbuilder.providers import chat_structured

        provider, model = self._registry.resolve(model_id)
        return await chat_structured(
            provider, self._caller, model, request, on_token, model_id=model_id
        )

    async def embed(
        self, model_id: str, request: EmbedRequest, on_progress: ProgressCallback | None = None
    ) -> EmbeddingResult:
        """One vector per text, in order; ``on_progress(done, total)`` as batches finish.

        Raises:
            NodeError: an unknown provider or model, or a provider without embeddings
                (Anthropic).
            RetryableError: as :meth:`chat`.
        """
        provider, model = self._registry.resolve_embedder(model_id)
        return await provider.embed(self._caller, model, request, on_progress)

    def takes_images(self, model_id: str) -> bool:
        """Whether ``model_id``'s provider sends images with a chat message
        (:attr:`~flowbuilder.providers.ChatMessage.images`): the OpenAI-format ones.

        Raises:
            NodeError: an unknown provider, or an id that names no model.
        """
        from flowbuilder.providers.openai import OpenAIProvider

        provider, _model = self._registry.resolve(model_id)
        return isinstance(provider, OpenAIProvider)

    @asynccontextmanager
    async def openai_api(
        self, model_id: str, credential: str | None, timeout_s: float | None, what: str
    ) -> AsyncIterator[tuple[Any, str]]:
        """``(client, model)``: an ``openai.AsyncOpenAI`` client for one call to an
        OpenAI-format endpoint's other APIs (``client.audio``, ``client.images``), and the
        model name to send. The key is chosen as for chat (``credential``: a secret's
        name, None for the endpoint's own); SDK errors inside the ``async with`` body
        become flowbuilder's, as for chat. ``what`` names the API in messages
        ("transcription", "image generation").

        Raises:
            NodeError: unknown endpoint, an endpoint that is not OpenAI-format (it has no
                such API), a missing key, or a refused request.
            RetryableError: rate limits, server errors, time-outs, dropped connections.
        """
        from flowbuilder.providers.openai import OpenAIProvider

        provider, model = self._registry.resolve(model_id)
        if not isinstance(provider, OpenAIProvider):
            raise NodeError(
                f"provider '{provider.name}' has no {what} API; use an OpenAI endpoint "
                "(e.g. openai:...) or a local model"
            )
        async with provider.api_client(model, credential, timeout_s) as client:
            yield client, model
