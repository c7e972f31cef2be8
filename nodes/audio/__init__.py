"""Audio nodes: speech to text with Whisper (local faster-whisper or the OpenAI API)
and subtitles (SRT, WebVTT)."""

from __future__ import annotations

from flowbuilder.sdk import Registry
from nodes.audio.subtitles import Subtitles
from nodes.audio.transcribe import Transcribe


def register(registry: Registry) -> None:
    """Add the audio nodes to ``registry``."""
    registry.register(Transcribe)
    registry.register(Subtitles)
