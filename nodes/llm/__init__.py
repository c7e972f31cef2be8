"""LLM nodes: chat and embeddings through the provider interface.

Both take a model id (``local:smollm2``, ``openai:gpt-4o-mini``,
``anthropic:claude-sonnet-4-5``, ``ollama:llama3.2``, a ``.gguf`` path, …; see
:mod:`flowbuilder.providers`) and, for remote providers, the *name* of a credential —
never the key itself, so graph files can be shared.
"""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import BaseModel, ValidationError

from flowbuilder.sdk import (
    ChatMessage,
    ChatRequest,
    Credential,
    EmbedRequest,
    JSONValue,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    Registry,
    RunContext,
    is_local,
)

CREDENTIAL_HELP = (
    "name of a stored secret holding the API key, scoped to the model's endpoint "
    "(`flowbuilder secrets set NAME --for ENDPOINT`); empty: the endpoint's own key, "
    "e.g. OPENAI_API_KEY, from the secret store or the environment"
)


class Chat(Node):
    """Generate text with a chat model: the bundled local SmolLM2 by default.

    Give a prompt, a list of messages ({"role", "content"}), or both (the prompt is then
    the last user message). Tokens stream as progress. Outputs the answer, in JSON mode
    (or with a JSON schema) the parsed value as ``json`` (the model gets one retry when
    its answer is not valid), and token usage ({"prompt_tokens", "completion_tokens",
    "total_tokens"}). Remote providers are retried on rate limits and server errors.
    With the same seed, model and inputs the answer is the same, so it is cached.
    """

    meta = NodeMeta(
        type="llm/chat", version="1.1.0", category="LLM", title="LLM", heavy=True, retries=3
    )

    class Inputs(BaseModel):
        prompt: str | None = Port(None, description="the user's message")
        messages: list[dict[str, Any]] | None = Port(
            None, description="earlier conversation: [{role, content}, …]"
        )
        system: str = Param("", description="system prompt", widget="textarea")
        model: str = Param(
            "local:smollm2",
            description="provider:model (local:smollm2, openai:gpt-4o-mini, "
            "anthropic:claude-sonnet-4-5, ollama:llama3.2), or a .gguf path",
            widget="model",
            model_task="chat",
            min_length=1,
        )
        credential: Credential = Param("", description=CREDENTIAL_HELP, widget="credential")
        temperature: float = Param(0.2, description="sampling temperature; 0 is greedy", ge=0, le=2)
        max_tokens: int = Param(256, description="most tokens to generate", ge=1, le=8192)
        top_p: float = Param(1.0, description="nucleus sampling mass", ge=0.01, le=1)
        stop: list[str] = Param([], description="stop generating at any of these")
        seed: int = Param(0, description="sampling seed (same seed, same answer)")
        json_mode: bool = Param(False, description="answer in JSON; the parsed value is 'json'")
        json_schema: dict[str, Any] | None = Param(
            None,
            description="a JSON Schema the answer must match (implies JSON mode)",
            widget="json",
        )
        timeout: float | None = Param(
            None,
            description="seconds a remote provider may stay silent (empty: the provider's "
            "setting, 120 s unless changed)",
            ge=0.1,
            le=3600,
        )

    with warnings.catch_warnings():
        # the output port is called 'json'; BaseModel's deprecated .json() is never used
        warnings.filterwarnings("ignore", message='Field name "json"', category=UserWarning)

        class Outputs(BaseModel):
            text: str
            usage: dict[str, int]
            json: JSONValue = None  # type: ignore[assignment]

    @classmethod
    def is_heavy(cls, inputs: Any) -> bool:
        """Only local models take the per-device limit; remote calls run side by side."""
        return is_local(inputs.model)

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        messages: list[ChatMessage] = []
        if inputs.system:
            messages.append(ChatMessage(role="system", content=inputs.system))
        try:
            messages += [ChatMessage.model_validate(m) for m in inputs.messages or []]
        except ValidationError as exc:
            raise NodeError(
                "messages must be objects with 'role' (system, user or "
                f"assistant) and 'content' text: {exc.errors()[0]['msg']}"
            ) from None
        if inputs.prompt is not None:
            messages.append(ChatMessage(role="user", content=inputs.prompt))
        if not any(m.role == "user" for m in messages):
            raise NodeError("nothing to answer: connect a prompt or messages with a user turn")
        request = ChatRequest(
            messages=messages,
            temperature=inputs.temperature,
            top_p=inputs.top_p,
            max_tokens=inputs.max_tokens,
            stop=inputs.stop,
            seed=inputs.seed,
            json_mode=inputs.json_mode,
            json_schema=inputs.json_schema,
            credential=inputs.credential or None,
            timeout_s=inputs.timeout,
        )
        count = 0

        def on_token(piece: str) -> None:
            nonlocal count
            count += 1
            ctx.progress(count / inputs.max_tokens, f"{count} tokens", delta=piece)

        value: Any = None
        if request.structured:
            structured = await ctx.providers.chat_structured(inputs.model, request, on_token)
            result, value = structured.result, structured.value
        else:
            result = await ctx.providers.chat(inputs.model, request, on_token)
        return self.Outputs(text=result.text.strip(), json=value, usage=result.usage.as_dict())


class Embed(Node):
    """Turn texts into embedding vectors: the bundled all-MiniLM-L6-v2 by default.

    Inputs: texts — a list of texts. Outputs: one vector per text (in order), their
    dimensions (384 for all-MiniLM-L6-v2), and token usage. ``normalize`` scales vectors
    to unit length, so cosine similarity is a dot product. Local models, OpenAI
    (``openai:text-embedding-3-small``) and OpenAI-compatible servers work; Anthropic
    has no embeddings.
    """

    meta = NodeMeta(
        type="llm/embed", version="1.0.0", category="LLM", title="Embed", heavy=True, retries=3
    )

    class Inputs(BaseModel):
        texts: list[str] = Port(description="texts to embed")
        model: str = Param(
            "local:all-minilm-l6-v2",
            description="provider:model (local:all-minilm-l6-v2, "
            "openai:text-embedding-3-small, ollama:nomic-embed-text) or a model directory",
            widget="model",
            model_task="embedding",
            min_length=1,
        )
        normalize: bool = Param(True, description="scale each vector to length 1")
        credential: Credential = Param("", description=CREDENTIAL_HELP, widget="credential")
        timeout: float | None = Param(
            None,
            description="seconds a remote provider may stay silent (empty: the provider's "
            "setting, 120 s unless changed)",
            ge=0.1,
            le=3600,
        )

    class Outputs(BaseModel):
        vectors: list[list[float]]
        dimensions: int
        usage: dict[str, int]

    @classmethod
    def is_heavy(cls, inputs: Any) -> bool:
        return is_local(inputs.model)

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        request = EmbedRequest(
            texts=inputs.texts,
            normalize=inputs.normalize,
            credential=inputs.credential or None,
            timeout_s=inputs.timeout,
        )

        def on_progress(done: int, total: int) -> None:
            ctx.progress(done / total if total else 1.0, f"{done}/{total} texts")

        result = await ctx.providers.embed(inputs.model, request, on_progress)
        return self.Outputs(
            vectors=result.vectors, dimensions=result.dimensions, usage=result.usage.as_dict()
        )


def register(registry: Registry) -> None:
    """Add the LLM nodes to ``registry``."""
    registry.register(Chat)
    registry.register(Embed)
