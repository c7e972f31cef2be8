"""An OpenAI-compatible facade: published chat-shaped flows as ``/v1/chat/completions``.

``model`` names a published flow (its id or its name). The flow's signature must be
messages or text in, text out:

- an input named ``messages`` (json) gets the whole conversation (``[{role, content}]``);
  otherwise its one required text input gets the last user message's text, and an
  optional text input named ``system`` gets the system message;
- its output (the only one, or the one named ``text``, ``answer``, ``reply`` or
  ``response``) is the assistant's answer.

``stream=true`` answers with ``chat.completion.chunk`` Server-Sent Events carrying the
tokens the LLM node feeding that output streams, then ``data: [DONE]``. Errors use
OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), so the official
SDK raises its usual exceptions. ``GET /v1/models`` lists the flows it can serve.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from flowbuilder import events
from flowbuilder.errors import GraphFileError, GraphInvalid, InputError
from flowbuilder.store import NotFound
from flowbuilder.validate import FlowInput, FlowOutput
from server.api.answers import openai_errors
from server.api.runs import plans
from server.api.schema import CompiledFlow
from server.runs import ActiveRun

router = APIRouter(prefix="/v1", tags=["openai"])
ANSWER_NAMES = ("text", "answer", "reply", "response")
CHAT_ERRORS = openai_errors(400, 404, 409, 413, 500, 504)


class ChatCompletionRequest(BaseModel):
    """The part of OpenAI's chat completion request the facade reads (others ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False


class FacadeError(Exception):
    """A request the facade refuses, in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": self.code or None,
            }
        }
        return JSONResponse(body, status_code=self.status)


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


def _chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


@router.post("/chat/completions", response_model=None, responses=CHAT_ERRORS)
async def chat_completions(request: Request) -> Response:
    """OpenAI's chat completion endpoint, answered by a published flow."""
    try:
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
    except FacadeError as exc:
        return exc.response()
    cid = f"chatcmpl-{active.run_id}"
    created = int(time.time())
    source = flow.plan.nodes[answer.node_id].wires.get("value", ("", ""))[0]
    if body.stream:
        return StreamingResponse(
            _stream(request, active, cid, body.model, created, source, answer.name),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    assert active.task is not None
    result = await asyncio.shield(active.task)
    if result.status != "finished":
        why = result.error or "the run was cancelled"
        node = f" (node {result.failed_node})" if result.failed_node else ""
        return FacadeError(500, f"the flow failed{node}: {why}", code="flow_failed").response()
    text = _answer(result.outputs.get(answer.name))
    return JSONResponse(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
    )


async def _stream(
    request: Request,
    active: ActiveRun,
    cid: str,
    model: str,
    created: int,
    source: str,
    output: str,
) -> AsyncIterator[str]:
    fb = request.app.state.fb
    yield _chunk(cid, model, created, {"role": "assistant", "content": ""}, None)
    streamed = False
    # live tokens when the run executes here; a run queued and executed by another
    # server sends its whole answer at the end instead
    async for event in fb.runs.follow(active.run_id, handle=active):
        if isinstance(event, events.NodeProgress) and event.delta and event.node_id == source:
            streamed = True
            yield _chunk(cid, model, created, {"content": event.delta}, None)
    result = await active.task if active.task is not None else None
    if result is None or result.status != "finished":
        why = (result.error if result else None) or "the run did not finish"
        error = {"error": {"message": f"the flow failed: {why}", "type": "server_error"}}
        yield f"data: {json.dumps(error)}\n\n"
        return
    if not streamed:
        text = _answer(result.outputs.get(output))
        yield _chunk(cid, model, created, {"content": text}, None)
    yield _chunk(cid, model, created, {}, "stop")
    yield "data: [DONE]\n\n"


@router.get("/models")
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
