"""flowbuilder: a visual AI workflow builder. One graph file runs on the canvas, the CLI,
an HTTP endpoint and Ray."""

__version__ = "0.1.0"
