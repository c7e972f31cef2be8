"""End to end with the real bundled models: speech → transcript → summary, offline.

The models load once per test session (one shared engine); the CLI test loads them once
more in its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest
from conftest import FIXTURES, REPO

from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.graph import load_graph
from flowbuilder.registry import default_registry
from flowbuilder.settings import Settings

pytestmark = pytest.mark.slow

JFK = FIXTURES / "audio" / "jfk.flac"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, ask what "
    "you can do for your country."
)
FLOWBUILDER = str(Path(sys.executable).parent / "flowbuilder")


@pytest.fixture(scope="session")
def model_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One engine for the session, so each real model loads once."""
    home = tmp_path_factory.mktemp("home")
    return Engine(default_registry(), Settings.from_env(home=home))


def test_voice_memo_cli_json() -> None:
    """The issue's acceptance command, as a user types it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [FLOWBUILDER, "run", "examples/voice_memo.json", "--input", f"audio={JFK}", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "finished"
    assert "ask not what your country can do for you" in data["outputs"]["transcript"]
    assert len(data["outputs"]["summary"].split()) >= 3


def test_transcript_word_error_rate(model_engine: Engine) -> None:
    graph = load_graph(REPO / "examples" / "voice_memo.json")
    result = asyncio.run(
        model_engine.run(graph, {"audio": str(JFK)}, keep_outputs=True, base_dir=REPO)
    )
    assert result.status == "finished", result.error
    transcript = result.outputs["transcript"]
    truth = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
        ]
    )
    wer = jiwer.wer(truth(JFK_TEXT), truth(transcript))
    assert wer <= 0.10, (wer, transcript)
    segments = result.node_outputs["2"]["segments"]
    assert segments[0].start == pytest.approx(0.0, abs=1.0)
    assert segments[-1].end == pytest.approx(11.0, abs=1.0)
    assert result.node_outputs["2"]["language"] == "en"


def test_bundled_ogg_sample_and_progress_events(model_engine: Engine) -> None:
    """The sample `make run` uses transcribes too; Whisper and the LLM report progress."""
    graph = load_graph(REPO / "examples" / "voice_memo.json")
    seen: list = []
    result = asyncio.run(
        model_engine.run(
            graph,
            {"audio": "examples/jfk.ogg"},
            listeners=[seen.append],
            base_dir=REPO,
            use_cache=False,
        )
    )
    assert result.status == "finished", result.error
    assert "ask not what your country" in result.outputs["transcript"].lower()
    progress = [e for e in seen if e.type == "node_progress"]
    whisper = [e for e in progress if e.node_id == "2"]
    llm = [e for e in progress if e.node_id == "4"]
    assert whisper and whisper[-1].fraction == pytest.approx(1.0, abs=0.1)
    assert "s of audio" in whisper[-1].message
    assert llm and llm[-1].message.endswith("tokens")
    assert "".join(e.delta for e in llm).strip() == result.outputs["summary"]


def test_llm_same_seed_same_text(model_engine: Engine) -> None:
    """Determinism of the local LLM: same seed and inputs give the same answer."""
    b = GraphBuilder(model_engine.registry)
    p = b.add("core/text", text="Name three colours.")
    chat = b.add("llm/chat", temperature=0.8, max_tokens=24, seed=7)
    out = b.add("core/output", name="answer")
    b.link(p, "text", chat, "prompt")
    b.link(chat, "text", out, "value")
    graph = b.build()
    first = asyncio.run(model_engine.run(graph, use_cache=False))
    second = asyncio.run(model_engine.run(graph, use_cache=False))
    assert first.status == "finished", first.error
    assert first.outputs["answer"] and first.outputs["answer"] == second.outputs["answer"]
    cached = asyncio.run(model_engine.run(graph))
    assert cached.outputs == first.outputs


def test_non_audio_file_fails_clearly(model_engine: Engine, tmp_path: Path) -> None:
    fake = tmp_path / "notes.wav"
    fake.write_text("this is not audio at all")
    graph = load_graph(REPO / "examples" / "voice_memo.json")
    result = asyncio.run(model_engine.run(graph, {"audio": str(fake)}, base_dir=tmp_path))
    assert result.status == "failed"
    assert result.failed_node == "2"
    assert "cannot decode 'notes.wav' as audio" in (result.error or "")
    assert result.node_status["4"] == "skipped"


def test_missing_gguf_model_is_a_clear_error(model_engine: Engine) -> None:
    def error(model: str) -> str:
        b = GraphBuilder(model_engine.registry)
        p = b.add("core/text", text="hi")
        chat = b.add("llm/chat", model=model)
        b.link(p, "text", chat, "prompt")
        result = asyncio.run(model_engine.run(b.build()))
        assert result.status == "failed"
        return result.error or ""

    # a relative path is in the workspace; one outside every root is refused unread
    assert "neither a bundled model (smollm2) nor a .gguf file" in error("local:gone/model.gguf")
    refused = error("local:/nowhere/model.gguf")
    assert "field 'model': '/nowhere/model.gguf' is outside every folder" in refused
