"""What the remote providers share: endpoints as providers, and faults.

API keys and their scopes are decided in :mod:`flowbuilder.providers.credentials`
(``api_key`` is re-exported here for the providers).

Fault handling (the same for OpenAI, Anthropic and OpenAI-compatible servers):

- the SDKs' own retries are off (``max_retries=0``); a transient fault raises
  :class:`~flowbuilder.errors.RetryableError` and the scheduler retries the node with
  exponential back-off and full jitter, or after the ``Retry-After`` the server gave
  (``retry-after-ms`` or ``retry-after`` in seconds or as an HTTP date) — so every retry
  is an event (``node_started`` with ``attempt``) a user sees;
- transient: HTTP 408, 409, 429 (not ``insufficient_quota``), 5xx (and Anthropic's 529
  "overloaded"), connection refused or dropped (also in the middle of a stream),
  connect/read timeouts, and an incomplete answer (:func:`incomplete_error`: a stream that
  ends without its finish reason or ``message_stop``, or a 200 answer to a streaming call
  that is not a stream) — never a finished, cached result;
- not retried: 400, 401, 403, 404, 413, 422 — each with a sentence saying what to do
  (wrong key, unknown model, prompt too long, refused request);
- a ``Retry-After`` longer than :data:`MAX_RETRY_AFTER_S` is not waited for;
- one deadline spans a node's attempts (:class:`Deadline`: ``FLOWBUILDER_REMOTE_DEADLINE_S``,
  default 120 s, from the node's first attempt): each attempt waits at most what is left of
  it (or the node's own ``timeout``, the endpoint's ``timeout_s`` when unset, if smaller),
  and a transient fault once it is spent, or whose ``Retry-After`` it would not leave
  time for, fails the node at once with a message naming the endpoint and the deadline —
  so a provider that accepts the connection and never answers fails in about the
  deadline, not in four read timeouts plus back-off.

Every message goes through :func:`flowbuilder.secrets.redact`.
"""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from flowbuilder.errors import NodeError, RetryableError
from flowbuilder.providers import (
    ChatProvider,
    ChatRequest,
    ChatResult,
    ContextTooLong,
    TokenCallback,
)
from flowbuilder.providers.config import Endpoint, ProviderConfig
from flowbuilder.providers.credentials import api_key as api_key  # used by the providers
from flowbuilder.providers.credentials import endpoint_keys
from flowbuilder.secrets import SecretStore, redact

if TYPE_CHECKING:
    from flowbuilder.providers.call import ProviderContext

MAX_RETRY_AFTER_S = 60.0
MIN_ATTEMPT_S = 0.05
"""An attempt is not started with less than this left of the deadline."""

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "too many tokens",
    "input is too long",
)


class RemoteProviders:
    """A :class:`~flowbuilder.providers.ProviderSource`: one provider per endpoint in
    effect, rebuilt when the endpoint's settings change."""

    def __init__(self, config: ProviderConfig, secrets: SecretStore) -> None:
        self.config, self.secrets = config, secrets
        self._cache: dict[str, tuple[Endpoint, ChatProvider]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self.config.endpoints())

    def get(self, name: str) -> ChatProvider | None:
        endpoint = self.config.get(name)
        if endpoint is None:
            return None
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == endpoint:
                return cached[1]
            provider: ChatProvider
            if endpoint.kind == "anthropic":
                from flowbuilder.providers.anthropic import AnthropicProvider

                provider = AnthropicProvider(endpoint, self.secrets)
            else:
                from flowbuilder.providers.openai import OpenAIProvider

                provider = OpenAIProvider(endpoint, self.secrets)
            self._cache[name] = (endpoint, provider)
            return provider


