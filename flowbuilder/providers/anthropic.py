"""The ``anthropic`` provider: the Messages API with the official ``anthropic`` SDK.

System messages become the ``system`` field; consecutive turns of one role are merged
(the API wants user and assistant turns to alternate). Answers always stream (SSE
events ``message_start`` … ``message_stop``), so tokens arrive as progress and a
cancelled node closes the stream at once. A JSON schema is sent as the API's
structured-output format (``output_config.format``). The Messages API of the 2.x SDK
takes no sampling parameters: ``temperature``, ``top_p`` and ``seed`` are not sent. It
has no embeddings. Faults are mapped as described in :mod:`flowbuilder.providers.remote`;
a ``refusal`` stop reason is a refused request; a stream without ``message_stop`` is an
incomplete answer (retried, never a result).
"""

from __future__ import annotations

from typing import Any

from flowbuilder.providers import ChatRequest, ChatResult, TokenCallback, Usage
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

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def to_messages(request: ChatRequest) -> tuple[str, list[dict[str, str]]]:
    """``(system, messages)`` in the Messages API's shape."""
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    turns: list[dict[str, str]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        if turns and turns[-1]["role"] == m.role:
            turns[-1]["content"] += "\n\n" + m.content
        else:
            turns.append({"role": m.role, "content": m.content})
    return system, turns


class AnthropicProvider(RemoteChat):
    """Chat through an Anthropic Messages API endpoint (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, secrets: SecretStore) -> None:
        self.endpoint, self.secrets = endpoint, secrets
        self.name = endpoint.name

    def _params(self, model: str, request: ChatRequest) -> dict[str, Any]:
        system, messages = to_messages(request)
        params: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "messages": messages,
        }
        if system:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = request.stop
        if request.json_schema is not None:
            params["output_config"] = {
                "format": {"type": "json_schema", "schema": request.json_schema}
            }
        return params

    async def _chat(
        self,
        model: str,
        request: ChatRequest,
        on_token: TokenCallback | None,
        deadline: Deadline,
    ) -> ChatResult:
        import anthropic
        import httpx2

        params = self._params(model, request)
        key = api_key(self.endpoint, self.secrets, request.credential)
        timeout = deadline.timeout(request.timeout_s or self.endpoint.timeout_s)
        pieces: list[str] = []
        prompt_tokens = completion_tokens = 0
        stop_reason: str | None = None
        stopped = False
        events = 0
        answered_by = model
        started = False
        client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=self.endpoint.base_url,
            timeout=anthropic.Timeout(
                timeout, connect=min(timeout, self.endpoint.connect_timeout_s)
            ),
            max_retries=0,
        )
        try:
            async with client:
                stream = await client.messages.create(**params, stream=True)
                async with stream:
                    wrong = not_a_stream(
                        self.endpoint, model, stream.response.headers.get("content-type", "")
                    )
                    if wrong is not None:
                        raise wrong
                    async for event in stream:
                        started = True
                        events += 1
                        if event.type == "message_stop":
                            stopped = True
                        elif event.type == "message_start":
                            answered_by = event.message.model or answered_by
                            prompt_tokens = event.message.usage.input_tokens or 0
                        elif event.type == "content_block_delta":
                            text = getattr(event.delta, "text", None)
                            if text:
                                pieces.append(text)
                                if on_token is not None:
                                    on_token(text)
                        elif event.type == "message_delta":
                            stop_reason = event.delta.stop_reason or stop_reason
                            completion_tokens = event.usage.output_tokens or completion_tokens
        except anthropic.APIStatusError as exc:
            raise status_error(
                self.endpoint,
                model,
                exc.status_code,
                exc.body,
                exc.response.headers,
                exc.message,
                request.credential,
            ) from None
        except (anthropic.APITimeoutError, httpx2.TimeoutException):
            raise timeout_error(self.endpoint, model, timeout) from None
        except (anthropic.APIConnectionError, httpx2.TransportError) as exc:
            raise connection_error(self.endpoint, model, exc, streaming=started) from None
        if stop_reason == "refusal":
            raise refused_error(self.endpoint, model, "stop reason 'refusal'")
        if not stopped:
            raise incomplete_error(self.endpoint, model, f"no message_stop after {events} events")
        return ChatResult(
            text="".join(pieces),
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            finish_reason=_FINISH.get(stop_reason or "", stop_reason or "stop"),
            model=answered_by,
        )
