"""The provider interface: one way for every node to call a chat model.

A model id reads ``provider:model`` — ``local:smollm2``, ``local:/path/model.gguf``
(later ``openai:gpt-4o-mini``, ``anthropic:claude-sonnet-4-5``, ``ollama:llama3.2``).
A bare path or bundled name means ``local``. Providers are looked up by prefix in a
:class:`ProviderRegistry`; each implements :class:`ChatProvider`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, Field

from flowbuilder.errors import NodeError

if TYPE_CHECKING:
    from flowbuilder.context import RunContext


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """A provider-neutral chat request. ``max_tokens`` counts generated tokens."""

    messages: list[ChatMessage]
    temperature: float = Field(0.2, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = 0


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatResult(BaseModel):
    text: str
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str = "stop"
    model: str = ""


TokenCallback = Callable[[str], None]


class ChatProvider(Protocol):
    """What a chat provider implements.

    ``chat`` returns the whole answer; when ``on_token`` is given it is called with each
    piece of text as it is generated (from a worker thread for local models). It raises
    :class:`~flowbuilder.errors.NodeError` for errors the user can fix and
    :class:`~flowbuilder.errors.RetryableError` for transient ones.
    """

    name: str

    async def chat(
        self,
        ctx: RunContext,
        model: str,
        request: ChatRequest,
        on_token: TokenCallback | None = None,
    ) -> ChatResult: ...


def split_model_id(model_id: str) -> tuple[str, str]:
    """``"local:smollm2"`` → ``("local", "smollm2")``; a bare name or path → local.

    A Windows drive letter (``C:\\...``) is not taken for a provider.
    """
    prefix, sep, rest = model_id.partition(":")
    if sep and len(prefix) > 1 and "/" not in prefix and "\\" not in prefix:
        return prefix, rest
    return "local", model_id


class ProviderRegistry:
    """Chat providers by name (the prefix of a model id)."""

    def __init__(self) -> None:
        self._providers: dict[str, ChatProvider] = {}

    def add(self, provider: ChatProvider) -> None:
        self._providers[provider.name] = provider

    def resolve(self, model_id: str) -> tuple[ChatProvider, str]:
        """The provider for a model id and the model name it should use.

        Raises:
            NodeError: no provider has that name.
        """
        name, model = split_model_id(model_id)
        provider = self._providers.get(name)
        if provider is None:
            known = ", ".join(sorted(self._providers))
            raise NodeError(f"unknown model provider '{name}' in '{model_id}' (known: {known})")
        return provider, model


def default_providers() -> ProviderRegistry:
    """The providers available without configuration (the local one)."""
    from flowbuilder.providers.local import LocalProvider

    registry = ProviderRegistry()
    registry.add(LocalProvider())
    return registry
