"""LLM nodes: chat with a model through the provider interface."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from flowbuilder.context import RunContext
from flowbuilder.errors import NodeError
from flowbuilder.node import Node, NodeMeta, Param, Port
from flowbuilder.providers import ChatMessage, ChatRequest
from flowbuilder.registry import Registry


class Chat(Node):
    """Generate text with a chat model: the bundled local SmolLM2 by default.

    Give a prompt, a list of messages ({"role", "content"}), or both (the prompt is then
    the last user message). Tokens stream as progress. Outputs the answer and token usage
    ({"prompt_tokens", "completion_tokens"}). With the same seed, model and inputs the
    answer is the same, so it is cached.
    """

    meta = NodeMeta(type="llm/chat", version="1.0.0", category="LLM", title="LLM", heavy=True)

    class Inputs(BaseModel):
        prompt: str | None = Port(None, description="the user's message")
        messages: list[dict[str, Any]] | None = Port(
            None, description="earlier conversation: [{role, content}, …]"
        )
        system: str = Param("", description="system prompt", widget="textarea")
        model: str = Param(
            "local:smollm2",
            description="provider:model, or a .gguf path",
            widget="model",
            min_length=1,
        )
        temperature: float = Param(0.2, description="sampling temperature; 0 is greedy", ge=0, le=2)
        max_tokens: int = Param(256, description="most tokens to generate", ge=1, le=8192)
        top_p: float = Param(1.0, description="nucleus sampling mass", ge=0.01, le=1)
        stop: list[str] = Param([], description="stop generating at any of these")
        seed: int = Param(0, description="sampling seed (same seed, same answer)")

    class Outputs(BaseModel):
        text: str
        usage: dict[str, int]

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
        )
        provider, model = ctx.providers.resolve(inputs.model)
        count = 0

        def on_token(piece: str) -> None:
            nonlocal count
            count += 1
            ctx.progress(count / inputs.max_tokens, f"{count} tokens", delta=piece)

        result = await provider.chat(ctx, model, request, on_token)
        usage = {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
        }
        return self.Outputs(text=result.text.strip(), usage=usage)


def register(registry: Registry) -> None:
    """Add the LLM nodes to ``registry``."""
    registry.register(Chat)
