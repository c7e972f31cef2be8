"""Subtitles: SubRip (SRT) and WebVTT files from transcript segments.

Formats: SRT as described by the SubRip convention (numbered cues, ``HH:MM:SS,mmm -->
HH:MM:SS,mmm``, a blank line between cues); WebVTT per the W3C WebVTT recommendation
(``WEBVTT`` header, ``HH:MM:SS.mmm`` timestamps). Lines are wrapped at ``max_line_chars``
(42 is the common broadcast guideline, e.g. Netflix's timed-text style guide).
"""

from __future__ import annotations

import textwrap

from pydantic import BaseModel

from flowbuilder.sdk import DocumentRef, Node, NodeError, NodeMeta, Param, Port, RunContext
from nodes.audio.transcribe import Segment


def timestamp(seconds: float, sep: str) -> str:
    """``3725.5`` → ``01:02:05,500`` (``sep`` ``,`` for SRT, ``.`` for WebVTT)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _cues(segments: list[Segment], max_line_chars: int) -> list[tuple[float, float, str]]:
    cues = []
    for seg in segments:
        text = " ".join(seg.text.split())
        if not text:
            continue
        end = max(seg.end, seg.start + 0.001)
        cues.append((seg.start, end, "\n".join(textwrap.wrap(text, max_line_chars))))
    return cues


def to_srt(segments: list[Segment], max_line_chars: int = 42) -> str:
    """SRT text: ``1\\n00:00:00,000 --> 00:00:02,500\\nHello\\n\\n2\\n…`` (empty segments
    are skipped; cues are numbered from 1)."""
    blocks = [
        f"{i}\n{timestamp(start, ',')} --> {timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(_cues(segments, max_line_chars), 1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: list[Segment], max_line_chars: int = 42) -> str:
    """WebVTT text: ``WEBVTT\\n\\n00:00:00.000 --> 00:00:02.500\\nHello\\n\\n…``."""
    blocks = [
        f"{timestamp(start, '.')} --> {timestamp(end, '.')}\n{text.replace('-->', '->')}\n"
        for start, end, text in _cues(segments, max_line_chars)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


class Subtitles(Node):
    """Write subtitles (SRT and WebVTT) from transcript segments.

    Inputs: segments — [{start, end, text}] with times in seconds (the Transcribe node's
    'segments'). Outputs: srt and vtt files (artifacts named '<name>.srt' / '<name>.vtt')
    and the SRT as text. Raises NodeError when a segment ends before it starts.
    """

    meta = NodeMeta(type="audio/subtitles", version="1.0.0", category="Audio", title="Subtitles")

    class Inputs(BaseModel):
        segments: list[Segment] = Port(description="timed segments, e.g. from Transcribe")
        name: str = Param(
            "subtitles",
            description="file name without suffix",
            min_length=1,
            pattern=r"^[^/\\]+$",
        )
        max_line_chars: int = Param(42, description="wrap cue lines at this width", ge=10, le=200)

    class Outputs(BaseModel):
        srt: DocumentRef
        vtt: DocumentRef
        text: str

    async def run(self, ctx: RunContext, inputs: Inputs) -> Outputs:
        for i, seg in enumerate(inputs.segments):
            if seg.end < seg.start:
                raise NodeError(
                    f"segment {i + 1} ends ({seg.end:.3f} s) before it starts ({seg.start:.3f} s)"
                )
        srt = to_srt(inputs.segments, inputs.max_line_chars)
        vtt = to_vtt(inputs.segments, inputs.max_line_chars)
        srt_ref = ctx.artifacts.put_bytes(
            srt.encode("utf-8"), name=f"{inputs.name}.srt", kind="document"
        )
        vtt_ref = ctx.artifacts.put_bytes(
            vtt.encode("utf-8"), name=f"{inputs.name}.vtt", kind="document"
        )
        assert isinstance(srt_ref, DocumentRef) and isinstance(vtt_ref, DocumentRef)
        return self.Outputs(srt=srt_ref, vtt=vtt_ref, text=srt)
