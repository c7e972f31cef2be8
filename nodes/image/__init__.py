"""Image nodes: generate (local diffusers or the OpenAI Images API), load, save,
resize/crop, and image to text with a vision chat model."""

from __future__ import annotations

from flowbuilder.sdk import Registry
from nodes.image.describe import ImageToText
from nodes.image.generate import GenerateImage
from nodes.image.tools import LoadImage, ResizeImage, SaveImage


def register(registry: Registry) -> None:
    """Add the image nodes to ``registry``."""
    for cls in (GenerateImage, LoadImage, SaveImage, ResizeImage, ImageToText):
        registry.register(cls)
