"""Speech to text and subtitles with the real bundled Whisper tiny.en (faster-whisper),
a Hugging Face Whisper directory converted on first use, and the OpenAI transcription API
answered by a real local server (:mod:`servers_media`).

The plain jfk.flac word-error-rate check through ``examples/voice_memo.json`` lives in
``test_voice_memo.py``; these cover the Transcribe node's options, other formats, errors,
progress, the remote provider and the Subtitles node.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import jiwer
import pytest
from conftest import FIXTURES
from servers import LocalServer

from flowbuilder.builder import GraphBuilder
from flowbuilder.bundled import BUNDLED
from flowbuilder.engine import Engine
from flowbuilder.models import ModelCache
from flowbuilder.providers.config import ProviderConfig
from flowbuilder.registry import default_registry
from flowbuilder.scheduler import RunResult
from flowbuilder.settings import Settings
from nodes.audio.subtitles import to_srt, to_vtt
from nodes.audio.transcribe import Segment

pytest_plugins = ["servers", "servers_media"]

JFK = FIXTURES / "audio" / "jfk.flac"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, ask what "
    "you can do for your country."
)
SRT_CUE = re.compile(
    r"^(\d+)\n(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)\n(.+)$", re.S
)
VTT_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)$")


def wer(text: str) -> float:
    norm = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
        ]
    )
    return float(jiwer.wer(norm(JFK_TEXT), norm(text)))


@pytest.fixture(scope="session")
def audio_engine(tmp_path_factory: pytest.TempPathFactory, shared_models: ModelCache) -> Engine:
    """One engine for the module's tests, sharing the session's loaded models; its
    FLOWBUILDER_HOME allows reading the fixtures and the temp folders."""
    home = tmp_path_factory.mktemp("audio-home")
    settings = Settings.from_env(home=home, file_roots=(FIXTURES.resolve(), home.parent.resolve()))
    engine = Engine(default_registry(), settings)
    engine.models = engine.scheduler.models = shared_models
    return engine


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """jfk.flac re-encoded with PyAV as mp3 (LAME), wav (PCM 16-bit) and ogg (Opus)."""
    import av

    out_dir = tmp_path_factory.mktemp("formats")
    paths = {}
    formats = (("mp3", "libmp3lame", 16000), ("wav", "pcm_s16le", 16000), ("ogg", "libopus", 48000))
    for fmt, codec, rate in formats:
        dest = out_dir / f"jfk.{fmt}"
        with av.open(str(JFK)) as src, av.open(str(dest), "w", format=fmt) as dst:
            stream: Any = dst.add_stream(codec, rate=rate)
            stream.layout = "mono"
            resampler = av.AudioResampler(format=stream.format, layout="mono", rate=rate)
            for frame in src.decode(audio=0):
                for rframe in resampler.resample(frame):
                    for packet in stream.encode(rframe):
                        dst.mux(packet)
            for rframe in resampler.resample(None):
                for packet in stream.encode(rframe):
                    dst.mux(packet)
            for packet in stream.encode(None):
                dst.mux(packet)
        paths[fmt] = dest
    return paths


def transcribe(
    engine: Engine, audio: Path | str, *, subtitles: bool = False, **params: Any
) -> tuple[RunResult, list[Any]]:
    """Input(audio) → Transcribe (node 2) [→ Subtitles (node 3)]; every event recorded."""
    b = GraphBuilder(engine.registry)
    src = b.add("core/input", name="audio", type="audio")
    node = b.add("audio/transcribe", **{"beam_size": 1, **params})
    b.link(src, "value", node, "audio")
    if subtitles:
        subs = b.add("audio/subtitles", name="jfk")
        b.link(node, "segments", subs, "segments")
    seen: list[Any] = []
    result = asyncio.run(
        engine.run(
            b.build(),
            {"audio": str(audio)},
            listeners=[seen.append],
            use_cache=False,
            keep_outputs=True,
        )
    )
    return result, seen


# ---- local faster-whisper ----------------------------------------------------------------


@pytest.mark.slow
def test_options_words_vad_prompt(audio_engine: Engine) -> None:
    """Word timestamps, the voice-activity filter and an initial prompt."""
    result, _ = transcribe(
        audio_engine,
        JFK,
        word_timestamps=True,
        vad_filter=True,
        initial_prompt="Kennedy",
        beam_size=5,
    )
    assert result.status == "finished", result.error
    out = result.node_outputs["2"]
    assert wer(out["text"]) <= 0.10, out["text"]
    assert out["language"] == "en" and 0.0 < out["language_probability"] <= 1.0
    words = out["words"]
    assert [w.word.strip(",.").lower() for w in words][-3:] == ["for", "your", "country"]
    starts = [w.start for w in words]
    assert starts == sorted(starts) and starts[0] >= 0.0 and words[-1].end <= 11.5
    assert all(0.0 <= w.probability <= 1.0 and w.end >= w.start for w in words)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mp3", "wav", "ogg"])
def test_other_formats(audio_engine: Engine, converted: dict[str, Path], fmt: str) -> None:
    # hot words ride along on one format (on their own: combined with an initial prompt,
    # tiny.en tends to add a hallucinated "Thank you very much.")
    extra: dict[str, Any] = {"hotwords": "Americans country"} if fmt == "wav" else {}
    result, _ = transcribe(audio_engine, converted[fmt], **extra)
    assert result.status == "finished", result.error
    assert wer(result.node_outputs["2"]["text"]) <= 0.10, result.node_outputs["2"]["text"]


@pytest.mark.slow
def test_not_audio_errors_clearly(audio_engine: Engine, tmp_path: Path) -> None:
    from PIL import Image

    text = tmp_path / "minutes.mp3"
    text.write_text("these are meeting minutes, not audio")
    result, _ = transcribe(audio_engine, text)
    assert result.status == "failed" and result.failed_node == "2"
    assert "cannot decode 'minutes.mp3' as audio" in (result.error or "")
    assert "flac, mp3, wav" in (result.error or "")

    picture = tmp_path / "photo.flac"
    Image.new("RGB", (8, 8), "red").save(picture, format="PNG")
    result, _ = transcribe(audio_engine, picture)
    assert result.status == "failed"
    error = result.error or ""
    assert "'photo.flac'" in error and ("no audio stream" in error or "cannot decode" in error)


@pytest.mark.slow
def test_english_only_model_refuses_translation(audio_engine: Engine) -> None:
    result, _ = transcribe(audio_engine, JFK, task="translate")
    assert result.status == "failed"
    assert "English-only and cannot translate" in (result.error or "")


@pytest.mark.slow
def test_long_audio_reports_progress(audio_engine: Engine, tmp_path: Path) -> None:
    """22 s of speech (jfk twice): progress per segment in seconds of audio, rising to 1."""
    import av

    long = tmp_path / "long.wav"
    with av.open(str(long), "w", format="wav") as dst:
        stream: Any = dst.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        for _ in range(2):
            with av.open(str(JFK)) as src:
                for frame in src.decode(audio=0):
                    frame.pts = None
                    for rframe in resampler.resample(frame):
                        for packet in stream.encode(rframe):
                            dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    result, seen = transcribe(audio_engine, long)
    assert result.status == "finished", result.error
    progress = [e for e in seen if e.type == "node_progress" and e.node_id == "2"]
    fractions = [e.fraction for e in progress if e.fraction is not None]
    assert len(fractions) >= 4 and fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)
    assert progress[-1].message == "22.0 / 22.0 s of audio"
    # Both halves are transcribed (the tiny model sometimes hears "asked not").
    assert result.node_outputs["2"]["text"].lower().count("what your country can do for") == 2


@pytest.mark.slow
def test_subtitles_from_transcript(audio_engine: Engine) -> None:
    result, _ = transcribe(audio_engine, JFK, subtitles=True)
    assert result.status == "finished", result.error
    out = result.node_outputs["3"]
    srt = audio_engine.artifacts.path(out["srt"]).read_text(encoding="utf-8")
    vtt = audio_engine.artifacts.path(out["vtt"]).read_text(encoding="utf-8")
    assert out["srt"].name == "jfk.srt" and out["vtt"].name == "jfk.vtt"
    assert out["srt"].kind == "document" and srt == out["text"]
    cues = [SRT_CUE.match(block) for block in srt.strip().split("\n\n")]
    assert cues and all(cues)
    assert [int(c.group(1)) for c in cues if c] == list(range(1, len(cues) + 1))
    assert "ask not" in srt.lower()
    lines = vtt.split("\n")
    assert lines[0] == "WEBVTT" and lines[1] == ""
    times = [VTT_TIME.match(line) for line in lines if "-->" in line]
    assert len(times) == len(cues) and all(times)


def test_srt_and_vtt_format() -> None:
    """Cue numbering, hour timestamps, wrapping, skipped empty segments."""
    segs = [
        Segment(start=0.0, end=2.5, text=" Hello there. "),
        Segment(start=2.5, end=2.5, text="   "),
        Segment(start=3725.5, end=3727.25, text="a " * 30),
    ]
    srt = to_srt(segs, max_line_chars=20)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n")
    assert "01:02:05,500 --> 01:02:07,250" in srt
    assert all(len(line) <= 20 for line in srt.splitlines() if "-->" not in line)
    vtt = to_vtt(segs)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")
    assert "01:02:05.500 --> 01:02:07.250" in vtt


@pytest.mark.slow
def test_hugging_face_whisper_directory(
    audio_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A Hugging Face Whisper directory (random weights, small config, the real Whisper
    tokenizer.json) is converted to CTranslate2 once and transcribes through the node."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    path = tmp_path_factory.mktemp("hf-whisper") / "whisper-random"
    config = WhisperConfig(
        vocab_size=51864,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_target_positions=448,
        num_mel_bins=80,
        decoder_start_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        bos_token_id=50256,
    )
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(path)
    shutil.copy(BUNDLED["tiny.en"].path() / "tokenizer.json", path / "tokenizer.json")
    result, _ = transcribe(audio_engine, JFK, model=str(path))
    assert result.status == "finished", result.error
    out = result.node_outputs["2"]
    assert out["language"] == "en" and isinstance(out["text"], str)
    cache = audio_engine.settings.home / "cache" / "whisper-ct2"
    assert [p.name for p in cache.iterdir() if (p / "model.bin").is_file()]


# ---- the OpenAI transcription API (real local server) ------------------------------------------


@pytest.fixture
def remote_engine(audio_engine: Engine, media_server: LocalServer) -> Engine:
    ProviderConfig(audio_engine.settings.home).add(
        "testmedia", f"{media_server.url}/v1", api_key_secret="TESTMEDIA_KEY"
    )
    return audio_engine


@pytest.mark.slow
def test_openai_whisper_1(
    remote_engine: Engine, media_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESTMEDIA_KEY", "sk-media-test")
    media_server.state.reset(api_key="sk-media-test")
    result, _ = transcribe(
        remote_engine,
        JFK,
        model="testmedia:whisper-1",
        word_timestamps=True,
        language="en",
        initial_prompt="Kennedy",
    )
    assert result.status == "finished", result.error
    out = result.node_outputs["2"]
    assert wer(out["text"]) <= 0.10 and out["language"] == "en"
    assert out["segments"] and out["segments"][-1].end == pytest.approx(11.0, abs=1.0)
    assert out["words"] and out["words"][-1].word.strip(".").lower() == "country"
    (seen,) = media_server.state.requests("/v1/audio/transcriptions")
    assert seen.body["filename"] == "jfk.flac" and seen.body["response_format"] == "verbose_json"
    assert seen.body["timestamp_granularities"] == ["segment", "word"]
    assert seen.body["prompt"] == "Kennedy" and seen.auth == "Bearer sk-media-test"


@pytest.mark.slow
def test_openai_gpt4o_transcribe_and_errors(
    remote_engine: Engine, media_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESTMEDIA_KEY", "sk-media-test")
    result, _ = transcribe(remote_engine, JFK, model="testmedia:gpt-4o-transcribe")
    assert result.status == "finished", result.error
    out = result.node_outputs["2"]
    assert wer(out["text"]) <= 0.10 and len(out["segments"]) == 1 and out["words"] == []
    assert (
        media_server.state.requests("/v1/audio/transcriptions")[0].body["response_format"] == "json"
    )

    media_server.state.reset(api_key="sk-other")
    result, _ = transcribe(remote_engine, JFK, model="testmedia:whisper-1")
    assert result.status == "failed"
    assert "rejected the API key" in (result.error or "")
    assert "sk-media-test" not in (result.error or "")

    media_server.state.reset()
    result, _ = transcribe(remote_engine, JFK, model="testmedia:whisper-9")
    assert result.status == "failed" and "has no model 'whisper-9'" in (result.error or "")
