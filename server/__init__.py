"""The NiceGUI app: canvas, flow library, runs, REST API (see the canvas issue)."""