class Deadline:
    """The overall deadline of one node's calls to an endpoint, across its retries.

    ``ctx.settings.remote_deadline_s`` seconds (``FLOWBUILDER_REMOTE_DEADLINE_S``) from
    ``ctx.started_at``, the node's first attempt. Use :meth:`timeout` for the SDK's
    timeout of an attempt and :meth:`bound` around the attempt.
    """

    def __init__(self, ctx: ProviderContext, endpoint: Endpoint, model: str) -> None:
        self.total = ctx.settings.remote_deadline_s
        self.end = ctx.started_at + self.total
        self.endpoint, self.model = endpoint, model

    def left(self) -> float:
        """Seconds left (negative once past)."""
        return self.end - time.time()

    def timeout(self, per_attempt: float) -> float:
        """Seconds this attempt may wait: ``per_attempt``, or what is left if less.

        Raises:
            NodeError: (not retried) the deadline is spent.
        """
        left = self.left()
        if left < MIN_ATTEMPT_S:
            raise self.spent(None)
        return min(per_attempt, left)

    def spent(self, last: str | None) -> NodeError:
        """The final error once the deadline is spent; ``last``: the last fault seen."""
        why = f"; the last attempt: {last}" if last else ""
        return NodeError(
            redact(
                f"{self.endpoint.label} gave no complete answer for model '{self.model}' "
                f"within the remote deadline of {self.total:g} s "
                f"(FLOWBUILDER_REMOTE_DEADLINE_S, across retries){why}"
            )
        )

    @asynccontextmanager
    async def bound(self) -> AsyncIterator[None]:
        """Bound one attempt by what is left. A transient fault raised inside becomes
        final (:meth:`spent`) when no retry could start in time; so does the deadline
        passing in the middle of the attempt.

        Raises:
            NodeError: the deadline is spent (not retried).
            RetryableError: a transient fault, with time left to retry.
        """
        limit: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout(self.timeout(float("inf"))) as limit:
                yield
        except TimeoutError:
            if limit is None or not limit.expired():
                raise
            raise self.spent("no answer yet") from None
        except RetryableError as err:
            left = self.left()
            if left < MIN_ATTEMPT_S or (err.retry_after or 0.0) >= left:
                raise self.spent(str(err)) from None
            raise


class RemoteChat:
    """The chat entry point of the remote providers: each call runs under one
    :class:`Deadline` (shared by the node's retries); a provider implements ``_chat``."""

    endpoint: Endpoint

    async def chat(
        self,
        ctx: ProviderContext,
        model: str,
        request: ChatRequest,
        on_token: TokenCallback | None = None,
    ) -> ChatResult:
        """One streamed answer. Raises NodeError (RetryableError when transient), as
        described in the module docstring."""
        deadline = Deadline(ctx, self.endpoint, model)
        async with deadline.bound():
            return await self._chat(model, request, on_token, deadline)

    async def _chat(
        self,
        model: str,
        request: ChatRequest,
        on_token: TokenCallback | None,
        deadline: Deadline,
    ) -> ChatResult:
        """One attempt; its SDK timeout is ``deadline.timeout(...)``."""
        raise NotImplementedError


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    when = email.utils.parsedate_to_datetime(raw) if raw else None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _body_message(body: Any, fallback: str) -> tuple[str, str]:
    """``(message, code)`` from an error body of either API."""
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            message = err.get("message") or fallback
            code = err.get("code") or err.get("type") or ""
            return str(message), str(code)
        if isinstance(err, str):
            return err, ""
    return fallback, ""


