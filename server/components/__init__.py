"""Custom NiceGUI elements: one Python class each, with its JavaScript in static/."""
