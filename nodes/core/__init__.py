"""Core nodes: flow inputs and outputs, text, templates, JSON, numbers, files."""

from __future__ import annotations

from flowbuilder.sdk import Registry
from nodes.core.files import LoadFile, SaveFile
from nodes.core.flow import FlowInputNode, FlowOutputNode
from nodes.core.values import JoinText, JsonGet, JsonParse, Number, Template, Text

NODES = (
    FlowInputNode,
    FlowOutputNode,
    Text,
    Number,
    Template,
    JoinText,
    JsonParse,
    JsonGet,
    LoadFile,
    SaveFile,
)


def register(registry: Registry) -> None:
    """Add the core nodes to ``registry``."""
    for cls in NODES:
        registry.register(cls)
