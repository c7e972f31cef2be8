"""OpenAI media APIs (audio transcription, image generation) for the media nodes.

The client, the credential lookup and the fault mapping are the chat provider's
(:class:`flowbuilder.providers.openai.OpenAIProvider`): a model id such as
``openai:whisper-1`` or ``myserver:dall-e-3`` names an endpoint from ``providers.json``
(or a built-in one), its key comes from the secret store or the environment, and HTTP
errors become the same :class:`~flowbuilder.errors.NodeError` /
:class:`~flowbuilder.errors.RetryableError` sentences (see
:mod:`flowbuilder.providers.remote`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from flowbuilder.errors import NodeError
from flowbuilder.providers import split_model_id

if TYPE_CHECKING:
    from flowbuilder.context import RunContext

LOCAL_PREFIXES = ("local", "bundled")


def is_remote(model_id: str) -> bool:
    """Whether ``model_id`` names a remote endpoint (``openai:whisper-1``), not a local
    model (``bundled:tiny.en``, ``local:/path``, a bare path)."""
    return split_model_id(model_id)[0] not in LOCAL_PREFIXES


@asynccontextmanager
async def openai_client(
    ctx: RunContext, model_id: str, credential: str | None, timeout_s: float | None, what: str
) -> AsyncIterator[tuple[Any, str]]:
    """``(client, model)`` for one call to an OpenAI-format endpoint; SDK errors raised
    inside the ``async with`` body are mapped to flowbuilder's errors.

    ``what`` names the API for messages ("transcription", "image generation").

    Raises:
        NodeError: unknown endpoint, an Anthropic endpoint (it has no such API), missing
            key, or a refused request (wrong key, unknown model, bad parameter).
        RetryableError: rate limits, server errors, timeouts, dropped connections.
    """
    import openai

    from flowbuilder.providers.openai import OpenAIProvider
    from flowbuilder.providers.remote import connection_error, status_error, timeout_error

    provider, model = ctx.providers.resolve(model_id)
    if not isinstance(provider, OpenAIProvider):
        raise NodeError(
            f"provider '{provider.name}' has no {what} API; use an OpenAI endpoint "
            "(e.g. openai:...) or a local model"
        )
    endpoint = provider.endpoint
    try:
        async with provider._client(credential, timeout_s) as client:
            yield client, model
    except openai.APIStatusError as exc:
        raise status_error(
            endpoint,
            model,
            exc.status_code,
            exc.body,
            exc.response.headers,
            exc.message,
            credential,
        ) from None
    except openai.APITimeoutError:
        raise timeout_error(endpoint, model, timeout_s or endpoint.timeout_s) from None
    except openai.APIConnectionError as exc:
        raise connection_error(endpoint, model, exc, streaming=False) from None
