"""Input and Output nodes: they declare what a flow takes and what it returns."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from flowbuilder.sdk import Node, NodeError, NodeMeta, Param, Port, RunContext

InputType = Literal[
    "text",
    "integer",
    "number",
    "boolean",
    "json",
    "list[text]",
    "audio",
    "image",
    "document",
    "dataset",
    "model",
    "file",
]


class FlowInputNode(Node):
    """A value the flow takes: from the CLI's --input, the HTTP request, or the canvas.

    Its output port has the type chosen in 'type'. When the caller gives no value the
    default is used; an input without a default is required.
    """

    meta = NodeMeta(type="core/input", version="1.0.0", category="Flow", title="Input")
    role: ClassVar[str | None] = "input"

    class Inputs(BaseModel):
        name: str = Param(
            "input",
            description="the input's name in the flow signature",
            min_length=1,
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        )
        type: InputType = Param("text", description="the value's port type")
        default: Any = Param(
            None, description="used when no value is given; none makes the input required"
        )
        description: str = Param("", description="shown in the API schema and the docs")
        value: Any = Param(None, hidden=True, description="set by the engine for each run")

    class Outputs(BaseModel):
        value: Any

    @classmethod
    def resolve_types(cls, params: dict[str, Any]) -> dict[str, str]:
        return {"value": str(params.get("type", "text"))}

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        value = inputs.value if inputs.value is not None else inputs.default
        if value is None:
            raise NodeError(f"flow input '{inputs.name}' has no value and no default")
        return self.Outputs(value=value)


class FlowOutputNode(Node):
    """A value the flow returns, under the given name."""

    meta = NodeMeta(type="core/output", version="1.0.0", category="Flow", title="Output")
    role: ClassVar[str | None] = "output"

    class Inputs(BaseModel):
        value: Any = Port(description="the value to return")
        name: str = Param(
            "output",
            description="the output's name in the flow signature",
            min_length=1,
            pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        )
        description: str = Param("", description="shown in the API schema and the docs")

    class Outputs(BaseModel):
        value: Any

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        return self.Outputs(value=inputs.value)
