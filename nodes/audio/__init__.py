"""Audio nodes: speech to text with Whisper (faster-whisper)."""

from __future__ import annotations

from flowbuilder.registry import Registry
from nodes.audio.transcribe import Transcribe


def register(registry: Registry) -> None:
    """Add the audio nodes to ``registry``."""
    registry.register(Transcribe)
