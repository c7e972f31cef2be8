"""The Transcribe node against faster-whisper called directly, side by side in one run.

Both transcribe the same file with the same loaded model (bundled Whisper tiny.en,
CTranslate2 int8, same beam size) in alternating rounds after one warm-up each. The
node's time is a whole flow run (Input → Transcribe, cache off): artifact copy, audio
probe, scheduling and events included. Printed: real-time factor (seconds of compute per
second of audio; lower is faster) of each, and their ratio direct / node (1.0 = the node
adds nothing; the target is ≥ 0.95).

    python bench/whisper.py [AUDIO] [--rounds 5] [--beam-size 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from flowbuilder.builder import GraphBuilder
from flowbuilder.engine import Engine
from flowbuilder.registry import default_registry
from flowbuilder.settings import Settings
from nodes.audio.transcribe import _load, probe_audio, whisper_dir

DEFAULT_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "audio" / "jfk.flac"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="?", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--beam-size", type=int, default=5)
    args = parser.parse_args()

    audio: Path = args.audio.resolve()
    duration = probe_audio(audio, audio.name)
    path = whisper_dir("bundled:tiny.en")
    home = Path(tempfile.mkdtemp(prefix="fb-bench-"))
    engine = Engine(default_registry(), Settings.from_env(home=home))
    entry = engine.models.get(f"whisper:{path.resolve()}", lambda: _load(path), 200)
    model = entry.model

    b = GraphBuilder(engine.registry)
    src = b.add("core/input", name="audio", type="audio")
    node = b.add("audio/transcribe", model="bundled:tiny.en", beam_size=args.beam_size)
    b.link(src, "value", node, "audio")
    graph = b.build()

    def direct() -> tuple[float, str]:
        start = time.perf_counter()
        segments, _ = model.transcribe(str(audio), beam_size=args.beam_size)
        text = " ".join(s.text.strip() for s in segments)
        return time.perf_counter() - start, text

    def via_node() -> tuple[float, str]:
        start = time.perf_counter()
        result = asyncio.run(
            engine.run(graph, {"audio": str(audio)}, use_cache=False, keep_outputs=True)
        )
        elapsed = time.perf_counter() - start
        if result.status != "finished":
            raise SystemExit(f"the node failed: {result.error}")
        return elapsed, result.node_outputs["2"]["text"]

    direct()
    via_node()
    times_direct, times_node = [], []
    for _ in range(args.rounds):
        t, text_direct = direct()
        times_direct.append(t)
        t, text_node = via_node()
        times_node.append(t)
    same = text_direct == text_node
    rtf_direct = statistics.median(times_direct) / duration
    rtf_node = statistics.median(times_node) / duration
    print(f"audio: {audio.name}, {duration:.1f} s; bundled:tiny.en (int8), beam {args.beam_size}")
    print(f"rounds: {args.rounds} each, alternating, after one warm-up; medians")
    print(f"faster-whisper direct  RTF {rtf_direct:.4f}  ({statistics.median(times_direct):.3f} s)")
    print(f"Transcribe node (flow) RTF {rtf_node:.4f}  ({statistics.median(times_node):.3f} s)")
    print(f"ratio direct/node      {rtf_direct / rtf_node:.3f}  (target >= 0.95)")
    print(f"same transcript: {same}")


if __name__ == "__main__":
    main()
