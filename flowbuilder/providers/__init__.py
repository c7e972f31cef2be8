"""The provider interface: one way for every node to call a chat or embedding model.

A model id reads ``provider:model``:

- ``local:smollm2``, ``local:/path/model.gguf``, ``local:/path/hf-model-dir``,
  ``local:my-finetune`` (a name under ``FLOWBUILDER_HOME/models``),
  ``local:all-minilm-l6-v2`` (embeddings) — run in this process (:mod:`.local`);
- ``openai:gpt-4o-mini`` — the OpenAI API, official ``openai`` SDK (:mod:`.openai`);
- ``anthropic:claude-sonnet-4-5`` — the Anthropic API, official ``anthropic`` SDK
  (:mod:`.anthropic`);
- ``ollama:llama3.2`` — a named OpenAI-compatible endpoint (Ollama, vLLM, LM Studio,
  llama.cpp server), official ``openai`` SDK with a ``base_url`` (:mod:`.config`).

A bare path or bundled name means ``local``. Providers are looked up by prefix in a
:class:`ProviderRegistry`; each implements :class:`ChatProvider` and, where the service
has them, :class:`EmbeddingProvider`. :func:`chat_structured` adds structured output
(a JSON Schema in, validated JSON out, one retry) on top of any chat provider.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from flowbuilder.errors import NodeError
from flowbuilder.providers.call import CallContext, PathCheck, ProviderContext

if TYPE_CHECKING:
    from flowbuilder.settings import Settings


class ChatMessage(BaseModel):
    """One turn. ``images`` (optional) are image data URLs
    (``data:image/png;base64,…``) for vision models; only OpenAI-format providers send
    them, and ``model_dump()`` leaves them out so text-only providers are unchanged."""

    role: Literal["system", "user", "assistant"]
    content: str
    images: list[str] = Field(default_factory=list, exclude=True)


class ChatRequest(BaseModel):
    """A provider-neutral chat request. ``max_tokens`` counts generated tokens.

    ``json_mode`` asks for a JSON answer and ``json_schema`` for one matching that
    JSON Schema (providers use their native JSON mode where they have one: OpenAI's
    ``response_format``, a llama.cpp grammar); :func:`chat_structured` checks the answer.
    ``credential`` names the secret holding the API key (None: the provider's default).
    ``timeout_s`` bounds the wait for a remote answer between bytes (None: the
    endpoint's setting).
    """

    messages: list[ChatMessage]
    temperature: float = Field(0.2, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = 0
    json_mode: bool = False
    json_schema: dict[str, Any] | None = None
    credential: str | None = None
    timeout_s: float | None = Field(None, gt=0)

    @property
    def structured(self) -> bool:
        return self.json_mode or self.json_schema is not None


class Usage(BaseModel):
    """Token counts of one call (or the sum of several: ``a + b``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


class ChatResult(BaseModel):
    """An answer: its text, token usage, why it stopped (``stop``, ``length``, …) and
    the model that answered (as the provider names it)."""

    text: str
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str = "stop"
    model: str = ""


class EmbedRequest(BaseModel):
    """Texts to embed. ``normalize`` scales each vector to unit length (cosine = dot)."""

    texts: list[str]
    normalize: bool = True
    credential: str | None = None
    timeout_s: float | None = Field(None, gt=0)


class EmbeddingResult(BaseModel):
    """One vector per text, in order; ``dimensions`` is their length."""

    vectors: list[list[float]]
    dimensions: int
    usage: Usage = Field(default_factory=Usage)
    model: str = ""


TokenCallback = Callable[[str], None]
ProgressCallback = Callable[[int, int], None]
"""Called with ``(done, total)`` as an embedding batch finishes."""


class ContextTooLong(NodeError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""

    def __init__(self, message: str, *, prompt_tokens: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.prompt_tokens, self.limit = prompt_tokens, limit


@runtime_checkable
class ChatProvider(Protocol):
    """What a chat provider implements.

    ``chat`` returns the whole answer; when ``on_token`` is given it is called with each
    piece of text as it is generated (from a worker thread for local models, on the
    event loop for remote ones). ``ctx`` is what the provider sees of its caller
    (:class:`~flowbuilder.providers.call.ProviderContext`). Cancelling the awaiting task
    (or ``ctx`` being cancelled) stops generation and closes any stream at once. It raises
    :class:`~flowbuilder.errors.NodeError` for errors the user can fix and
    :class:`~flowbuilder.errors.RetryableError` for transient ones (the scheduler retries
    those with back-off, honouring ``retry_after``).
    """

    name: str

    async def chat(
        self,
        ctx: ProviderContext,
        model: str,
        request: ChatRequest,
        on_token: TokenCallback | None = None,
    ) -> ChatResult: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """A provider that also turns texts into vectors (same errors as :class:`ChatProvider`)."""

    name: str

    async def embed(
        self,
        ctx: ProviderContext,
        model: str,
        request: EmbedRequest,
        on_progress: ProgressCallback | None = None,
    ) -> EmbeddingResult: ...


class ProviderSource(Protocol):
    """Providers made on demand (e.g. from the endpoints in ``providers.json``)."""

    def get(self, name: str) -> ChatProvider | None: ...

    def names(self) -> list[str]: ...


def split_model_id(model_id: str) -> tuple[str, str]:
    """``"local:smollm2"`` → ``("local", "smollm2")``; a bare name or path → local.

    A Windows drive letter (``C:\\...``) is not taken for a provider.
    """
    prefix, sep, rest = model_id.partition(":")
    if sep and len(prefix) > 1 and "/" not in prefix and "\\" not in prefix:
        return prefix, rest
    return "local", model_id


def is_local(model_id: str) -> bool:
    """Whether a model id runs in this process (its work takes the per-device limit)."""
    return split_model_id(model_id)[0] == "local"


def is_remote(model_id: str) -> bool:
    """Whether ``model_id`` names a remote endpoint (``openai:whisper-1``), not a local
    model (``bundled:tiny.en``, ``local:/path``, a bare path) — for the media nodes,
    whose local models are not the provider interface's."""
    return split_model_id(model_id)[0] not in ("local", "bundled")


class ProviderRegistry:
    """Chat and embedding providers by name (the prefix of a model id).

    Fixed providers come from :meth:`add`; sources (:meth:`add_source`) make providers
    on demand, so endpoints added while a server runs are found without a restart.
    """

    def __init__(self) -> None:
        self._providers: dict[str, ChatProvider] = {}
        self._sources: list[ProviderSource] = []

    def add(self, provider: ChatProvider) -> None:
        self._providers[provider.name] = provider

    def add_source(self, source: ProviderSource) -> None:
        self._sources.append(source)

    def get(self, name: str) -> ChatProvider | None:
        provider = self._providers.get(name)
        if provider is None:
            for source in self._sources:
                provider = source.get(name)
                if provider is not None:
                    break
        return provider

    def names(self) -> list[str]:
        """Every provider name, fixed ones first."""
        names = list(self._providers)
        for source in self._sources:
            names += [n for n in source.names() if n not in names]
        return names

    def resolve(self, model_id: str) -> tuple[ChatProvider, str]:
        """The provider for a model id and the model name it should use.

        Raises:
            NodeError: no provider has that name, or the id names no model.
        """
        name, model = split_model_id(model_id)
        provider = self.get(name)
        if provider is None:
            known = ", ".join(sorted(self.names()))
            raise NodeError(
                f"unknown model provider '{name}' in '{model_id}' (known: {known}); add an "
                f"OpenAI-compatible server with `flowbuilder providers add-endpoint {name} URL`"
            )
        if not model.strip():
            raise NodeError(f"model id '{model_id}' names no model: write {name}:MODEL")
        return provider, model

    def resolve_embedder(self, model_id: str) -> tuple[EmbeddingProvider, str]:
        """Like :meth:`resolve`, for a provider that makes embeddings.

        Raises:
            NodeError: unknown provider, or one without embeddings (Anthropic).
        """
        provider, model = self.resolve(model_id)
        if not isinstance(provider, EmbeddingProvider):
            raise NodeError(
                f"provider '{provider.name}' has no embeddings API; use e.g. "
                "local:all-minilm-l6-v2 or openai:text-embedding-3-small"
            )
        return provider, model


def default_providers(settings: Settings | None = None) -> ProviderRegistry:
    """Every configured provider: ``local``, plus one per endpoint in effect
    (``openai``, ``anthropic``, ``ollama`` and those in ``providers.json``).

    Secrets come from the store in ``settings.home`` (or the environment). Also
    installs log redaction of secret values for the whole process
    (:func:`flowbuilder.secrets.install_log_redaction`).
    """
    from flowbuilder.providers.config import ProviderConfig
    from flowbuilder.providers.local import LocalProvider
    from flowbuilder.providers.remote import RemoteProviders
    from flowbuilder.secrets import SecretStore, install_log_redaction
    from flowbuilder.settings import Settings

    settings = settings or Settings.from_env()
    install_log_redaction()
    registry = ProviderRegistry()
    registry.add(LocalProvider(models_dir=settings.home / "models"))
    registry.add_source(RemoteProviders(ProviderConfig(settings.home), SecretStore(settings.home)))
    return registry


from flowbuilder.providers.structured import (  # noqa: E402  (needs the classes above)
    StructuredResult,
    chat_structured,
    parse_json_answer,
    validate_json,
)

__all__ = [
    "CallContext",
    "ChatMessage",
    "ChatProvider",
    "ChatRequest",
    "ChatResult",
    "ContextTooLong",
    "EmbedRequest",
    "EmbeddingProvider",
    "EmbeddingResult",
    "PathCheck",
    "ProgressCallback",
    "ProviderContext",
    "ProviderRegistry",
    "ProviderSource",
    "StructuredResult",
    "TokenCallback",
    "Usage",
    "chat_structured",
    "default_providers",
    "is_local",
    "is_remote",
    "parse_json_answer",
    "split_model_id",
    "validate_json",
]
