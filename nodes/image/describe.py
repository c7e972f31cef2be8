"""Image to text: ask a vision-capable chat model about an image.

The image goes to the model through the provider interface as a data URL on the user
message (:attr:`flowbuilder.providers.ChatMessage.images`); OpenAI-format providers send
it as an ``image_url`` content part (OpenAI ``gpt-4o-mini``/``gpt-4o``, or a vision
model on Ollama, vLLM or LM Studio such as ``ollama:llava``).
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel

from flowbuilder.sdk import (
    ChatMessage,
    ChatRequest,
    Credential,
    ImageRef,
    Node,
    NodeError,
    NodeMeta,
    Param,
    Port,
    RunContext,
    is_local,
)

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""OpenAI's limit for one image in a chat request (20 MB)."""


class ImageToText(Node):
    """Describe an image, or answer a question about it, with a vision-capable chat model.

    Outputs the model's answer as text and its token usage. Raises NodeError for a model
    that cannot take images (the bundled local models and the Anthropic provider here),
    an image over 20 MB, or the provider's errors (wrong key, unknown model).
    """

    meta = NodeMeta(
        type="image/to_text", version="1.0.0", category="Image", title="Image to Text", retries=3
    )

    class Inputs(BaseModel):
        image: ImageRef = Port(description="the image to look at")
        prompt: str = Param(
            "Describe this image in one paragraph.",
            description="what to ask about the image",
            widget="textarea",
            min_length=1,
        )
        model: str = Param(
            "openai:gpt-4o-mini",
            description="a vision chat model: openai:gpt-4o-mini, ollama:llava, …",
            widget="model",
            model_task="chat",
            min_length=1,
        )
        credential: Credential = Param(
            "",
            description="name of the secret holding the API key (empty: the provider's default)",
            widget="credential",
        )
        max_tokens: int = Param(300, description="most tokens to generate", ge=1, le=8192)
        temperature: float = Param(0.2, description="sampling temperature", ge=0, le=2)
        timeout: float | None = Param(
            None, description="seconds a remote provider may stay silent", ge=0.1, le=3600
        )

    class Outputs(BaseModel):
        text: str
        usage: dict[str, int]

    @classmethod
    def is_heavy(cls, inputs: Any) -> bool:
        return is_local(inputs.model)

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        if not ctx.providers.takes_images(inputs.model):
            raise NodeError(
                f"'{inputs.model}' cannot take images here: use a vision model on an "
                "OpenAI-format provider (openai:gpt-4o-mini, or ollama:llava on a local "
                "Ollama)"
            )
        path = ctx.artifacts.path(inputs.image)
        data = await ctx.to_thread(path.read_bytes)
        if len(data) > MAX_IMAGE_BYTES:
            raise NodeError(
                f"the image is {len(data) / 1e6:.1f} MB; vision models take at most 20 MB "
                "(shrink it with a Resize/Crop node)"
            )
        mime = inputs.image.mime if inputs.image.mime.startswith("image/") else "image/png"
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        request = ChatRequest(
            messages=[ChatMessage(role="user", content=inputs.prompt, images=[url])],
            temperature=inputs.temperature,
            max_tokens=inputs.max_tokens,
            credential=inputs.credential or None,
            timeout_s=inputs.timeout,
        )
        count = 0

        def on_token(piece: str) -> None:
            nonlocal count
            count += 1
            ctx.progress(count / inputs.max_tokens, f"{count} tokens", delta=piece)

        result = await ctx.providers.chat(inputs.model, request, on_token)
        return self.Outputs(text=result.text.strip(), usage=result.usage.as_dict())