def status_error(
    endpoint: Endpoint,
    model: str,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None,
    fallback: str,
    credential: str | None,
) -> NodeError:
    """The error to raise for an HTTP error answer (see the module docstring)."""
    message, code = _body_message(body, fallback)
    who = f"{endpoint.label} model '{model}'"
    detail = f"HTTP {status}: {message}"
    lowered = f"{code} {message}".lower()
    if status in (401, 403):
        secret = credential or endpoint.api_key_secret
        what = "rejected the API key" if status == 401 else "refused access"
        env = f" or the {secret} environment variable" if secret in endpoint_keys(endpoint) else ""
        hint = (
            f"check the secret '{secret}' (`flowbuilder secrets set {secret}`){env}"
            if secret
            else f"this endpoint has no API key configured; add one with "
            f"`flowbuilder providers add-endpoint {endpoint.name} URL --api-key-secret NAME`"
        )
        return NodeError(redact(f"{endpoint.label} {what} for model '{model}' ({detail}); {hint}"))
    if status == 404:
        if "model" in lowered:
            return NodeError(
                redact(
                    f"{endpoint.label} has no model '{model}' ({detail}); check the model "
                    "name in the node's model id"
                )
            )
        return NodeError(
            redact(
                f"{endpoint.label} answered 404 for model '{model}' ({detail}); check the "
                f"endpoint's base URL ({endpoint.base_url or 'default'})"
            )
        )
    if (status in (400, 413, 422) and any(m in lowered for m in _CONTEXT_MARKERS)) or status == 413:
        return ContextTooLong(
            redact(
                f"the prompt is too long for {who} ({detail}); shorten the prompt or "
                "messages, lower max_tokens, or pick a model with a longer context"
            )
        )
    if status == 429 and "insufficient_quota" in lowered:
        return NodeError(
            redact(
                f"{endpoint.label} says the account's quota is used up ({detail}); check the "
                "plan and billing"
            )
        )
    if status in (408, 409, 429) or status >= 500:
        wait = retry_after(headers)
        kind = "is rate limiting requests" if status == 429 else "had a temporary error"
        if status == 529:
            kind = "is overloaded"
        if wait is not None and wait > MAX_RETRY_AFTER_S:
            return NodeError(
                redact(
                    f"{endpoint.label} {kind} for model '{model}' ({detail}) and asks to "
                    f"wait {wait:.0f} s; try again later"
                )
            )
        return RetryableError(
            redact(f"{endpoint.label} {kind} for model '{model}' ({detail})"), retry_after=wait
        )
    return NodeError(
        redact(
            f"{endpoint.label} refused the request for model '{model}' ({detail}); check "
            "the node's parameters"
        )
    )


def timeout_error(endpoint: Endpoint, model: str, timeout_s: float) -> RetryableError:
    return RetryableError(
        redact(
            f"{endpoint.label} did not answer within {timeout_s:g} s for model '{model}' "
            "(read timeout); raise the node's timeout if the model is slow"
        )
    )


def connection_error(
    endpoint: Endpoint, model: str, exc: BaseException, *, streaming: bool
) -> RetryableError:
    cause = exc.__cause__ or exc.__context__ or exc
    reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    if streaming:
        text = (
            f"the connection to {endpoint.label} dropped in the middle of the answer from "
            f"model '{model}' ({reason})"
        )
    else:
        text = (
            f"cannot reach {endpoint.label} for model '{model}' ({reason}); is the server "
            "running and the base URL right?"
        )
    return RetryableError(redact(text))


def incomplete_error(endpoint: Endpoint, model: str, why: str) -> RetryableError:
    """A streamed answer that did not end as the API ends one (``why`` says how)."""
    return RetryableError(
        redact(
            f"the stream from {endpoint.label} ended before the answer was complete for "
            f"model '{model}' ({why})"
        )
    )


def not_a_stream(endpoint: Endpoint, model: str, content_type: str) -> RetryableError | None:
    """The error for a 200 answer to a streaming call whose type is not
    ``text/event-stream`` (None when it is a stream)."""
    if content_type.split(";")[0].strip().lower() == "text/event-stream":
        return None
    return incomplete_error(
        endpoint, model, f"a 200 answer of type '{content_type or 'none'}' to a streaming call"
    )


def refused_error(endpoint: Endpoint, model: str, reason: str) -> NodeError:
    return NodeError(
        redact(
            f"{endpoint.label} model '{model}' refused to answer ({reason}); rephrase the "
            "prompt or use another model"
        )
    )
