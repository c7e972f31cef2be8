"""An OpenAI-compatible facade: published chat-shaped flows as ``/v1/chat/completions``.

``model`` names a published flow (its id or its name). The flow's signature must be
messages or text in, text out:

- an input named ``messages`` (json) gets the whole conversation (``[{role, content}]``);
  otherwise its one required text input gets the last user message's text, and an
  optional text input named ``system`` gets the system message;
- its output (the only one, or the one named ``text``, ``answer``, ``reply`` or
  ``response``) is the assistant's answer.

``stream=true`` answers with ``chat.completion.chunk`` Server-Sent Events carrying the
tokens the LLM node feeding that output streams, then ``data: [DONE]``; with
``stream_options.include_usage`` a last chunk (no choices) carries the usage. ``usage``
is real: the sum of the token counts the flow's model nodes reported (``prompt_tokens``,
``completion_tokens``, ``total_tokens``; nodes answered from the cache used none).
``?timeout=`` seconds cancels a run that takes longer: 504 (streamed: an error event).

Every error is in OpenAI's shape (:mod:`server.api.openai_errors`), streaming included
(an error event, then ``[DONE]``), so the official SDK raises its usual exceptions: 400
a body that is not a chat completion request, 404 an unknown or unpublished model (flow),
409 a flow with problems, 422 a bad query parameter, 500 a failed flow, 504 a timeout.
``GET /v1/models`` lists the flows it can serve.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from flowbuilder import events
from flowbuilder.errors import GraphFileError, GraphInvalid, InputError
from flowbuilder.providers import Usage
from flowbuilder.store import NotFound
from flowbuilder.validate import FlowInput, FlowOutput
from server.api.fast_run import timeout_message
from server.api.openai_errors import FacadeError, OpenAIRoute, error_responses, stream_error
from server.api.runs import plans, timed
from server.api.schema import CompiledFlow
from server.runs import ActiveRun

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
ANSWER_NAMES = ("text", "answer", "reply", "response")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The part of OpenAI's chat completion request the facade reads (others ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    stream_options: StreamOptions | None = None


def chat_signature(flow: CompiledFlow) -> tuple[FlowInput, FlowInput | None, FlowOutput]:
    """(main input, optional system input, answer output) of a chat-shaped flow.

    Raises:
        FacadeError: the flow is not messages-or-text in, text out.
    """
    inputs = {i.name: i for i in flow.plan.inputs}
    main: FlowInput | None = None
    if "messages" in inputs and inputs["messages"].type in ("json", "any"):
        main = inputs["messages"]
    else:
        texts = [i for i in flow.plan.inputs if i.type == "text" and i.name != "system"]
        required = [i for i in texts if i.required]
        candidates = required or texts
        if len(candidates) == 1:
            main = candidates[0]
    system = inputs.get("system") if main is not None and main.name != "system" else None
    others = [
        i
        for i in flow.plan.inputs
        if i.required and main is not None and i.name not in (main.name, "system")
    ]
    outputs = flow.plan.outputs
    answer = outputs[0] if len(outputs) == 1 else None
    if answer is None:
        answer = next((o for o in outputs if o.name in ANSWER_NAMES), None)
    if main is None or others or answer is None or answer.type not in ("text", "any", "json"):
        raise FacadeError(
            400,
            f"flow '{flow.name}' is not a chat flow: it needs one text input (or a "
            "'messages' json input) and one text output",
            param="model",
            code="model_not_chat",
        )
    return main, (system if system is not None and system.type == "text" else None), answer


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": …}, …]
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return "" if content is None else str(content)


def flow_inputs(
    main: FlowInput, system: FlowInput | None, messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """The flow's input values for an OpenAI ``messages`` list."""
    plain = [
        {"role": str(m.get("role", "user")), "content": _text(m.get("content"))} for m in messages
    ]
    if main.name == "messages":
        return {"messages": plain}
    users = [m for m in plain if m["role"] == "user"]
    if not users:
        raise FacadeError(400, "messages need at least one user message", param="messages")
    values = {main.name: users[-1]["content"]}
    systems = [m["content"] for m in plain if m["role"] in ("system", "developer")]
    if system is not None and systems:
        values[system.name] = "\n".join(systems)
    return values


def find_flow(request: Request, model: str) -> CompiledFlow:
    """The published flow whose id or name is ``model``. Raises FacadeError (404/409)."""
    cache = plans(request)
    store = request.app.state.fb.store
    flow_id = None
    try:
        cache.head(model)
        flow_id = model
    except NotFound:
        named = [f for f in store.list_flows(published=True) if f.name == model]
        if named:
            flow_id = named[0].id
    if flow_id is None:
        raise FacadeError(
            404,
            f"no published flow named '{model}' (use a flow's id or name)",
            param="model",
            code="model_not_found",
        )
    try:
        flow = cache.get(flow_id)
    except (GraphInvalid, GraphFileError) as exc:
        raise FacadeError(409, f"flow '{model}' has problems: {exc}", param="model") from None
    if not flow.published:
        raise FacadeError(
            404, f"flow '{model}' is not published", param="model", code="model_not_found"
        )
    return flow


def _answer(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


STREAM_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the answer (``chat.completion``), or its chunks as Server-Sent Events",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}


@router.post(
    "/chat/completions",
    response_model=None,
    responses={**STREAM_200, **error_responses(400, 401, 404, 409, 422, 500, 504)},
)
async def chat_completions(
    request: Request,
    timeout: float | None = Query(None, gt=0, description="seconds before the run is cancelled"),
) -> Response:
    """OpenAI's chat completion endpoint, answered by a published flow."""
    try:
        body = ChatCompletionRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        raise FacadeError(
            400, f"invalid request: {first['msg']}", param=".".join(map(str, first["loc"]))
        ) from None
    flow = find_flow(request, body.model)
    main, system, answer = chat_signature(flow)
    values = flow_inputs(main, system, body.messages)
    fb = request.app.state.fb
    try:
        active = fb.runs.start(
            flow.plan, values, flow_id=flow.flow_id, flow_version=flow.version, source="openai"
        )
    except InputError as exc:
        raise FacadeError(400, str(exc), param="messages") from None
    reply = Reply(f"chatcmpl-{active.run_id}", body.model, int(time.time()))
    if body.stream:
        source = flow.plan.nodes[answer.node_id].wires.get("value", ("", ""))[0]
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(
            _stream(request, active, reply, source, answer.name, timeout, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    assert active.task is not None
    try:
        result = await asyncio.wait_for(asyncio.shield(active.task), timeout)
    except TimeoutError:
        await fb.runs.request_cancel(active.run_id)
        raise FacadeError(504, timeout_message(timeout or 0), code="timeout") from None
    if result.status != "finished":
        raise _failed(result.status, result.error, result.failed_node)
    text = _answer(result.outputs.get(answer.name))
    return JSONResponse(
        {
            **reply.head("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": (await run_usage(request, active)).as_dict(),
        }
    )


class Reply:
    """The id, model and creation time every object of one answer carries."""

    def __init__(self, cid: str, model: str, created: int) -> None:
        self.cid, self.model, self.created = cid, model, created

    def head(self, kind: str) -> dict[str, Any]:
        return {"id": self.cid, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        """One ``chat.completion.chunk`` event."""
        body = {
            **self.head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    def usage_chunk(self, usage: Usage) -> str:
        """The last chunk of a stream with ``include_usage``: no choices, the usage."""
        body = {**self.head("chat.completion.chunk"), "choices": [], "usage": usage.as_dict()}
        return f"data: {json.dumps(body)}\n\n"


def _failed(status: str, error: str | None, node: str | None) -> FacadeError:
    why = error or ("the run was cancelled" if status == "cancelled" else "the run did not finish")
    where = f" (node {node})" if node else ""
    return FacadeError(500, f"the flow failed{where}: {why}", code="flow_failed")


async def run_usage(request: Request, active: ActiveRun) -> Usage:
    """The tokens the run's nodes reported (the ``usage`` output of the LLM nodes that
    ran, summed): from the events it emitted here, else from the run's record."""
    history: list[Any] = active.history
    if not history:  # executed by another server sharing the database
        store = request.app.state.fb.store
        history = await asyncio.to_thread(store.events_after, active.run_id, 0)
    total = Usage()
    for event in history:
        reported = event.outputs.get("usage") if isinstance(event, events.NodeFinished) else None
        if isinstance(reported, dict):
            total += Usage(
                prompt_tokens=int(reported.get("prompt_tokens") or 0),
                completion_tokens=int(reported.get("completion_tokens") or 0),
            )
    return total


async def _stream(
    request: Request,
    active: ActiveRun,
    reply: Reply,
    source: str,
    output: str,
    timeout: float | None,
    include_usage: bool,
) -> AsyncIterator[str]:
    fb = request.app.state.fb
    yield reply.chunk({"role": "assistant", "content": ""})
    streamed = False
    # live tokens when the run executes here; a run queued and executed by another
    # server sends its whole answer at the end instead
    try:
        async for event in timed(fb.runs.follow(active.run_id, handle=active), timeout):
            if isinstance(event, events.NodeProgress) and event.delta and event.node_id == source:
                streamed = True
                yield reply.chunk({"content": event.delta})
    except TimeoutError:
        await fb.runs.request_cancel(active.run_id)
        yield stream_error(FacadeError(504, timeout_message(timeout or 0), code="timeout"))
        return
    result = await active.task if active.task is not None else None
    if result is None or result.status != "finished":
        status, error = (result.status, result.error) if result else ("", None)
        yield stream_error(_failed(status, error, result.failed_node if result else None))
        return
    if not streamed:
        yield reply.chunk({"content": _answer(result.outputs.get(output))})
    yield reply.chunk({}, "stop")
    if include_usage:
        yield reply.usage_chunk(await run_usage(request, active))
    yield "data: [DONE]\n\n"


@router.get("/models", responses=error_responses(401, 500))
async def list_models(request: Request) -> dict[str, Any]:
    """Published flows that the chat endpoint can serve, as OpenAI model objects."""
    cache = plans(request)
    data = []
    for flow in request.app.state.fb.store.list_flows(published=True):
        try:
            chat_signature(cache.get(flow.id))
        except (FacadeError, GraphInvalid, GraphFileError, NotFound):
            continue
        data.append(
            {
                "id": flow.name,
                "object": "model",
                "created": int(flow.created_at.timestamp()),
                "owned_by": "flowbuilder",
                "flow_id": flow.id,
            }
        )
    return {"object": "list", "data": data}
